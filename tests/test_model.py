"""TEMA and the baselines as modules: masks, causality, Eq. 13/16 arithmetic, ablation flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from temacli.model.baselines import BaselineConfig, build_baseline
from temacli.model.tema import TEMA, TEMAConfig

torch.set_num_threads(1)
NX, NY = 9, 11
PAD = NX + NY


def tema(**kw) -> TEMA:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    streams = kw.pop("streams", ("id", "img", "tex", "tag"))
    cfg = TEMAConfig(n_x=NX, n_y=NY, streams=streams, q=16, image_dim=6, text_dim=5, n_tags=4, max_len=12,
                     dropout=0.0, **kw)
    item = np.repeat(np.arange(PAD), 2)
    tags = (item, rng.integers(0, 4, item.size), rng.uniform(0.2, 1, item.size).astype(np.float32))
    m = TEMA(cfg, rng.normal(size=(PAD, 6)), rng.normal(size=(PAD, 5)), tags)
    m.test_tags = tags
    return m.eval()


def baseline(kind: str):
    torch.manual_seed(0)
    return build_baseline(BaselineConfig(n_x=NX, n_y=NY, kind=kind, dim=16, n_blocks=2, dropout=0.0, max_len=12)).eval()


SEQ = [1, 12, 3, 15, 4, 19, 2]  # mixed X (<9) and Y items


def padded(seq, length):
    return torch.tensor([[PAD] * (length - len(seq)) + list(seq)])


def all_models():
    return [("tema", tema()), ("tema-single", tema(attention="single")), ("sasrec", baseline("sasrec")),
            ("gru4rec", baseline("gru4rec"))]


def states(model, seq):
    """Per-position user vectors (B, L, ...) of any model, as used by the training loss."""
    if isinstance(model, TEMA):
        ids = torch.arange(PAD + 1)
        _, inputs = model.item_reps(ids)
        h = model.user_vectors(seq, inputs, seq)
        return torch.cat([h[s][m] for s in model.seqs for m in model.streams], dim=-1)
    return model.states(seq)


@pytest.mark.parametrize("name,model", all_models())
def test_padding_never_attends(name, model):
    with torch.no_grad():
        short = states(model, padded(SEQ, 8))[:, -len(SEQ):]
        long = states(model, padded(SEQ, 12))[:, -len(SEQ):]
        torch.testing.assert_close(short, long, atol=1e-5, rtol=1e-5)
        # the padding item's own embedding never matters
        before = states(model, padded(SEQ, 10))
        emb = model.E_id if isinstance(model, TEMA) else model.E
        emb.weight.data[PAD] += 5.0
        after = states(model, padded(SEQ, 10))
        torch.testing.assert_close(before[:, -len(SEQ):], after[:, -len(SEQ):])


@pytest.mark.parametrize("name,model", all_models())
def test_future_never_leaks(name, model):
    seq = padded(SEQ, 10)
    with torch.no_grad():
        base = states(model, seq)
        for t in range(3, 10):
            changed = seq.clone()
            changed[0, t:] = torch.tensor([5, 17, 8, 10, 0, 13, 6][: 10 - t])
            out = states(model, changed)
            torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-6, rtol=1e-6)
            assert not torch.allclose(out[:, t], base[:, t])  # and the changed position does change


def test_domain_vectors_follow_last_item_of_their_domain():
    """h^X at a Y position equals h^X at the preceding X position (compact S^X, Sec. III-F)."""
    m = tema()
    with torch.no_grad():
        _, inputs = m.item_reps(torch.arange(PAD + 1))
        seq = padded(SEQ, 9)  # positions 2..8 hold 1,12,3,15,4,19,2
        h = m.user_vectors(seq, inputs, seq)
    hx = h["X"]["id"][0]
    torch.testing.assert_close(hx[3], hx[2])  # 12 (Y) after 1 (X)
    torch.testing.assert_close(hx[7], hx[6])  # 19 (Y) after 4 (X)
    assert torch.all(hx[:2] == 0)  # no X item yet: zero vector, every candidate equally likely
    hy = h["Y"]["id"][0]
    assert torch.all(hy[2] == 0) and torch.allclose(hy[4], hy[3])


def test_eq16_is_a_mixture_of_probabilities_over_the_target_domain():
    m = tema()
    m.prepare()
    seqs = torch.cat([padded(SEQ, 12), padded(SEQ[:4], 12)])
    dom = torch.tensor([0, 1])
    st = m.encode(seqs, dom)
    c = m.cfg.seq_weights()
    x_scores = m.score(st, torch.arange(NX))[0]
    y_scores = m.score(st, torch.arange(NX, PAD))[1]
    assert x_scores.sum().item() == pytest.approx(c[0].sum(), rel=1e-5)  # 1 + lambda1 + lambda2
    assert y_scores.sum().item() == pytest.approx(c[1].sum(), rel=1e-5)
    parts = m.explain(st, torch.arange(NX))
    assert set(parts) == {f"{s}/{k}" for s in ("X", "Y", "X+Y") for k in ("id", "img", "tex", "tag")}
    torch.testing.assert_close(sum(parts.values()), m.score(st, torch.arange(NX)))
    # each (sequence, stream) part is c_s * w_m * a probability distribution over the domain
    w = m.cfg.stream_weights()
    assert parts["Y/img"][0].sum().item() == pytest.approx(c[0][1] * w["img"], rel=1e-5)
    # candidates scored per row equal the same items in a full-domain ranking
    cand = torch.tensor([[3, 0, 8, 3], [12, 19, 10, 15]])
    full = torch.stack([m.score(st, torch.arange(NX))[0][cand[0]], m.score(st, torch.arange(PAD))[1][cand[1]]])
    torch.testing.assert_close(m.score(st, cand), full)
    odd = torch.tensor([[3, 12], [12, 3]])  # items outside a row's domain still score consistently
    everything = m.score(st, torch.arange(PAD))
    torch.testing.assert_close(m.score(st, odd), torch.stack([everything[i][odd[i]] for i in range(2)]))


def test_training_loss_matches_the_inference_probabilities():
    """-log of Eq. 13's mixture at the last position, weighted by c_s, is the loss of that target."""
    m = tema()
    m.prepare()
    seq = padded(SEQ, 8)
    target = torch.full_like(seq, PAD)
    target[0, -1] = 5  # an X target after the history
    loss, n = m(seq, target)
    st = m.encode(seq, torch.tensor([0]))
    parts = m.explain(st, torch.tensor([[5]]))
    c = m.cfg.seq_weights()[0]
    expected = 0.0
    for i, s in enumerate(("X", "Y", "X+Y")):
        p_s = sum(v for k, v in parts.items() if k.startswith(s + "/")) / c[i]
        expected += -c[i] * torch.log(p_s).item()
    assert n == 1 and loss.item() == pytest.approx(expected, rel=1e-4)


def test_sampled_softmax_loss_and_gradients():
    m = tema().train()
    seq = torch.cat([padded(SEQ[:-1], 8), padded([0, 10, 2], 8)])
    target = torch.cat([padded(SEQ[1:], 8), padded([10, 2, 14], 8)])
    negs = torch.stack([torch.arange(NX), torch.arange(NX, PAD)[:NX]])
    loss, n = m(seq, target, negs)
    assert n == 9 and torch.isfinite(loss)
    loss.backward()
    assert m.E_tag.grad is not None and m.E_tag.grad.abs().sum() > 0
    assert m.P_img.weight.grad.abs().sum() > 0 and m.mlp[0].weight.grad.abs().sum() > 0
    assert m.E_img.requires_grad is False  # frozen features are buffers


def test_tag_embedding_is_the_weighted_sum_of_eq7():
    m = tema()
    ids = torch.tensor([3, 0, 17, 3])
    torch.testing.assert_close(m.e_tag_of(ids), m.e_tag_all()[ids])
    W = torch.zeros(PAD + 1, 4)  # the soft tag vectors w_v of Sec. III-D, dense
    for item, tag, weight in zip(*m.test_tags):
        W[item, tag] += float(weight)
    torch.testing.assert_close(m.e_tag_all(), W @ m.E_tag)
    assert torch.all(m.e_tag_all()[PAD] == 0)


def test_ablation_flags_change_the_model_as_documented():
    full = tema()
    assert set(full.encoders) == {"X", "Y", "XY"}  # one stacked encoder per sequence, one slot per stream
    assert all(e.n == 4 for e in full.encoders.values())
    assert full.cfg.stream_weights() == pytest.approx({"id": 0.4, "img": 0.2, "tex": 0.2, "tag": 0.2})

    single = tema(attention="single")  # one attention over the mixed sequence (Table IV)
    assert set(single.encoders) == {"XY"} and single.encoders["XY"].n == 4
    single.prepare()
    st = single.encode(padded(SEQ, 12), torch.tensor([0]))
    assert set(single.explain(st, torch.arange(NX))) == {f"X+Y/{k}" for k in ("id", "img", "tex", "tag")}
    assert single.score(st, torch.arange(NX)).sum().item() == pytest.approx(1.0, rel=1e-5)

    notag = tema(streams=("id", "img", "tex"))  # no tags (Table IV): weights renormalised
    assert not hasattr(notag, "E_tag") and notag.mlp[0].in_features == 16 + 6 + 5
    assert notag.cfg.stream_weights() == pytest.approx({"id": 0.5, "img": 0.25, "tex": 0.25})
    assert full.mlp[0].in_features == 16 + 6 + 5 + 16

    none = tema(fusion="none")  # no Eq. 9 MLP: the ID stream is E_id itself
    assert not hasattr(none, "mlp")
    reps, _ = none.item_reps(torch.arange(5))
    torch.testing.assert_close(reps["id"], none.E_id.weight[:5])

    allf = tema(fusion="all")  # every stream reads the fused embedding
    reps, inputs = allf.item_reps(torch.arange(5))
    for k in ("img", "tex", "tag"):
        assert inputs[k] is reps["id"] and not torch.allclose(reps[k], reps["id"])
    reps, inputs = full.item_reps(torch.arange(5))
    assert inputs["img"] is reps["img"]

    assert full.cfg.seq_weights().tolist() == [[1.0, 0.3, 0.1], [0.3, 1.0, 0.1]]
    assert tema(cross_weights="literal").cfg.seq_weights().tolist() == [[1.0, 0.3, 0.1], [1.0, 0.3, 0.1]]

    with torch.no_grad():  # positions of S^X counted in the domain or in the mixed sequence
        a, b = tema(positions="domain"), tema(positions="mixed")
        ids = torch.arange(PAD + 1)
        ha = a.user_vectors(padded(SEQ, 9), a.item_reps(ids)[1], padded(SEQ, 9))
        hb = b.user_vectors(padded(SEQ, 9), b.item_reps(ids)[1], padded(SEQ, 9))
    torch.testing.assert_close(ha["X+Y"]["id"], hb["X+Y"]["id"])
    assert not torch.allclose(ha["X"]["id"][:, -1], hb["X"]["id"][:, -1])

    with pytest.raises(ValueError):
        TEMAConfig(n_x=1, n_y=1, fusion="late")
    with pytest.raises(ValueError):
        TEMAConfig(n_x=1, n_y=1, alpha=(0.5, 0.5, 0.5))


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_baselines_score_and_explain(kind):
    m = baseline(kind)
    seq = torch.cat([padded(SEQ, 12), padded(SEQ[:3], 12)])
    st = m.encode(seq, torch.tensor([0, 1]))
    cand = torch.tensor([[0, 4, 2], [10, 12, 19]])
    s = m.score(st, cand)
    torch.testing.assert_close(s, torch.stack([m.score(st, torch.arange(PAD))[i][cand[i]] for i in range(2)]))
    assert list(m.explain(st, cand)) == ["X+Y/id"]
    target = torch.cat([padded(SEQ[1:] + [5], 12), padded(SEQ[1:3] + [14], 12)])
    loss, n = m.train()(seq, target)
    assert n == 10 and torch.isfinite(loss)


@pytest.mark.parametrize("name,model", all_models())
def test_a_batch_without_targets_gives_a_zero_loss(name, model):
    seq = padded([3], 6)
    loss, n = model.train()(seq, torch.full_like(seq, PAD))
    assert n == 0 and loss.item() == 0.0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())

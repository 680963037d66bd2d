"""Stacked (batched) encoders, the old state-dict layout, last-position inference, chunked logsumexp,
and the bf16 capability fallback. Nothing here is timed: speed lives in examples/bench_train.py."""

from __future__ import annotations

import builtins
import io

import numpy as np
import pytest
import torch
import torch.nn as nn

from temacli.model import layers
from temacli.model.layers import Encoder, StackedEncoder, logsumexp_matmul, positions_from_start, runtime_info
from temacli.model.tema import TEMA, TEMAConfig, _module_key

torch.set_num_threads(1)
NX, NY = 9, 11
PAD = NX + NY


def perturbed_encoders(n, dim, n_blocks, n_heads, ffn, seed=0):
    torch.manual_seed(seed)
    encs = [Encoder(dim, n_blocks, n_heads, 0.0, 12, ffn) for _ in range(n)]
    with torch.no_grad():  # move LayerNorm scales/shifts off 1/0 so folding them is really exercised
        for e in encs:
            for p in e.parameters():
                p.add_(torch.randn_like(p) * 0.2)
    return encs


def batch(n, dim, B=5, L=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(B, L, generator=g) > 0.3
    valid[:, -1] = True
    valid[0] = False  # a row with a single item at the end
    valid[0, -1] = True
    x = torch.randn(n, B, L, dim, generator=g)
    return x, positions_from_start(valid), valid


@pytest.mark.parametrize("n_blocks,n_heads,ffn", [(1, 1, False), (2, 2, True)])
def test_stacked_encoder_equals_the_per_encoder_modules_fp32(n_blocks, n_heads, ffn):
    encs = perturbed_encoders(3, 16, n_blocks, n_heads, ffn)
    st = StackedEncoder.from_encoders(encs)
    x, pos, valid = batch(3, 16)
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = torch.stack([e(xr[k], pos, valid) for k, e in enumerate(encs)])
    out = st(xs, pos, valid)
    real = valid[None, :, :, None]
    torch.testing.assert_close(out * real, ref * real, atol=1e-5, rtol=1e-5)
    # same gradients, for the inputs and for every weight (compared in the Encoder layout)
    w = torch.randn_like(ref) * real
    (ref * w).sum().backward()
    (out * w).sum().backward()
    torch.testing.assert_close(xs.grad, xr.grad, atol=1e-5, rtol=1e-4)
    grads = {k: p.grad for k, p in st.named_parameters()}
    for j, e in enumerate(encs):
        mine = layers.unstack_encoder_state(grads, j)
        for k, p in e.named_parameters():
            torch.testing.assert_close(mine[k], p.grad, atol=1e-5, rtol=1e-4, msg=f"gradient of {k}")


def test_stacked_encoder_equals_the_per_encoder_modules_bf16():
    encs = perturbed_encoders(4, 32, 1, 1, False)
    st = StackedEncoder.from_encoders(encs)
    x, pos, valid = batch(4, 32)
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = torch.stack([e(xr[k], pos, valid) for k, e in enumerate(encs)]).float()
        out = st(xs, pos, valid).float()
    real = valid[None, :, :, None]
    assert (out * real - ref * real).abs().max() < 0.1  # bf16 has 8 bits of mantissa
    torch.testing.assert_close(out * real, ref * real, atol=0.1, rtol=0.05)
    (ref * real).sum().backward()
    (out * real).sum().backward()
    torch.testing.assert_close(xs.grad, xr.grad, atol=0.1, rtol=0.05)


def test_stacked_encoder_rows_and_last_only_select_what_the_full_run_computes():
    encs = perturbed_encoders(2, 16, 2, 2, True)
    st = StackedEncoder.from_encoders(encs).eval()
    x, pos, valid = batch(2, 16)
    with torch.no_grad():
        full = st(x, pos, valid)
        rows = torch.tensor([7, 3, 20, 39])
        torch.testing.assert_close(st(x, pos, valid, rows=rows), full.reshape(2, -1, 16)[:, rows])
        torch.testing.assert_close(st(x, pos, valid, last_only=True), full[:, :, -1], atol=1e-5, rtol=1e-5)


def test_stacked_weights_unstack_to_the_encoder_layout():
    encs = perturbed_encoders(3, 8, 2, 1, True)
    st = StackedEncoder.from_encoders(encs)
    for j, e in enumerate(encs):
        back = st.encoder_state(j)
        assert set(back) == set(e.state_dict())
        for k, v in e.state_dict().items():
            assert torch.equal(back[k], v)
    with pytest.raises(KeyError):
        layers.stack_encoder_states([{"nonsense.weight": torch.zeros(1)}])


# ----------------------------------------------------------------------------- TEMA
def tema(seed=0, **kw) -> TEMA:
    torch.manual_seed(seed)
    rng = np.random.default_rng(0)
    cfg = TEMAConfig(n_x=NX, n_y=NY, q=16, image_dim=6, text_dim=5, n_tags=4, max_len=12, dropout=0.0, **kw)
    item = np.repeat(np.arange(PAD), 2)
    tags = (item, np.tile([0, 2], PAD), rng.uniform(0.2, 1, item.size).astype(np.float32))
    return TEMA(cfg, rng.normal(size=(PAD, 6)), rng.normal(size=(PAD, 5)), tags).eval()


def old_layout_state(model: TEMA) -> dict:
    """The model's weights as folders before the stacking stored them: encoders.<seq>_<stream>.*"""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("encoders.")}
    old = nn.ModuleDict()
    for s in model.seqs:
        st = model.encoders[s.replace("+", "")]
        for j, m in enumerate(model.streams):
            c = model.cfg
            e = Encoder(c.q, c.n_blocks, c.n_heads, c.dropout, c.max_len, c.ffn)
            e.load_state_dict(st.encoder_state(j))
            old[_module_key(s, m)] = e
    state.update({f"encoders.{k}": v for k, v in old.state_dict().items()})
    return state


HIST = torch.tensor([[PAD, PAD, 1, 12, 3, 15, 4, 19, 2], [PAD] * 6 + [13, 5, 17], [PAD] * 8 + [3]])


@pytest.mark.parametrize("kw", [{}, {"n_blocks": 2, "n_heads": 2, "ffn": True}, {"attention": "single"}])
def test_model_folders_with_per_encoder_weights_still_load(kw, tmp_path):
    from safetensors.torch import save_file

    from temacli.model.folder import load_weights

    a = tema(seed=0, **kw)
    old = old_layout_state(a)
    assert any(k.startswith("encoders.XY_id.") for k in old) and not any(k.startswith("encoders.XY.") for k in old)
    save_file({k: v.contiguous() for k, v in old.items()}, str(tmp_path / "model.safetensors"))
    b = tema(seed=1, **kw)  # other initial weights
    assert not torch.equal(a.encoders["XY"].blocks[0].qkv_w, b.encoders["XY"].blocks[0].qkv_w)
    load_weights(b, tmp_path / "model.safetensors")  # strict: every key converted, none left over
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k
    dom = torch.tensor([0, 1, 1])
    torch.testing.assert_close(b.score(b.encode(HIST, dom), torch.arange(PAD)),
                               a.score(a.encode(HIST, dom), torch.arange(PAD)))
    b.load_state_dict(a.state_dict())  # and the new layout loads as it is


@pytest.mark.parametrize("kw", [{}, {"n_blocks": 2, "n_heads": 2, "ffn": True}, {"attention": "single"},
                                {"positions": "mixed", "fusion": "all"}])
def test_last_position_inference_equals_full_sequence_inference(kw):
    m = tema(**kw)
    with torch.no_grad():  # weights away from their initial values, LayerNorms included
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    m.prepare()
    dom = torch.tensor([0, 1, 0])
    fast, full = m.encode(HIST, dom), m.encode(HIST, dom, last_only=False)
    torch.testing.assert_close(fast["h"], full["h"], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(fast["lse"], full["lse"], atol=1e-6, rtol=1e-4)
    for items in (torch.arange(PAD), torch.tensor([[0, 3, 8], [9, 12, 19], [1, 2, 4]])):
        a, b = m.score(fast, items), m.score(full, items)
        assert ((a - b).abs() / b.abs().clamp(min=1e-12)).max() < 1e-4
    # the row whose history has no Y item gets the zero vector for S^Y, in both paths
    if m.seqs == ("X", "Y", "X+Y"):
        assert torch.all(fast["h"][2, 1] == 0) and fast["h"][2, 0].abs().sum() > 0


def test_chunked_logsumexp_matches_the_plain_one(monkeypatch):
    g = torch.Generator().manual_seed(0)
    H = torch.randn(37, 8, generator=g, requires_grad=True)
    R = torch.randn(50, 8, generator=g, requires_grad=True)
    w = torch.randn(37, generator=g)
    plain = torch.logsumexp(H @ R.T, dim=-1)
    gH, gR = torch.autograd.grad((plain * w).sum(), (H, R))
    monkeypatch.setattr(layers, "LSE_CHUNK_BYTES", 4 * 50 * 6)  # 6 rows per chunk
    chunked = logsumexp_matmul(H, R)
    assert chunked.grad_fn is not None and "ChunkedLSE" in type(chunked.grad_fn).__name__
    cH, cR = torch.autograd.grad((chunked * w).sum(), (H, R))
    torch.testing.assert_close(chunked, plain)
    torch.testing.assert_close(cH, gH)
    torch.testing.assert_close(cR, gR)


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("lead", [(), (3,)], ids=["rows", "stacked"])
def test_sampled_logsumexp_equals_the_masked_plain_one(amp, lead, monkeypatch):
    """Blockwise masked logsumexp over shared negatives: the same value and gradients as the plain
    product -> fp32 -> mask -> logsumexp that autograd differentiates, in fp32 and under bf16 autocast,
    with several row blocks and a row whose every negative is left out (its value -inf, no gradient)."""
    from temacli.model.layers import sampled_logsumexp

    g = torch.Generator().manual_seed(0)
    P, K, q = 41, 30, 8
    H = torch.randn(*lead, P, q, generator=g, requires_grad=True)
    N = torch.randn(K, q, generator=g, requires_grad=True)
    hits = torch.rand(P, K, generator=g) < 0.1
    hits[3] = True
    w = torch.randn(*lead, P, generator=g)

    def run(fn):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = fn()
        finite = torch.isfinite(out)
        return out, torch.autograd.grad((out.masked_fill(~finite, 0) * w).sum(), (H, N))

    plain, (pH, pN) = run(lambda: torch.logsumexp((H @ N.T).float().masked_fill(hits, float("-inf")), -1))
    monkeypatch.setattr(layers, "SAMPLED_CHUNK_BYTES", 4 * K * 7)  # blocks of 7 (rows) or 2 (stacked) targets
    fast, (fH, fN) = run(lambda: sampled_logsumexp(H, N, hits))
    assert fast.dtype == torch.float32 and fast.shape == plain.shape
    assert torch.isneginf(fast[..., 3]).all()
    torch.testing.assert_close(fast, plain, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fH, pH, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fN, pN, rtol=1e-5, atol=1e-6)
    assert torch.all(fH[..., 3, :] == 0)


@pytest.mark.parametrize("kind", ["tema", "sasrec"])
def test_full_softmax_loss_and_gradients_do_not_change_when_chunked(kind, monkeypatch):
    from temacli.model.baselines import BaselineConfig, build_baseline

    seq = HIST[:, :-1]
    target = torch.where(seq == PAD, PAD, HIST[:, 1:])

    def loss_and_grads():
        torch.manual_seed(0)
        m = tema() if kind == "tema" else build_baseline(BaselineConfig(n_x=NX, n_y=NY, dim=8, dropout=0.0))
        m.train()
        loss, n = m(seq, target)
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}

    plain, g_plain = loss_and_grads()
    monkeypatch.setattr(layers, "LSE_CHUNK_BYTES", 64)  # every full-softmax normaliser chunked
    chunked, g_chunked = loss_and_grads()
    torch.testing.assert_close(chunked, plain)
    assert set(g_plain) == set(g_chunked)
    for k in g_plain:
        torch.testing.assert_close(g_chunked[k], g_plain[k], atol=1e-6, rtol=1e-4, msg=k)


# ----------------------------------------------------------------------------- precision
def fake_cpuinfo(monkeypatch, text):
    real_open = builtins.open

    def fake(path, *a, **kw):
        if str(path) == "/proc/cpuinfo":
            if text is None:
                raise OSError("no /proc here")
            return io.StringIO(text)
        return real_open(path, *a, **kw)

    monkeypatch.setattr(builtins, "open", fake)


def test_bf16_capability_check_falls_back_to_fp32_without_amx(monkeypatch):
    from temacli.training.loop import cpu_has_bf16_matmul

    fake_cpuinfo(monkeypatch, "processor : 0\nflags : fpu sse2 avx2 fma\n")  # AVX2 only (this machine)
    assert cpu_has_bf16_matmul() is False
    fake_cpuinfo(monkeypatch, "processor : 0\nflags : fpu avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert cpu_has_bf16_matmul() is True
    fake_cpuinfo(monkeypatch, None)  # no /proc/cpuinfo: stay in fp32
    assert cpu_has_bf16_matmul() is False


@pytest.mark.slow
@pytest.mark.parametrize("amx", [False, True])
def test_amp_auto_trains_in_the_precision_the_cpu_check_allows(amx, monkeypatch, tmp_path, make_dataset):
    """``--amp auto`` on a CPU: every training step runs in bf16 exactly when the check says so."""
    from temacli.data.dataset import Dataset
    from temacli.training import loop, step

    ds = Dataset.open(make_dataset(tmp_path / "d", n_users=12))
    monkeypatch.setattr(loop, "cpu_has_bf16_matmul", lambda: amx)
    seen = []
    real_step = step.train_step

    def spy(model, batch, optimizer, **kw):
        seen.append((kw["amp"], torch.is_autocast_enabled("cpu")))
        info = runtime_info(model, kw["device"], kw["amp"])
        assert info["matmul_precision"] == ("bf16 (autocast)" if amx else "fp32")
        return real_step(model, batch, optimizer, **kw)

    monkeypatch.setattr(step, "train_step", spy)
    opts = loop.TrainOptions(model="sasrec", epochs=1, batch_size=8, device="cpu", amp="auto")
    loop.train(ds.path, tmp_path / "m", opts, loop.ModelInputs(params={"dim": 8}))
    assert seen and all(amp is amx for amp, _ in seen)


def test_runtime_info_names_the_precision_and_the_encoders():
    info = runtime_info(tema(), "cpu", amp=False)
    assert info["matmul_precision"] == "fp32" and info["softmax_precision"] == "fp32"
    assert info["encoders"].startswith("stacked")
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert runtime_info(nn.Linear(2, 2), "cpu", amp=True)["matmul_precision"] == "bf16 (autocast)"
    assert runtime_info(nn.Linear(2, 2), "cpu", amp=True)["encoders"] == "per-encoder modules"


def test_dropout_zeroes_p_of_the_entries_and_rescales_the_rest():
    d = layers.Dropout(0.3)
    torch.manual_seed(0)
    x = torch.ones(200, 100, requires_grad=True)
    y = d(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.02
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # the gradient is the same mask
    assert d.eval()(x) is x

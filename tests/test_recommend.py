"""`temacli recommend` on a really trained tiny TEMA model (and fakes for the error paths)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from pathlib import Path

from _eval_fixtures import DotModel, write_fake_model_dir
from temacli import artifacts
from temacli.data.dataset import SPLIT, Dataset
from temacli.data.write import rewrite_split
from temacli.model.folder import open_model_and_data
from temacli.evaluation.protocols import full_ranks
from temacli.recommend import RECS
from temacli.tags.store import load_item_tags


@pytest.fixture
def fake_models(monkeypatch):
    """Fake models registered by folder; the model folder's loader returns them instead of real ones."""
    registry: dict = {}

    def loader(model_dir, device="auto", dataset=None, weights="model.safetensors"):
        return registry[(str(Path(model_dir).resolve()), weights)]

    import temacli.model.folder as folder

    monkeypatch.setattr(folder, "load_trained", loader)

    def add(path: Path, model: DotModel, weights: str = "model.safetensors") -> Path:
        write_fake_model_dir(path, model)
        (path / weights).write_bytes(model.E["id"].tobytes())
        registry[(str(path.resolve()), weights)] = model
        return path

    return add


def rec_json(trained_runs, run_cli, *extra):
    code, out, err = run_cli(["recommend", "--model", trained_runs["tema"], "--data", trained_runs["data"].path, "--device", "cpu",
                          "--json", *extra])
    assert code == 0, err
    return json.loads(out)


def test_one_user_history_exclusions_tags(trained_runs, run_cli):
    ds = trained_runs["data"]
    sp = ds.split("test")
    i = 3
    uid = str(sp.user_id[i])
    r = rec_json(trained_runs, run_cli, "--user", uid, "--k", "4")
    assert r["user_id"] == uid and r["source"] == "test"
    assert [h["item"] for h in r["history"]] == sp.history(i).tolist()
    assert r["history"][0]["title"] and r["history"][0]["domain"] in ds.domains
    assert r["held_out"]["item"] == int(sp.target[i])
    assert r["domain"] == ds.domains[int(sp.target_domain[i])]  # default: the next expected item's domain
    recs = r["recommendations"]
    assert [x["rank"] for x in recs] == [1, 2, 3, 4]
    assert all(x["domain"] == r["domain"] for x in recs)
    assert not set(x["item"] for x in recs) & set(sp.history(i).tolist())  # items they have are excluded
    assert [x["score"] for x in recs] == sorted((x["score"] for x in recs), reverse=True)
    assert r["model"]["kind"] == "tema" and r["data"]["fingerprint"] == ds.fingerprint
    # the item's top tags, highest weight first
    it = load_item_tags(trained_runs["tags"], ds)
    first = recs[0]["item"]
    sel = it.item == first
    order = np.argsort(-it.weight[sel], kind="stable")
    assert recs[0]["tags"] == [it.vocab[t] for t in it.tag[sel][order][:3]]


def test_held_out_rank_matches_full_protocol(trained_runs, run_cli):
    ds = trained_runs["data"]
    sp = ds.split("test")
    model, _ = open_model_and_data(trained_runs["tema"], None, "cpu")
    for i in (0, 5):
        # one row at a time, as recommend scores one user: the same computation, the same floats
        ranks, n_cand = full_ranks(model, sp, (ds.domain_range(0), ds.domain_range(1)), rows=np.array([i]))
        r = rec_json(trained_runs, run_cli, "--user", str(sp.user_id[i]), "--k", "3")
        assert r["held_out"]["rank"] == ranks[0] and r["held_out"]["of"] == n_cand[0]
        assert r["held_out"]["in_top_k"] == (ranks[0] <= 3)


def test_explain_parts_sum_to_score(trained_runs, run_cli):
    uid = str(trained_runs["data"].split("test").user_id[1])
    r = rec_json(trained_runs, run_cli, "--user", uid, "--k", "5", "--explain")
    for x in r["recommendations"]:
        assert {"X/id", "Y/tag", "X+Y/img", "X+Y/tex"} <= set(x["parts"])
        assert sum(x["parts"].values()) == pytest.approx(x["score"], rel=1e-4, abs=1e-6)
        assert sum(x["by_modality"].values()) == pytest.approx(x["score"], rel=1e-4, abs=1e-6)
        assert sum(x["by_branch"].values()) == pytest.approx(x["score"], rel=1e-4, abs=1e-6)
        assert set(x["by_modality"]) == {"id", "img", "tex", "tag"} and set(x["by_branch"]) == {"X", "Y", "X+Y"}


def test_include_seen_domain_and_all_history(trained_runs, run_cli):
    ds = trained_runs["data"]
    sp = ds.split("test")
    i = 2
    uid = str(sp.user_id[i])
    d = int(sp.target_domain[i])
    lo, hi = ds.domain_range(d)
    hist_in_domain = {int(v) for v in sp.history(i) if lo <= v < hi}
    r = rec_json(trained_runs, run_cli, "--user", uid, "--k", str(hi - lo), "--include-seen")
    assert len(r["recommendations"]) == hi - lo and r["include_seen"]
    assert hist_in_domain <= {x["item"] for x in r["recommendations"]}
    r = rec_json(trained_runs, run_cli, "--user", uid, "--k", str(hi - lo))
    assert len(r["recommendations"]) == hi - lo - len(hist_in_domain) == hi - lo - r["excluded_seen"]
    other = ds.domains[1 - d]
    r = rec_json(trained_runs, run_cli, "--user", uid, "--domain", other, "--k", "2")
    assert r["domain"] == other and all(x["domain"] == other for x in r["recommendations"])
    assert r["held_out"]["rank"] is None  # the held-out item is from the other domain
    r = rec_json(trained_runs, run_cli, "--user", uid, "--all-history")
    assert r["held_out"] is None and r["history"][-1]["item"] == int(sp.target[i])
    assert int(sp.target[i]) not in {x["item"] for x in r["recommendations"]}


def test_screen_output(trained_runs, run_cli):
    uid = str(trained_runs["data"].split("test").user_id[0])
    code, out, err = run_cli(["recommend", "--model", trained_runs["tema"], "--user", uid, "--k", "3", "--explain",
                          "--device", "cpu"])
    assert code == 0, err
    for needle in ("recent history", "held-out next item", "top 3", "top tags", "tag", "X+Y", "score ="):
        assert needle in out, needle


def test_batch_parquet_and_unknown_users(trained_runs, run_cli, tmp_path):
    ds = trained_runs["data"]
    users = [str(u) for u in ds.split("test").user_id[:3]]
    f = tmp_path / "users.txt"
    f.write_text("# users\n" + "\n".join(users) + "\n")
    out = tmp_path / "recs.parquet"
    code, _, err = run_cli(["recommend", "--model", trained_runs["tema"], "--users-file", f, "--out", out, "--k", "4",
                        "--device", "cpu"])
    assert code == 0, err
    t = artifacts.read_table(out, RECS)
    assert t.num_rows == 12 and t.column("user_id").to_pylist() == [u for u in users for _ in range(4)]
    assert t.column("rank").to_pylist()[:4] == [1, 2, 3, 4]
    m = artifacts.read_manifest(out, stage="recommend")
    assert m["counts"]["users"] == 3 and m["inputs"]["dataset"]["fingerprint"] == ds.fingerprint
    f.write_text("\n".join(users + ["nobody", "ghost"]) + "\n")
    out2 = tmp_path / "recs2.parquet"
    code, _, err = run_cli(["recommend", "--model", trained_runs["tema"], "--users-file", f, "--out", out2])
    assert code == 2 and "nobody" in err and "ghost" in err and not out2.exists()
    code, _, err = run_cli(["recommend", "--model", trained_runs["tema"], "--users-file", f, "--out", out2, "--skip-unknown",
                        "--explain"])
    assert code == 0, err
    m = artifacts.read_manifest(out2, stage="recommend")
    assert m["unknown_users"] == ["nobody", "ghost"] and m["counts"]["unknown_users"] == 2
    t = artifacts.read_table(out2, RECS)
    assert "part:X/id" in t.column_names


def test_errors_exit_2(trained_runs, run_cli, tmp_path, make_dataset):
    code, out, err = run_cli(["recommend", "--model", trained_runs["tema"], "--user", "nobody"])
    assert code == 2 and "user 'nobody' is not in" in err and len(err.strip().splitlines()) == 1
    other = Dataset.open(make_dataset(tmp_path / "other", preset="eval"))
    code, _, err = run_cli(["recommend", "--model", trained_runs["tema"], "--data", other.path, "--user", "U001"])
    assert code == 2 and "dataset fingerprint" in err
    uid = str(trained_runs["data"].split("test").user_id[0])
    code, _, err = run_cli(["recommend", "--model", trained_runs["tema"], "--user", uid, "--domain", "books"])
    assert code == 2 and "unknown domain 'books'" in err
    code, _, err = run_cli(["recommend", "--model", trained_runs["tema"], "--user", uid, "--users-file", tmp_path / "x"])
    assert code == 2 and "exactly one of" in err
    code, _, err = run_cli(["recommend", "--model", trained_runs["tema"], "--users-file", tmp_path / "x", "--out", tmp_path / "r"])
    assert code == 2 and "users file not found" in err


def test_empty_history_exit_2(tmp_path, run_cli, fake_models, make_dataset):
    ds = Dataset.open(make_dataset(tmp_path, preset="eval"))
    t = artifacts.read_table(ds.path / "test.parquet", SPLIT)
    hist = t.column("history").to_pylist()
    hist[1] = []
    t = t.set_column(t.column_names.index("history"), "history", pa.array(hist, pa.list_(pa.int32())))
    rewrite_split(ds, "test", t)  # a deliberate edit, recorded in the dataset's manifest
    model = fake_models(tmp_path / "m", DotModel(ds))
    uid = t.column("user_id").to_pylist()[1]
    code, _, err = run_cli(["recommend", "--model", model, "--user", uid])
    assert code == 2 and "empty history" in err and "--all-history" in err
    code, out, err = run_cli(["recommend", "--model", model, "--user", uid, "--all-history", "--json"])
    assert code == 0 and len(json.loads(out)["history"]) == 1


def test_train_only_and_valid_users(tmp_path, run_cli, fake_models, make_dataset):
    """c2dsr split: a user without an evaluation row recommends from their whole training sequence,
    in the domain of their last item; a validation user's held-out item is their valid target."""
    ds = Dataset.open(make_dataset(tmp_path, split="c2dsr", eval_users_frac=0.5, preset="eval"))
    model = fake_models(tmp_path / "m", DotModel(ds))
    tr, va = ds.split("train"), ds.split("valid")
    eval_users = set(ds.split("test").user_id) | set(va.user_id)
    i = next(j for j in range(len(tr)) if tr.user_id[j] not in eval_users)
    code, out, err = run_cli(["recommend", "--model", model, "--user", tr.user_id[i], "--json"])
    assert code == 0, err
    r = json.loads(out)
    assert r["source"] == "train" and r["held_out"] is None
    assert [h["item"] for h in r["history"]] == tr.sequence(i).tolist()
    assert r["domain"] == ds.domains[int(tr.target[i] >= ds.n_x)]
    code, out, _ = run_cli(["recommend", "--model", model, "--user", va.user_id[0], "--json"])
    r = json.loads(out)
    assert r["source"] == "valid" and r["held_out"]["item"] == int(va.target[0])


def _numeric_id_dataset(tmp_path, make_dataset):
    """Raw user ids that are odd integers, not the users' indices (user u is called str(2 * (29 - u) + 1)):
    some are another user's index, and the even indices are no raw id."""
    return Dataset.open(make_dataset(tmp_path, preset="eval", user_id=lambda u: str(2 * (29 - u) + 1)))


def test_user_as_raw_id_first_then_as_index(tmp_path, run_cli, fake_models, make_dataset):
    ds = _numeric_id_dataset(tmp_path, make_dataset)
    model = fake_models(tmp_path / "m", DotModel(ds))
    sp = ds.split("test")
    index_of = {str(u): int(i) for u, i in zip(sp.user_id, sp.user)}
    raw = next(u for u, i in index_of.items() if int(u) != i and u in index_of)  # a raw id that is another's index
    code, out, err = run_cli(["recommend", "--model", model, "--user", raw])
    assert code == 0, err
    assert out.splitlines()[0] == f"user {raw}: the raw user id '{raw}'"
    code, out, err = run_cli(["recommend", "--model", model, "--user", raw, "--json"])
    r = json.loads(out)
    assert r["user_id"] == raw and r["user"] == index_of[raw] and r["user_lookup"]["as"] == "raw id"
    # an integer that is no raw id: the user index
    ids = set(index_of)
    idx = next(i for i in sorted(index_of.values()) if str(i) not in ids)
    code, out, err = run_cli(["recommend", "--model", model, "--user", str(idx)])
    assert code == 0, err
    first = out.splitlines()[0]
    uid = next(u for u, i in index_of.items() if i == idx)
    assert first == f"user {idx}: no raw user id '{idx}'; read as the user index {idx} (raw id '{uid}')"
    code, out, err = run_cli(["recommend", "--model", model, "--user", str(idx), "--json"])
    r = json.loads(out)
    assert r["user_id"] == uid and r["user"] == idx and r["user_lookup"]["as"] == "user index"
    assert err.strip().startswith(f"user {idx}: no raw user id")
    code, _, err = run_cli(["recommend", "--model", model, "--user", "99999"])
    assert code == 2 and "or a user index 0.." in err


# ----------------------------------------------------------------------------- prepared tables
def _copy_model(trained_runs, tmp_path):
    import shutil

    dst = tmp_path / "tema"
    shutil.copytree(trained_runs["tema"], dst)
    return dst


def _rec(model, trained_runs, run_cli, uid, *extra):
    code, out, err = run_cli(["recommend", "--model", model, "--data", trained_runs["data"].path, "--device", "cpu", "--json",
                          "--user", uid, "--k", "6", *extra])
    assert code == 0, err
    r = json.loads(out)
    return [(x["item"], x["score"]) for x in r["recommendations"]], r["held_out"], r["recommendations"]


def test_training_writes_prepared_tables_beside_the_weights(trained_runs):
    from safetensors import safe_open

    from temacli.model.folder import PREPARED, ModelFolder

    folder = ModelFolder.open(trained_runs["tema"])
    with safe_open(str(trained_runs["tema"] / PREPARED), framework="pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert meta["weights"] == "model.safetensors" and meta["kind"] == "tema"
    assert meta["weights_fingerprint"] == artifacts.fingerprint(trained_runs["tema"] / "model.safetensors")
    assert keys == {f"{g}/{m}" for g in ("R", "F") for m in ("id", "img", "tex", "tag")}
    assert folder.manifest["outputs"]["prepared"]["path"] == PREPARED
    assert not (trained_runs["sasrec"] / PREPARED).exists()  # a baseline has no item tables to prepare


def test_prepared_tables_give_the_same_recommendations(trained_runs, run_cli, tmp_path):
    """With the prepared file the item side of the weights is not read, and top-k, scores, the
    held-out rank and the explained parts are the same as when prepare() runs."""
    import torch

    from temacli.model.folder import PREPARED, ModelFolder

    plain = _copy_model(trained_runs, tmp_path)
    (plain / PREPARED).unlink()
    sp = trained_runs["data"].split("test")
    for i in (0, 4):
        uid = str(sp.user_id[i])
        a = _rec(trained_runs["tema"], trained_runs, run_cli, uid, "--explain")
        b = _rec(plain, trained_runs, run_cli, uid, "--explain")
        assert a[0] == b[0] and a[1] == b[1]
        assert [x["parts"] for x in a[2]] == [x["parts"] for x in b[2]]
    fast = ModelFolder.open(trained_runs["tema"]).load("cpu")
    slow = ModelFolder.open(plain).load("cpu")
    assert fast.from_prepared and not slow.from_prepared
    assert not fast.model.E_img.any() and slow.model.E_img.any()  # the frozen features were not loaded
    for g in ("R", "F"):
        for m, t in slow.model._tables[g].items():
            assert torch.equal(fast.model._tables[g][m], t)
    # prepared=False (or a GPU) computes the tables as before
    assert not ModelFolder.open(trained_runs["tema"]).load("cpu", prepared=False).from_prepared


def test_stale_prepared_tables_are_ignored(trained_runs, run_cli, tmp_path):
    import torch

    from temacli.model.folder import ModelFolder, load_weights, save_weights

    stale = _copy_model(trained_runs, tmp_path)
    folder = ModelFolder.open(stale)
    model = folder.build()
    load_weights(model, stale / "model.safetensors")
    with torch.no_grad():
        model.E_id.weight.mul_(-1.0)  # other weights; the prepared file still describes the old ones
    save_weights(model, stale / "model.safetensors")
    assert not folder.load("cpu").from_prepared
    uid = str(trained_runs["data"].split("test").user_id[2])
    got = _rec(stale, trained_runs, run_cli, uid)[0]
    assert got != _rec(trained_runs["tema"], trained_runs, run_cli, uid)[0]  # the new weights' scores, not the stale tables'
    fresh = _copy_model(trained_runs, tmp_path / "fresh")
    import shutil

    shutil.copy(stale / "model.safetensors", fresh / "model.safetensors")
    (fresh / "prepared.safetensors").unlink()
    assert got == _rec(fresh, trained_runs, run_cli, uid)[0]
    # a copy with new mtimes but the same bytes is still recognised (by the fingerprint)
    os_copy = _copy_model(trained_runs, tmp_path / "touched")
    (os_copy / "model.safetensors").touch()
    assert ModelFolder.open(os_copy).load("cpu").from_prepared


def test_load_builds_without_random_init_and_restores_torch_init(trained_runs):
    """The load builds the model with torch.nn.init switched off (the weights overwrite every
    tensor): the loaded state equals an ordinary build + load, and torch.nn.init is restored."""
    import torch

    from temacli.model.folder import ModelFolder, _no_init, load_weights

    folder = ModelFolder.open(trained_runs["tema"])
    loaded = folder.load("cpu", prepared=False).model.state_dict()
    model = folder.build()
    load_weights(model, trained_runs["tema"] / "model.safetensors")
    ref = model.state_dict()
    assert set(loaded) == set(ref) and all(torch.equal(loaded[k], ref[k]) for k in ref)
    assert torch.nn.init.normal_ is not _no_init and torch.nn.init.kaiming_uniform_ is not _no_init
    # a model build that fails inside the switched-off init leaves torch.nn.init as it was
    from temacli.model import folder as mf

    bad = dict(folder.config, model=dict(folder.config["model"], q=-1))
    assert mf._build_empty(bad) is None and torch.nn.init.normal_ is not _no_init

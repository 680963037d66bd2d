"""Issue 12's bad-input suite: every stage refuses bad input cleanly and writes nothing.

One test (at least) per class of the issue, not per example. Each runs the real command through
``temacli.cli.main`` on tiny inputs built in ``tmp_path`` and asserts the exit code (2), the first words
of the one-line message, and that nothing was written (the tree under ``tmp_path`` is unchanged, or the
output does not exist). Classes, numbered as the issue's must-haves:

1. inputs validated where they are read: feature matrices (NaN rows, integer storage, manifest fields);
   item tags (NaN or negative weights, weights not summing to 1, a score of 500, an unknown item, no
   rows); a dataset manifest without its counts; config.json with a wrong type or a missing key; a
   non-finite training loss stops the run (epoch and batch named) and is never kept as the best epoch
2. inputs fingerprint-checked: a features matrix edited after its manifest; test.parquet and the stored
   candidates edited after `data split`
3. flag values checked before any work or file (features, data split, train, eval, tags, recommend); a
   model too large for memory refused with its estimated size before allocation
4. output paths checked before work (file/folder mix-ups, unwritable folders, for every writing stage);
   outputs honour the umask
5. LLM replies cannot move scores between items (ids numbered from 0: refused whole, never cached); tags
   match exits 2 without item tags when nothing could be scored (a dead server); a prompt file that is
   not UTF-8
6. resume finds its way: a kill before the first checkpoint, a torn metrics.jsonl line, a checkpoint
   temporary left by kill -9, the same run given relative paths; leftovers of a killed write removed
7. logs with blank ids refused with the first offending line; quoted CSV fields with newlines read
and the crash class: out of memory (and OSError on a user path, tests/test_cli.py) become one line, exit 2.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import poison_weights_at, unwritable_dir
from temacli import artifacts
from temacli.cli import main

# ----------------------------------------------------------------------------- helpers


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time: "nothing written" means equal trees."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


def refused(code: int, err: str, first: str) -> None:
    """Exit 2, one line, starting with ``error: <first>``; no traceback."""
    assert code == 2, err
    assert err.startswith(f"error: {first}"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def refused_after_progress(code: int, err: str, first: str) -> None:
    """Exit 2 after progress lines: the last line is the one ``error: <first>`` line; no traceback."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert lines[-1].startswith(f"error: {first}"), err
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in err, err


def write_log(folder: Path, n_users: int = 8, n_items: int = 4) -> tuple[Path, Path]:
    """A tiny raw interaction log and items table (two domains, every user in both)."""
    folder.mkdir(parents=True, exist_ok=True)
    log, items = folder / "log.csv", folder / "items.csv"
    with open(log, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("user_id", "item_id", "domain", "timestamp"))
        for u in range(n_users):
            for j in range(8):
                dom = "food" if j % 2 == 0 else "kitchen"
                w.writerow((f"U{u}", f"{dom[0]}{(u + j) % n_items}", dom, 1000 + j))
    with open(items, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("item_id", "domain", "title"))
        for dom in ("food", "kitchen"):
            for k in range(n_items):
                w.writerow((f"{dom[0]}{k}", dom, f"{dom} item {k}"))
    return log, items


def split_args(log: Path, items: Path, out: Path) -> list:
    return ["data", "split", "--interactions", log, "--items", items, "--domains", "food,kitchen", "--out", out,
            "--min-user-interactions", 5, "--min-domain-interactions", 1, "--quiet"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, make_dataset):
    """A real dataset folder (``data split``) with features for both modalities (as the stages write them)."""
    from _train_fixtures import make_features
    from temacli.data.dataset import Dataset

    root = tmp_path_factory.mktemp("bad_input")
    ds = Dataset.open(make_dataset(root))
    make_features(ds, root / "features")
    return ds


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A model folder trained for one epoch on the fixture (id stream only, width 8): the resume test
    continues its training (tests that only need *a* model use conftest's ``tiny_model``)."""
    out = tmp_path_factory.mktemp("bad_input_model") / "model"
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(dataset.path), "--out", str(out), "--epochs", "1", "--device", "cpu",
              "--dim", "8", "--quiet"])
    assert e.value.code == 0
    return out


def features_copy(ds, folder: Path, edit) -> Path:
    """A copy of the fixture's features with ``edit(text_matrix) -> matrix`` applied, manifest rewritten to match."""
    from _train_fixtures import make_features
    from temacli.features.store import write_manifest_for

    make_features(ds, folder)
    emb = edit(np.load(folder / "text.npy"))
    artifacts.write_npy(emb, folder / "text.npy")
    write_manifest_for(folder, "text", "features text", {"model": "fixture"}, ds.path / "items.parquet",
                       ds.items_fingerprint, {"n_items": int(emb.shape[0]), "dim": int(emb.shape[1]), "missing": 0})
    return folder


def train_args(ds, features: Path, out: Path) -> list:
    return ["train", "--data", ds.path, "--features", features, "--out", out, "--epochs", 1, "--device", "cpu",
            "--dim", 8, "--quiet"]


# ----------------------------------------------------------------------------- 1. inputs validated where read
def _nan_row(e):
    e = e.copy()
    e[5, 2] = np.nan
    return e


@pytest.mark.parametrize(
    "edit, first",
    [
        (_nan_row, "{f}/text.npy: row 5 (item 5) of the text features is not finite"),
        (lambda e: (e * 100).astype(np.int64), "{f}/text.npy: text features are stored as int64, expected float32"),
    ],
    ids=["nan-rows", "int64"],
)
def test_bad_feature_matrix_is_refused_by_train(dataset, tmp_path, run_cli, edit, first):
    f = features_copy(dataset, tmp_path / "f", edit)
    before = tree(tmp_path)
    code, _, err = run_cli(train_args(dataset, f, tmp_path / "model"))
    refused(code, err, first.format(f=f))
    assert tree(tmp_path) == before and not (tmp_path / "model").exists()


def test_features_manifest_without_counts_is_refused(dataset, tmp_path, run_cli):
    import json

    f = features_copy(dataset, tmp_path / "f", lambda e: e)
    mp = f / "text.npy.manifest.json"
    m = json.loads(mp.read_text())
    del m["counts"]
    mp.write_text(json.dumps(m))
    before = tree(tmp_path)
    code, _, err = run_cli(train_args(dataset, f, tmp_path / "model"))
    refused(code, err, f"{mp}: manifest field counts.n_items is missing")
    assert tree(tmp_path) == before


def test_dataset_manifest_without_counts_is_refused(tiny_model, tmp_path, run_cli):
    import json
    import shutil

    d = tmp_path / "data"
    shutil.copytree(tiny_model.data, d)
    m = json.loads((d / "manifest.json").read_text())
    del m["counts"]
    (d / "manifest.json").write_text(json.dumps(m))
    before = tree(tmp_path)
    for argv in (["eval", tiny_model.model, "--data", d], ["train", "--data", d, "--out", tmp_path / "model", "--quiet"]):
        code, _, err = run_cli(argv)
        refused(code, err, f"{d / 'manifest.json'}: the dataset manifest has no counts")
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "edit, first",
    [
        (lambda c: c.pop("kind"), "{cfg}: field 'kind' is missing"),
        (lambda c: c.update(n_x="ten"), "{cfg}: field 'n_x' is str \"ten\", expected an integer"),
        (lambda c: c.update(model=[1]), "{cfg}: field 'model' is list [1], expected an object"),
        (lambda c: c["model"].update(q="big"), "{cfg}: the model it describes cannot be built"),
    ],
    ids=["missing-key", "field-type", "section-type", "model-field-type"],
)
def test_config_json_with_a_wrong_type_or_missing_key_is_refused(tiny_model, tmp_path, run_cli, edit, first):
    import json
    import shutil

    m = tmp_path / "model"
    shutil.copytree(tiny_model.model, m)
    cfg = m / "config.json"
    c = json.loads(cfg.read_text())
    edit(c)
    cfg.write_text(json.dumps(c))
    before = tree(tmp_path)
    code, _, err = run_cli(["eval", m, "--data", tiny_model.data])
    refused(code, err, first.format(cfg=cfg))
    assert tree(tmp_path) == before


def _tags_copy(dataset, folder: Path, edit) -> Path:
    """The fixture's item tags with ``edit(table) -> table`` applied to item_tags.parquet."""
    import pyarrow.parquet as pq
    from _train_fixtures import make_tags

    make_tags(dataset, folder)
    path = folder / "item_tags.parquet"
    pq.write_table(edit(pq.read_table(path)), path)
    return path


def _set_first(column: str, value):
    import pyarrow as pa

    def edit(t):
        vals = t.column(column).to_pylist()
        vals[0] = value
        return t.set_column(t.column_names.index(column), column, pa.array(vals, t.schema.field(column).type))

    return edit


@pytest.mark.parametrize(
    "edit, words",
    [
        (_set_first("weight", float("nan")), "weight"),
        (_set_first("weight", -0.5), "weight"),
        (_set_first("score", 500.0), "score"),
        (_set_first("weight", 0.01), "sum to"),
        (_set_first("item", 10_000), "item"),
        (lambda t: t.slice(0, 0), "has no rows"),
    ],
    ids=["nan-weight", "negative-weight", "score-500", "weights-not-summing-to-1", "item-out-of-range", "no-rows"],
)
def test_bad_item_tags_are_refused_by_train(dataset, tmp_path, run_cli, edit, words):
    path = _tags_copy(dataset, tmp_path / "tags", edit)
    before = tree(tmp_path)
    code, _, err = run_cli(["train", "--data", dataset.path, "--tags", path, "--out", tmp_path / "model", "--device", "cpu",
                     "--dim", 8, "--quiet"])
    refused(code, err, f"{path}: ")
    assert words in err
    assert tree(tmp_path) == before


# ----------------------------------------------------------------------------- 2. fingerprints
def test_a_split_edited_after_data_split_is_refused(tiny_model, tmp_path, run_cli):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "data"
    shutil.copytree(tiny_model.data, d)
    t = pq.read_table(d / "test.parquet")
    target = t.column("target").to_pylist()
    target[0], target[1] = target[1], target[0]
    pq.write_table(t.set_column(t.column_names.index("target"), "target", pa.array(target, pa.int32())), d / "test.parquet")
    before = tree(tmp_path)
    code, _, err = run_cli(["eval", tiny_model.model, "--data", d])
    refused(code, err, f"{d / 'test.parquet'}: test.parquet changed after `data split` recorded it")
    assert tree(tmp_path) == before


def test_candidates_edited_after_data_split_are_refused(tiny_model, tmp_path, run_cli):
    import shutil

    d = tmp_path / "data"
    shutil.copytree(tiny_model.data, d)
    c = np.load(d / "candidates_test.npy")
    c[0, 0] = c[0, 1]
    artifacts.write_npy(c, d / "candidates_test.npy")
    before = tree(tmp_path)
    code, _, err = run_cli(["eval", tiny_model.model, "--data", d])
    refused(code, err, f"{d / 'candidates_test.npy'}: the stored negatives (candidates_test.npy) changed after `data split`")
    assert tree(tmp_path) == before

def test_features_edited_after_their_manifest_are_refused(dataset, tmp_path, run_cli):
    f = features_copy(dataset, tmp_path / "f", lambda e: e)
    e = np.load(f / "text.npy")
    artifacts.write_npy(e[:, ::-1].copy(), f / "text.npy")  # still finite float32 unit rows: only the fingerprint tells
    before = tree(tmp_path)
    code, _, err = run_cli(train_args(dataset, f, tmp_path / "model"))
    refused(code, err, f"{f / 'text.npy'}: text.npy fingerprint (the file changed after its manifest was written)")
    assert tree(tmp_path) == before


# ----------------------------------------------------------------------------- 3. flag values
@pytest.mark.parametrize(
    "cmd, flags, first",
    [
        ("text", ["--batch-size", 0], "--batch-size 0: must be between 1 and 65536"),
        ("text", ["--device", "cuda:x"], "--device cuda:x: unknown device"),
        ("clip", ["--random-weights", "--workers", -1], "--workers -1: must be between 0 and 64"),
        ("clip", ["--random-weights", "--text-batch-size", 10**6], "--text-batch-size 1000000: must be between 1 and 65536"),
    ],
)
def test_features_flags_are_checked_before_any_work(dataset, tmp_path, run_cli, cmd, flags, first):
    before = tree(tmp_path)
    code, _, err = run_cli(["features", cmd, "--items", dataset.path, "--out", tmp_path / "feat", *flags])
    refused(code, err, first)
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "flags, first",
    [
        (["--dim", 0], "--dim 0: must be an integer in 1.."),
        (["--lr", -1], "--lr -1.0: must be a number in (0, 10]"),
        (["--batch-size", 0], "--batch-size 0: must be an integer in 1.."),
        (["--epochs", 0], "--epochs 0: must be an integer in 1.."),
        (["--max-len", 0], "--max-len 0: must be an integer in 1.."),
    ],
)
def test_train_flags_are_checked_before_any_file(dataset, tmp_path, run_cli, flags, first):
    before = tree(tmp_path)
    code, _, err = run_cli(["train", "--data", dataset.path, "--out", tmp_path / "model", "--device", "cpu", "--quiet", *flags])
    refused(code, err, first)
    assert tree(tmp_path) == before  # no config.json left behind for a rerun to trip over


@pytest.mark.slow  # three short epochs
def test_a_non_finite_loss_stops_training_and_is_never_kept_as_best(dataset, tmp_path, run_cli, monkeypatch):
    import torch
    from safetensors.torch import load_file

    n_batches = -(-len(dataset.split("train")) // 8)
    poison_weights_at(monkeypatch, n_batches + 2)  # the weights turn NaN in epoch 2's second batch
    m = tmp_path / "model"
    code, _, err = run_cli(["train", "--data", dataset.path, "--out", m, "--device", "cpu", "--dim", 8, "--quiet",
                     "--epochs", 3, "--batch-size", 8])
    refused_after_progress(code, err, "training stopped: the training loss is nan at epoch 2, batch 2")
    weights = load_file(str(m / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())  # the kept (best) epoch is epoch 1's


def test_a_model_too_large_for_memory_is_refused_with_its_size(dataset, tmp_path, run_cli):
    before = tree(tmp_path)
    code, _, err = run_cli(["train", "--data", dataset.path, "--out", tmp_path / "model", "--device", "cpu", "--quiet",
                     "--dim", 16384, "--batch-size", 1000000, "--max-len", 10000])
    refused(code, err, "the model is too large for this machine: about ")
    assert "TiB needed" in err
    assert tree(tmp_path) == before


def test_data_split_and_eval_flags_are_checked_before_any_file(tiny_model, tmp_path, run_cli):
    log, items = write_log(tmp_path / "raw")
    before = tree(tmp_path)
    code, _, err = run_cli(split_args(log, items, tmp_path / "data") + ["--min-user-interactions", 0])
    refused(code, err, "--min-user-interactions 0: out of range")
    code, _, err = run_cli(["eval", tiny_model.model, "--ks", "0", "--out", tmp_path / "r.json"])
    refused(code, err, "--ks 0: ")
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "stage, flags, first",
    [
        ("match", ["--top-r", 0], "--top-r must be at least 1"),
        ("match", ["--threshold", 500], "--threshold must be within 1..100"),
        ("match", ["--shard", "5/2"], "--shard '5/2' must be i/n with 0 <= i < n"),
        ("match", ["--batch-items", 0], "--batch-items 0: must be between 1 and 256"),
        ("match", ["--max-failed-share", 2], "--max-failed-share 2.0: must be between 0.0 and 1.0"),
        ("match", ["--concurrency", 0], "--concurrency must be at least 1"),
        ("generate", ["--runs", 0], "--runs 0: must be between 1 and 100"),
        ("recommend", ["--k", 0], "--k must be at least 1"),
    ],
)
def test_tags_and_recommend_flags_are_checked_before_any_file(dataset, tiny_model, tmp_path, run_cli, monkeypatch,
                                                             stage, flags, first):
    from _llm_server import write_tag_list

    monkeypatch.setenv("TEMACLI_CACHE_DIR", str(tmp_path / "cache"))
    tags = tmp_path / "tags"
    write_tag_list(tags / "food.parquet", "food", ["tea", "coffee"])
    write_tag_list(tags / "kitchen.parquet", "kitchen", ["kettle", "knife"])
    items = dataset.path / "items.parquet"
    argv = {
        "match": ["tags", "match", "--items", items, "--tags", tags, "--out", tmp_path / "o" / "item_tags.parquet"],
        "generate": ["tags", "generate", "--items", items, "--domain", "food", "--out", tmp_path / "o" / "food.parquet"],
        "recommend": ["recommend", "--model", tiny_model.model, "--data", tiny_model.data, "--user", "U001"],
    }[stage]
    before = tree(tmp_path)
    code, _, err = run_cli([*argv, *flags])
    refused(code, err, first)
    assert tree(tmp_path) == before


def test_flag_ranges_are_in_help(capsys):
    from temacli.cli import _command

    clip = _command().commands["features"].commands["clip"]
    helps = {p.opts[0]: p.help for p in clip.params if getattr(p, "help", None)}
    assert "(1-65536)" in helps["--batch-size"] and "(1-65536)" in helps["--text-batch-size"]
    assert "0-64" in helps["--workers"] and "0 to 2^32-1" in helps["--seed"]
    with pytest.raises(SystemExit):
        main(["features", "clip", "--help"])
    assert "(1-65536)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- 4. output paths, permissions
def _all_commands_with_out():
    from temacli.cli import _OUT_KIND, _command

    def walk(cmd, path=()):
        for name, sub in getattr(cmd, "commands", {}).items():
            if hasattr(sub, "commands"):
                yield from walk(sub, path + (name,))
            else:
                yield path + (name,), sub

    for path, cmd in walk(_command()):
        if any("--out" in p.opts for p in cmd.params):
            yield path, cmd, _OUT_KIND.get(path, "file")


def _argv_for(path, cmd, out) -> list[str]:
    """The command with placeholder values for its required parameters (never read: --out is refused first)."""
    argv = list(path)
    for p in cmd.params:
        if "--out" in getattr(p, "opts", ()):
            continue
        if p.required:
            if p.param_type_name == "argument":
                argv.append("placeholder")
            else:
                argv += [p.opts[0], "placeholder"]
    return argv + ["--out", str(out)]


COMMANDS = [(" ".join(p), k) for p, _, k in _all_commands_with_out()]


def test_the_suite_sees_every_writing_stage():
    names = {n for n, _ in COMMANDS}
    assert {"data split", "features clip", "features text", "train", "tags generate", "tags match", "tags merge",
            "eval", "recommend"} <= names


@pytest.mark.parametrize("name, kind", COMMANDS, ids=[n for n, _ in COMMANDS])
def test_wrong_kind_of_output_path_is_refused_by_every_stage(tmp_path, run_cli, name, kind):
    path, cmd, _ = next(x for x in _all_commands_with_out() if " ".join(x[0]) == name)
    afile, adir = tmp_path / "afile", tmp_path / "adir"
    afile.write_text("keep")
    adir.mkdir()
    before = tree(tmp_path)
    wrong = afile if kind == "dir" else adir
    code, _, err = run_cli(_argv_for(path, cmd, wrong))
    expected = "is an existing file, expected a folder" if kind == "dir" else "is an existing folder, expected a file"
    refused(code, err, f"--out {wrong}: {expected}")
    below = afile / "sub" / ("x.parquet" if kind == "file" else "x")
    code, _, err = run_cli(_argv_for(path, cmd, below))
    refused(code, err, f"--out {below}: cannot be created because {afile} is a file")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name, kind", COMMANDS, ids=[n for n, _ in COMMANDS])
def test_unwritable_output_folder_is_refused_by_every_stage(tmp_path, run_cli, name, kind):
    path, cmd, _ = next(x for x in _all_commands_with_out() if " ".join(x[0]) == name)
    ro = unwritable_dir(tmp_path)
    target = ro / "temacli-out" / ("x.parquet" if kind == "file" else "x")
    before = tree(tmp_path)
    code, _, err = run_cli(_argv_for(path, cmd, target))
    refused(code, err, f"--out {target}: folder {ro} is not writable")
    assert tree(tmp_path) == before and not target.exists()


def test_outputs_honour_the_umask(tmp_path, run_cli):
    log, items = write_log(tmp_path / "raw")
    old = os.umask(0o027)
    try:
        code, _, err = run_cli(split_args(log, items, tmp_path / "data"))
    finally:
        os.umask(old)
    assert code == 0, err
    d = tmp_path / "data"
    assert os.stat(d).st_mode & 0o777 == 0o750
    files = [p for p in d.rglob("*") if p.is_file()]
    assert files and {p.name: os.stat(p).st_mode & 0o777 for p in files} == {p.name: 0o640 for p in files}
    code, _, err = run_cli(split_args(log, items, tmp_path / "data2"))  # the usual 022
    assert code == 0, err
    assert os.stat(tmp_path / "data2").st_mode & 0o777 == 0o755
    assert {os.stat(p).st_mode & 0o777 for p in (tmp_path / "data2").rglob("*") if p.is_file()} == {0o644}


# ----------------------------------------------------------------------------- 5. LLM replies
@pytest.fixture
def llm_items(tmp_path, monkeypatch, make_dataset):
    """Tiny items with two domains' tag lists, a dummy key and a cache of the test's own."""
    from _llm_server import FOOD, KITCHEN, write_tag_list

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-KEY-0000000000")
    monkeypatch.setenv("TEMACLI_CACHE_DIR", str(tmp_path / "cache"))
    items = make_dataset(tmp_path, "data", items=FOOD + KITCHEN) / "items.parquet"
    write_tag_list(tmp_path / "tags" / "food.parquet", "food", ["coffee", "pasta", "tea", "spice"])
    write_tag_list(tmp_path / "tags" / "kitchen.parquet", "kitchen", ["cast iron", "coffee", "kettle"])
    return items, tmp_path / "tags"


def _match_args(items, tags, url, out) -> list:
    """``tags match --method llm`` against ``url``; ``--json`` keeps stderr to the error line."""
    return ["tags", "match", "--items", items, "--tags", tags, "--method", "llm", "--batch-items", 3,
            "--llm", "openai/scripted", "--api-base", url, "--max-retries", 0, "--timeout", 20, "--json",
            "--out", out]


@pytest.mark.slow  # LiteLLM's first import and call
def test_llm_replies_numbered_from_0_score_nothing_and_are_never_cached(llm_items, tmp_path, run_cli):
    import json

    from _llm_server import Reply, chat_user, item_ids_and_texts, keyword_scorer, serve, tags_of_prompt

    items, tags = llm_items

    def from_zero(body, n):  # every id one lower: each score would land on the neighbouring item
        prompt = chat_user(body)
        return Reply(json.dumps({"items": [{"id": k - 1, "scores": {t: 90 for t in tags_of_prompt(prompt)}}
                                           for k, _ in item_ids_and_texts(prompt)]}))

    out = tmp_path / "o" / "item_tags.parquet"
    with serve(from_zero) as s:
        code, _, err = run_cli(_match_args(items, tags, s.url, out))
    refused(code, err, "tags match: ")
    assert "items failed (all of them)" in err
    assert not out.exists() and not out.with_name("tag_vocab.parquet").exists()  # no 0-row item tags
    report = json.loads(out.with_name("item_tags.report.json").read_text())
    assert report["rejected_replies"]["shifted_ids"] >= 1
    with serve(lambda b, n: Reply(keyword_scorer(b))) as s2:  # nothing was cached: a good server is asked again
        code, _, err = run_cli(_match_args(items, tags, s2.url, out))
        assert code == 0, err
        assert len(s2.requests) >= 1
    assert out.is_file()


@pytest.mark.slow  # LiteLLM's first import and call
def test_tags_match_with_a_dead_server_exits_2_and_writes_no_item_tags(llm_items, tmp_path, run_cli):
    import socket

    items, tags = llm_items
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "o" / "item_tags.parquet"
    code, _, err = run_cli(_match_args(items, tags, f"http://127.0.0.1:{port}/v1", out))
    refused(code, err, "tags match: 9 of 9 items failed (all of them)")
    assert f"cannot connect to http://127.0.0.1:{port}/v1" in err
    assert not out.exists() and not out.with_name("tag_vocab.parquet").exists()


def test_a_prompt_file_that_is_not_utf8_is_refused(llm_items, tmp_path, run_cli):
    items, tags = llm_items
    prompt = tmp_path / "prompt.txt"
    prompt.write_bytes("Score {items} against {tags} for {domain} \u2013 caf\u00e9".encode("latin-1", "replace") + b"\xff\xfe")
    before = tree(tmp_path)
    out = tmp_path / "o" / "item_tags.parquet"
    code, _, err = run_cli(_match_args(items, tags, "http://127.0.0.1:9/v1", out) + ["--prompt-file", prompt])
    refused(code, err, f"--prompt-file {prompt}: ")
    assert tree(tmp_path) == before


# ----------------------------------------------------------------------------- 6. leftovers of a killed write
def test_a_killed_write_leaves_a_temporary_that_the_next_run_removes(tmp_path, run_cli):
    log, items = write_log(tmp_path / "raw")
    out = tmp_path / "data"
    code = (
        "import os, signal, sys\n"
        "from temacli import artifacts\n"
        "with artifacts.atomic_dir(sys.argv[1]) as d:\n"
        "    (d / 'train.parquet').write_bytes(b'0' * 100000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(out)])
    assert res.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir() if artifacts.TEMP_MARK in p.name]
    assert len(left) == 1 and left[0].startswith(".data.")
    code, _, err = run_cli(split_args(log, items, out))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "raw"]


def _train_again(dataset, model, run_cli, *extra, data=None) -> tuple[int, str]:
    code, _, err = run_cli(["train", "--data", data or dataset.path, "--out", model, "--device", "cpu", "--dim", 8,
                            "--quiet", *extra])
    return code, err


def test_resume_finds_its_way_after_kills_at_awkward_moments(dataset, trained, tmp_path, run_cli, monkeypatch):
    """A kill before the first checkpoint, a torn metrics.jsonl line, a half-written checkpoint, relative paths."""
    import shutil

    # killed between config.json and the first checkpoint: --resume (and a plain run) start from scratch
    m = tmp_path / "early"
    shutil.copytree(trained, m)
    shutil.rmtree(m / "checkpoints")
    for name in ("model.safetensors", "metrics.jsonl", "metrics.csv", "manifest.json"):
        (m / name).unlink(missing_ok=True)
    code, err = _train_again(dataset, m, run_cli, "--epochs", 1, "--resume")
    assert code == 0 and "note:" in err, err
    assert (m / "model.safetensors").is_file() and any((m / "checkpoints").iterdir())

    # a torn last line of metrics.jsonl and a checkpoint temporary left by kill -9; inputs given relative
    m = tmp_path / "torn"
    shutil.copytree(trained, m)
    with open(m / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')
    ckpt_dir = m / "checkpoints"
    stale = ckpt_dir / f".last.pt.{_dead_pid()}-{artifacts._host_tag()}.x1y2z3.temacli-tmp.pt"
    stale.write_bytes(b"0" * 100_000)
    monkeypatch.chdir(dataset.path.parent)
    rel = os.path.relpath(dataset.path)
    code, err = _train_again(dataset, os.path.relpath(m), run_cli, "--epochs", 2, "--resume", data=rel)
    assert code == 0, err
    assert "note:" in err and "metrics.jsonl" in err
    lines = (m / "metrics.jsonl").read_text().splitlines()
    assert [json_epoch(line) for line in lines] == [1, 2]
    assert not stale.exists() and not [p for p in m.rglob("*") if artifacts.TEMP_MARK in p.name]


def json_epoch(line: str) -> int:
    import json

    return int(json.loads(line)["epoch"])


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ----------------------------------------------------------------------------- 7. logs
def test_blank_ids_are_refused_with_the_first_line(tmp_path, run_cli):
    log, items = write_log(tmp_path / "raw")
    rows = list(csv.reader(open(log, newline="")))
    rows[5][0] = "  "
    rows[9][0] = ""
    bad = tmp_path / "raw" / "blank.csv"
    with open(bad, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    before = tree(tmp_path)
    code, _, err = run_cli(split_args(bad, items, tmp_path / "data"))
    refused(code, err, f"{bad}: column 'user_id' (--user-col) has 2 missing or blank ids, the first at file line 6")
    assert tree(tmp_path) == before


def test_quoted_csv_fields_with_newlines_are_read(tmp_path, run_cli):
    import pyarrow.parquet as pq

    log, items = write_log(tmp_path / "raw")
    rows = list(csv.reader(open(items, newline="")))
    rows[2][2] = 'Green tea,\n"loose leaf"'
    with open(items, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    code, _, err = run_cli(split_args(log, items, tmp_path / "data"))
    assert code == 0, err
    titles = pq.read_table(tmp_path / "data" / "items.parquet").column("title").to_pylist()
    assert 'Green tea,\n"loose leaf"' in titles


# ----------------------------------------------------------------------------- crashes that are bad input
def test_out_of_memory_is_one_line_exit_2(dataset, tmp_path, run_cli, monkeypatch):
    """An allocation beyond the machine (here: the feature matrix's memory map) is not an internal error."""
    from temacli.features import store

    def too_big(*a, **k):
        return np.zeros((1 << 45,), dtype=np.float64)  # 256 TiB

    monkeypatch.setattr(store, "check_matrix", too_big)
    before = tree(tmp_path)
    code, _, err = run_cli(train_args(dataset, dataset.path.parent / "features", tmp_path / "model"))
    refused(code, err, "not enough memory: Unable to allocate")
    assert tree(tmp_path) == before

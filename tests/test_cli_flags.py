"""One meaning per flag (issue 15, item 5): renamed options keep their old spelling with a note, choices are
enums that --help lists, and -d/--device/--seed/--quiet/--force mean the same on data split, train, eval,
recommend and plot. The option facts come from the built click app, never from help text."""

from __future__ import annotations

import enum
import re
import tomllib
from pathlib import Path

import pytest
import typer
import typer.main

from temacli.cli import _options, app

NOTE = "note: --model is deprecated for train; use --arch"

# the commands this file holds to one vocabulary
COMMANDS = ("data split", "train", "eval", "recommend", "plot", "tags generate", "tags match", "tags merge",
            "features clip", "features text")
READS_DATASET = ("train", "eval", "recommend")
SHOWS_PROGRESS = ("data split", "train", "eval", "tags generate", "tags match", "features clip", "features text")
# an existing output is replaced (or, for features, recomputed) only with --force
WRITES = ("data split", "train", "eval", "recommend", "plot", "tags generate", "tags match", "tags merge",
          "features clip", "features text")


def _cmd(path: str):
    cmd = typer.main.get_command(app)
    for word in path.split():
        cmd = cmd.commands[word]
    return cmd


def _opt(cmd, long: str):
    return next((p for p in cmd.params if long in getattr(p, "opts", ())), None)


def _wide_help(monkeypatch):
    import typer.rich_utils

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 300)  # one line per option: choices are not wrapped


# ----------------------------------------------------------------------------- choices
ENUM_FLAGS = [
    ("train", "--arch", ["tema", "sasrec", "gru4rec"]),
    ("train", "--softmax", ["full", "sampled"]),
    ("train", "--train-positions", ["all", "last"]),
    ("train", "--amp", ["auto", "bf16", "off"]),
    ("train", "--tag-weights", ["file", "weighted", "multihot", "onehot"]),
    ("train", "--fusion", ["id", "all", "none"]),
    ("train", "--attention", ["multi", "single"]),
    ("train", "--positions", ["domain", "mixed"]),
    ("train", "--cross-weights", ["symmetric", "literal"]),
    ("train", "--log", ["none", "tensorboard"]),
    ("eval", "--split", ["test", "valid"]),
    ("eval", "--protocol", ["sampled", "full"]),
    ("eval", "--layout", ["paper", "llmcdsr"]),
    ("plot", "--split", ["test", "valid"]),
    ("plot", "--protocol", ["sampled", "full"]),
    ("data split", "--format", ["log", "llmcdsr", "c2dsr"]),
    ("data split", "--split", ["loo", "c2dsr"]),
    ("tags generate", "--ground", ["keyword", "embedding"]),
    ("tags generate", "--pick", ["coverage", "votes"]),
    ("tags generate", "--response-format", ["schema", "json", "none"]),
    ("tags match", "--method", ["embedding", "llm", "keyword"]),
    ("tags match", "--select", ["top-r", "threshold", "hybrid"]),
    ("tags match", "--represent", ["weighted", "multihot", "onehot"]),
    ("tags match", "--response-format", ["schema", "json", "none"]),
    ("features clip", "--modality", ["both", "image", "text"]),
    ("features clip", "--dtype", ["float32", "float16"]),
    ("features clip", "--precision", ["auto", "float32", "bfloat16", "float16"]),
    ("features text", "--dtype", ["float32", "float16"]),
    ("features text", "--precision", ["auto", "float32", "bfloat16", "float16"]),
]


@pytest.mark.parametrize("path,flag,choices", ENUM_FLAGS, ids=[f"{p}{f}" for p, f, _ in ENUM_FLAGS])
def test_choices_are_enums_listed_in_help(path, flag, choices, run_cli, monkeypatch, tmp_path):
    p = _opt(_cmd(path), flag)
    assert p is not None, f"{path} has no {flag}"
    assert [_options.value(c) for c in p.type_descriptor.choices] == choices
    _wide_help(monkeypatch)
    code, out, _ = run_cli([*path.split(), "--help"])
    assert code == 0 and re.search(r"<(?:list\[)?" + re.escape("|".join(choices)) + r"\]?>", out), out
    # a wrong choice is a usage error that names every choice; nothing is written
    args = {"train": ["--data", tmp_path, "--out", tmp_path / "m"],
            "eval": ["--model", tmp_path], "plot": [str(tmp_path), "--out", tmp_path / "p"],
            "data split": ["--out", tmp_path / "d"],
            "tags generate": ["--domain", "food", "--out", tmp_path / "g.parquet"],
            "tags match": ["--items", tmp_path / "items.parquet", "--tags", tmp_path, "--out", tmp_path / "t.parquet"],
            "features clip": ["--items", tmp_path, "--out", tmp_path / "f", "--random-weights"],
            "features text": ["--items", tmp_path, "--out", tmp_path / "f"]}[path]
    code, _, err = run_cli([*path.split(), *args, flag, "bogus"])
    assert code == 2 and "'bogus' is not one of" in err and flag in err
    assert all(f"'{c}'" in err for c in choices), err
    assert not any(tmp_path.iterdir())


def test_choices_match_the_library():
    """The CLI's enums hold what the library accepts (the library keeps its own checks for Python callers)."""
    from temacli.data.build import SPLIT_MODES
    from temacli.features import clip, device, store
    from temacli.llm.client import RESPONSE_FORMATS
    from temacli.tags.generate import GROUNDINGS, PICKS
    from temacli.tags.match import METHODS, SELECTIONS
    from temacli.tags.represent import REPRESENTATIONS
    from temacli.evaluation.checks import EVAL_SPLITS, PROTOCOLS
    from temacli.evaluation.report import LAYOUTS
    from temacli.model import registry, tema
    from temacli.model.baselines import BASELINES
    from temacli.training.batches import POSITIONS
    from temacli.training.loop import LOGS, SOFTMAXES, TAG_WEIGHTS

    def vals(e: type[enum.Enum]) -> set[str]:
        return {m.value for m in e}

    assert vals(_options.Arch) == {"tema", *BASELINES} == set(registry.KINDS)
    for kind in vals(_options.Arch):
        assert registry.get(kind).name == kind
    assert vals(_options.Softmax) == set(SOFTMAXES) and vals(_options.Log) == set(LOGS)
    assert vals(_options.TagWeights) == set(TAG_WEIGHTS) and vals(_options.TrainPositions) == set(POSITIONS)
    assert vals(_options.Fusion) == set(tema.FUSIONS) and vals(_options.Attention) == set(tema.ATTENTIONS)
    assert vals(_options.Positions) == set(tema.POSITIONS) and vals(_options.CrossWeights) == set(tema.CROSS_WEIGHTS)
    assert vals(_options.Split) == set(EVAL_SPLITS) and vals(_options.Protocol) == set(PROTOCOLS)
    assert vals(_options.Layout) == set(LAYOUTS) and vals(_options.SplitMode) == set(SPLIT_MODES)
    assert vals(_options.MatchMethod) == set(METHODS) and vals(_options.Select) == set(SELECTIONS)
    assert vals(_options.Represent) == set(REPRESENTATIONS) and vals(_options.Ground) == set(GROUNDINGS)
    assert vals(_options.Pick) == set(PICKS)
    assert vals(_options.ResponseFormat) == set(RESPONSE_FORMATS)
    assert vals(_options.Modality) == set(clip.MODALITY_CHOICES) and vals(_options.Dtype) == set(store.DTYPES)
    assert vals(_options.Precision) == set(device.PRECISIONS)


def test_early_stop_help_lists_its_forms(run_cli, monkeypatch):
    _wide_help(monkeypatch)
    code, out, _ = run_cli(["train", "--help"])
    assert code == 0 and "loss|mrr|hr@K|ndcg@K" in out


# ----------------------------------------------------------------------------- the same flags everywhere
def test_d_is_data_wherever_a_dataset_is_read():
    for path in COMMANDS:
        cmd = _cmd(path)
        short = next((p for p in cmd.params if "-d" in getattr(p, "opts", ()) and not p.hidden), None)
        if path in READS_DATASET:
            assert short is not None and "--data" in short.opts, path
        if short is not None:
            assert "--data" in short.opts, f"{path}: -d is {short.opts}"
    # tags generate's old -d (--domain) is hidden and feeds --domain for this release
    old = _opt(_cmd("tags generate"), "-d")
    assert old.hidden and getattr(old, _options.RENAMED_ATTR) == "domain"


def test_device_and_seed_defaults():
    seen = {"--device": [], "--seed": []}
    for path in COMMANDS:
        cmd = _cmd(path)
        if (p := _opt(cmd, "--device")) is not None:
            assert p.default == "auto", path
            seen["--device"].append(path)
        if (p := _opt(cmd, "--seed")) is not None:
            assert p.default == _options.SEED_DEFAULT == 42, path
            seen["--seed"].append(path)
    assert set(seen["--device"]) == {"train", "eval", "recommend", "tags generate", "tags match", "features clip",
                                     "features text"}
    assert set(seen["--seed"]) == {"data split", "train", "tags generate", "features clip"}


def test_quiet_and_force():
    for path in COMMANDS:
        cmd = _cmd(path)
        q = _opt(cmd, "--quiet")
        if path in SHOWS_PROGRESS:
            assert q is not None, f"{path} shows progress but has no --quiet"
        if q is not None:
            assert "-q" in q.opts and q.is_flag and q.default is False, path
        assert _opt(cmd, "--verbose") is None or all(_opt(_cmd(c), "--verbose") for c in COMMANDS)
        f = _opt(cmd, "--force")
        if path in WRITES:
            assert f is not None and f.is_flag and f.default is False, f"{path}: --force"


def test_eval_and_recommend_out_refuse_an_existing_file_without_force(run_cli, tmp_path):
    existing = tmp_path / "result.json"
    existing.write_text("keep")
    code, _, err = run_cli(["eval", "--model", tmp_path / "no-model", "--out", existing, "--quiet"])
    assert code == 2 and "exists; pass --force" in err and existing.read_text() == "keep"
    users = tmp_path / "users.txt"
    users.write_text("u1\n")
    recs = tmp_path / "recs.parquet"
    recs.write_text("keep")
    code, _, err = run_cli(["recommend", "--model", tmp_path / "no-model", "--users-file", users, "--out", recs])
    assert code == 2 and "exists; pass --force" in err and recs.read_text() == "keep"
    # with --force the refusal is gone: the command goes on to the model (missing here)
    code, _, err = run_cli(["recommend", "--model", tmp_path / "no-model", "--users-file", users, "--out", recs,
                            "--force"])
    assert code == 2 and "exists; pass --force" not in err and "no-model" in err


@pytest.mark.slow
def test_eval_out_force_replaces(tiny_model, run_cli, tmp_path):
    import json

    out = tmp_path / "r.json"
    out.write_text("old")
    code, _, err = run_cli(["eval", "--model", tiny_model.model, "--out", out, "--force", "--quiet", "--device", "cpu"])
    assert code == 0, err
    assert json.loads(out.read_text())["protocol"] == "sampled"


# ----------------------------------------------------------------------------- deprecated spellings
TRAIN = ["--epochs", "1", "--dim", "8", "--batch-size", "16", "--max-len", "8", "--device", "cpu",
         "--threads", "1", "--amp", "off", "--quiet"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, make_dataset):
    return make_dataset(tmp_path_factory.mktemp("flags"), n_users=12, length=8)


def test_train_model_is_hidden_deprecated_and_works(tiny_data, run_cli, tmp_path, monkeypatch):
    cmd = _cmd("train")
    old = next(p for p in cmd.params if "--model" in p.opts)
    assert old.hidden and "-m" in old.opts
    _wide_help(monkeypatch)
    assert "--model" not in run_cli(["train", "--help"])[1].replace("(Was --model", "")
    out = tmp_path / "m"
    code, _, err = run_cli(["train", "--data", tiny_data, "--out", out, "--model", "SASREC", *TRAIN])
    assert code == 0, err
    assert err.count(NOTE) == 1 and err.splitlines()[0] == NOTE
    import json

    assert json.loads((out / "config.json").read_text())["kind"] == "sasrec"
    saved = tomllib.loads((out / "config.toml").read_text())
    assert saved["arch"] == "sasrec" and "model" not in saved and "_deprecated_model" not in saved
    # -m too; both spellings at once is a usage error
    code, _, err = run_cli(["train", "--data", tiny_data, "--out", tmp_path / "m2", "-m", "gru4rec",
                            "--arch", "tema", *TRAIN])
    assert code == 2 and "give --arch only" in err and not (tmp_path / "m2").exists()
    # the new spelling: no note
    code, _, err = run_cli(["train", "--data", tiny_data, "--out", tmp_path / "m3", "--arch", "gru4rec", *TRAIN])
    assert code == 0 and "deprecated" not in err


def test_recipe_key_model_is_deprecated_and_works(tiny_data, run_cli, tmp_path):
    import json

    rec = tmp_path / "old.toml"
    rec.write_text('model = "gru4rec"\nepochs = 1\n')
    out = tmp_path / "m"
    code, _, err = run_cli(["train", "--config", rec, "--data", tiny_data, "--out", out, *TRAIN])
    assert code == 0, err
    note = [line for line in err.splitlines() if "deprecated" in line]
    assert note == [f"note: model is deprecated for train; use arch (recipe {rec})"]
    assert json.loads((out / "config.json").read_text())["kind"] == "gru4rec"
    assert tomllib.loads((out / "config.toml").read_text())["arch"] == "gru4rec"
    # the command line (old spelling too) still wins over the recipe
    code, _, err = run_cli(["train", "--config", rec, "--data", tiny_data, "--out", tmp_path / "m2",
                            "--model", "sasrec", *TRAIN])
    assert code == 0 and json.loads((tmp_path / "m2" / "config.json").read_text())["kind"] == "sasrec"
    # old and new key together: one option given twice
    both = tmp_path / "both.toml"
    both.write_text('model = "gru4rec"\narch = "tema"\n')
    code, _, err = run_cli(["train", "--config", both, "--data", tiny_data, "--out", tmp_path / "m3"])
    assert code == 2 and "are the same option" in err and not (tmp_path / "m3").exists()


def test_renamed_mechanism_is_generic(run_cli):
    """What tags (--model -> --llm) and features clip (--model -> --clip-model) adopt: any command, any type."""
    from temacli.cli._recipe import schema_of

    toy = typer.Typer()

    @toy.command(cls=_options.renamed_command(_options.Renamed("--model", "llm")))
    def tags(llm: str = typer.Option("openai/gpt-4o-mini", "--llm"), n: int = typer.Option(1, "--n")) -> None:
        typer.echo(f"llm={llm} n={n}")

    cmd = typer.main.get_command(toy)
    schema = schema_of(cmd)
    assert schema.find("model").name == "llm" and schema.find("llm").name == "llm"
    assert [p.key for p in schema.params] == ["llm", "n"]
    from typer.testing import CliRunner

    r = CliRunner().invoke(toy, ["--model", "ollama/x", "--n", "2"])
    assert r.exit_code == 0 and "llm=ollama/x n=2" in r.output
    assert "note: --model is deprecated for tags; use --llm" in r.output
    r = CliRunner().invoke(toy, ["--llm", "a", "--model", "b"])
    assert r.exit_code == 2


@pytest.mark.parametrize("words,expected", [("temacli train --arch ", ["tema", "sasrec", "gru4rec"]),
                                            ("temacli eval --protocol ", ["sampled", "full"]),
                                            ("temacli data split --format ", ["log", "llmcdsr", "c2dsr"]),
                                            ("temacli tags match --select ", ["top-r", "threshold", "hybrid"]),
                                            ("temacli features clip --modality ", ["both", "image", "text"])])
def test_completion_offers_the_choices(words, expected, run_cli, monkeypatch):
    monkeypatch.setenv("_TEMACLI_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", str(len(words.split())))
    code, out, _ = run_cli([])
    assert code == 0 and out.split() == expected


# ----------------------------------------------------------------------------- tags and features
class _Calls:
    """Stands in for a library stage: records its keyword arguments, returns what the command prints."""

    def __init__(self, result: dict):
        self.result, self.kwargs = result, []

    def __call__(self, *args, **kwargs):
        self.kwargs.append(kwargs | {"args": args})
        return self.result


@pytest.fixture
def stages(monkeypatch, tmp_path):
    import temacli.features.clip
    import temacli.tags.generate
    import temacli.tags.match

    s = {
        "generate": _Calls({"path": "g.parquet", "report_path": "g.report.json", "tags": [], "params": {"min_votes": 1},
                            "counts": dict.fromkeys(("tags_kept", "runs_parsed", "runs", "runs_unparsable",
                                                     "runs_failed", "llm_calls", "cache_hits"), 0)}),
        "match": _Calls({"path": "t.parquet", "report_path": "t.report.json",
                         "counts": dict.fromkeys(("tagged_items", "items", "rows", "tags", "failed_items",
                                                  "no_text_items", "untagged_items"), 0)}),
        "merge": _Calls({"path": "t.parquet", "counts": {"rows": 0}}),
        "clip": _Calls({"modalities": []}),
    }
    monkeypatch.setattr(temacli.tags.generate, "generate_tags", s["generate"])
    monkeypatch.setattr(temacli.tags.match, "match_tags", s["match"])
    monkeypatch.setattr(temacli.tags.match, "merge_shards", s["merge"])
    monkeypatch.setattr(temacli.features.clip, "compute_clip_features", s["clip"])
    return s


@pytest.mark.parametrize("argv,old,new,stage,check", [
    (["tags", "generate", "--domain", "food", "--model", "openai/x"], "--model", "--llm", "generate",
     lambda kw: kw["settings"].model == "openai/x"),
    (["tags", "generate", "-d", "food"], "-d", "--domain", "generate", lambda kw: kw["args"] == ("food",)),
    (["tags", "match", "--items", "ITEMS", "--tags", "TAGS", "--model", "openai/x"], "--model", "--llm", "match",
     lambda kw: kw["settings"].model == "openai/x"),
    (["features", "clip", "--items", "ITEMS", "--out", "FEAT", "--model", "ViT-S-32-alt"], "--model", "--clip-model",
     "clip", lambda kw: kw["model_name"] == "ViT-S-32-alt"),
])
def test_tags_and_features_old_spellings_work_with_a_note(argv, old, new, stage, check, stages, run_cli, tmp_path):
    argv = [str(tmp_path / a) if a in ("ITEMS", "TAGS", "FEAT") else a for a in argv]
    command = " ".join(argv[:2])
    code, _, err = run_cli([*argv, "--json", "--out" if stage != "clip" else "--force",
                            *([str(tmp_path / "o.parquet")] if stage != "clip" else [])])
    assert code == 0, err
    assert err.splitlines() == [f"note: {old} is deprecated for {command}; use {new}"]
    assert len(stages[stage].kwargs) == 1 and check(stages[stage].kwargs[0])
    # the old spelling is hidden from --help; both spellings at once is a usage error, nothing runs
    p = next(p for p in _cmd(command).params if old in p.opts)
    assert p.hidden
    value = argv[argv.index(old) + 1]
    code, _, err = run_cli([*argv, new, value])
    assert code == 2 and f"give {new} only ({old} is its old spelling)" in err
    assert len(stages[stage].kwargs) == 1


def test_tags_new_spellings_defaults_and_plain_values(stages, run_cli, tmp_path):
    code, _, err = run_cli(["tags", "generate", "--domain", "food", "-m", "openai/y", "--ground", "EMBEDDING",
                            "--response-format", "json", "--quiet", "--out", tmp_path / "g.parquet"])
    assert code == 0 and "deprecated" not in err, err
    kw = stages["generate"].kwargs[0]
    assert kw["settings"].model == "openai/y" and kw["seed"] == 42 and kw["device"] == "auto"
    assert type(kw["ground"]) is str and kw["ground"] == "embedding"  # the library gets plain strings
    assert type(kw["settings"].response_format) is str and kw["settings"].response_format == "json"
    assert kw["progress"].enabled is False
    code, _, err = run_cli(["tags", "match", "--items", tmp_path / "items.parquet", "--tags", tmp_path,
                            "--select", "top-r", "--represent", "onehot", "--method", "keyword", "-q",
                            "--out", tmp_path / "t.parquet"])
    assert code == 0, err
    kw = stages["match"].kwargs[0]
    assert type(kw["method"]) is str and kw["method"] == "keyword" and kw["device"] == "auto"
    assert (kw["selection"].select, kw["selection"].represent) == ("top-r", "onehot")
    assert type(kw["selection"].select) is str and kw["progress"].enabled is False
    code, _, err = run_cli(["features", "clip", "--items", tmp_path, "--out", tmp_path / "f", "--random-weights",
                            "--modality", "text", "--dtype", "float16", "--precision", "bfloat16", "--json"])
    assert code == 0, err
    kw = stages["clip"].kwargs[0]
    assert (kw["modality"], kw["dtype"], kw["precision"], kw["seed"]) == ("text", "float16", "bfloat16", 42)
    assert all(type(kw[k]) is str for k in ("modality", "dtype", "precision"))


def test_tags_match_and_merge_refuse_an_existing_output_without_force(stages, run_cli, tmp_path):
    existing = tmp_path / "item_tags.parquet"
    existing.write_text("keep")
    match = ["tags", "match", "--items", tmp_path / "data" / "items.parquet", "--tags", tmp_path, "--method",
             "keyword"]
    for argv in ([*match, "--out", existing], ["tags", "merge", tmp_path / "s0.parquet", "--out", existing]):
        code, _, err = run_cli(argv)
        assert code == 2 and err.strip() == f"error: {existing} exists; pass --force to replace it, or choose another --out", (argv, err)
    # the default output (DATASET/../tags/item_tags.parquet) too
    default = tmp_path / "tags" / "item_tags.parquet"
    default.parent.mkdir()
    default.write_text("keep")
    code, _, err = run_cli(match)
    assert code == 2 and f"{default} exists; pass --force" in err
    assert existing.read_text() == "keep" and default.read_text() == "keep"
    assert not stages["match"].kwargs and not stages["merge"].kwargs  # refused before the library ran
    # with --force the stage runs
    assert run_cli([*match, "--out", existing, "--force"])[0] == 0 and len(stages["match"].kwargs) == 1
    assert run_cli(["tags", "merge", tmp_path / "s0.parquet", "--out", existing, "--force"])[0] == 0
    assert len(stages["merge"].kwargs) == 1


def test_tags_generate_refuses_an_existing_output_without_force(stages, run_cli, tmp_path, monkeypatch):
    existing = tmp_path / "food.parquet"
    existing.write_text("keep")
    gen = ["tags", "generate", "--domain", "food"]
    code, _, err = run_cli([*gen, "--out", existing])
    assert code == 2 and err.strip() == f"error: {existing} exists; pass --force to replace it, or choose another --out", err
    # the default output (tags/<domain>.parquet, from the working folder) too
    monkeypatch.chdir(tmp_path)
    default = Path("tags") / "food.parquet"
    default.parent.mkdir()
    default.write_text("keep")
    code, _, err = run_cli(gen)
    assert code == 2 and err.strip() == f"error: {default} exists; pass --force to replace it, or choose another --out", err
    assert existing.read_text() == "keep" and default.read_text() == "keep"
    assert not stages["generate"].kwargs  # refused before the library ran
    # with --force the stage runs, into the file given (the default one: out=None, the library places it)
    assert run_cli([*gen, "--out", existing, "--force"])[0] == 0
    assert run_cli([*gen, "--force"])[0] == 0
    assert [kw["out"] for kw in stages["generate"].kwargs] == [existing, None]

"""Recipes: `train --config FILE.toml`, command-line overrides, MODEL/config.toml and its round trip,
one-line refusals; completion installable; flags shown as flags in help."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import tomllib
from enum import Enum
from pathlib import Path
from typing import List

import pytest
import typer

from temacli import recipe
from temacli.cli import app
from temacli.data.dataset import Dataset
from temacli.errors import TemacliError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "examples" / "recipes"


def train_command():
    import typer

    return typer.main.get_command(app).commands["train"]


def train_schema():
    from temacli.cli._recipe import schema_of

    return schema_of(train_command())


# ----------------------------------------------------------------------------- the library
def test_keys_with_dashes_or_underscores_and_types_are_checked(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('batch-size = 64\nlr = 1\nffn = true\nsoftmax = "sampled"\njson = true\n--max-len = 20\n'
                    .replace("--max-len", '"--max-len"'))
    values = recipe.load(path, train_schema())
    assert values == {"batch_size": 64, "lr": 1.0, "ffn": True, "softmax": "sampled", "as_json": True, "max_len": 20}
    assert isinstance(values["lr"], float)


@pytest.mark.parametrize(
    "text, words",
    [
        ("epoch = 3\n", ["unknown key 'epoch'", "did you mean 'epochs'"]),
        ('epochs = "3"\n', ["key 'epochs'", "integer", "string"]),
        ("epochs = 2.5\n", ["key 'epochs'", "integer"]),
        ("lr = true\n", ["key 'lr'", "number"]),
        ("deterministic = 1\n", ["key 'deterministic'", "true or false"]),
        ("seed = 1\nbatch_size = 2\nbatch-size = 3\n", ["'batch-size' and 'batch_size' are the same option"]),
        ("[train]\nepochs = 3\n", ["[train] is a table"]),
        ("epochs = \n", ["not valid TOML"]),
    ],
)
def test_bad_recipes_are_refused_with_the_key_and_the_file(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TemacliError) as e:
        recipe.load(path, train_schema())
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    for w in words:
        assert w in msg


def test_choices_are_checked_when_the_command_declares_them():
    schema = recipe.Schema("cmd", [recipe.Param("mode", "mode", choices=("fast", "slow"))])
    assert recipe.check({"mode": "FAST"}, schema) == {"mode": "fast"}
    with pytest.raises(TemacliError, match="must be one of fast, slow, not 'medium'"):
        recipe.check({"mode": "medium"}, schema, where="x.toml")


def test_writer_round_trips_through_tomllib(tmp_path):
    values = {
        "s": 'quote " backslash \\ tab \t newline \n del \x7f é',
        "i": -3, "f": 1e-05, "g": 3.0, "big": 1e16, "nan": math.nan, "inf": -math.inf, "t": True,
        "lst": [1, 2, 3], "strs": ["a", "b"], "path": Path("rel/dir"), "none": None, "odd key": 1,
    }
    out = recipe.dump(values, tmp_path / "x.toml", header="line one\nline two")
    text = out.read_text()
    assert text.startswith("# line one\n# line two\n")
    back = tomllib.loads(text)
    assert "none" not in back  # TOML has no null: unset options are absent
    assert back["path"] == str(Path("rel/dir").absolute())
    assert math.isnan(back.pop("nan"))
    for k in ("s", "i", "f", "g", "big", "inf", "t", "lst", "strs", "odd key"):
        assert back[k] == values[k], k
    assert not list(tmp_path.glob("*.tmp*"))  # atomic: no temporary left beside it


def test_shipped_recipes_are_valid_for_train():
    schema = train_schema()
    paper = recipe.load(RECIPES / "paper.toml", schema)
    cpu = recipe.load(RECIPES / "cpu.toml", schema)
    # the paper's settings (Section IV) and the CPU recipe of docs/results.md
    assert paper["dim"] == 256 and paper["batch_size"] == 256 and paper["epochs"] == 100
    assert paper["patience"] == 10 and paper["early_stop"] == "loss" and paper["softmax"] == "full"
    assert cpu["softmax"] == "sampled" and cpu["dim"] == 128 and cpu["max_len"] == 20
    assert cpu["negatives"] == 256 and cpu["threads"] == 1 and cpu["amp"] == "off"


# ----------------------------------------------------------------------------- through the CLI
@pytest.fixture(scope="module")
def ds(tmp_path_factory, make_dataset):
    return Dataset.open(make_dataset(tmp_path_factory.mktemp("recipe"), n_users=16, length=10))


TINY = 'epochs = 2\ndim = 16\nbatch_size = 8\ndropout = 0.0\nseed = 7\nsoftmax = "sampled"\nnegatives = 5\n'


def config_of(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


@pytest.mark.slow
def test_recipe_overrides_and_round_trip(ds, tmp_path, run_cli):
    rec = tmp_path / "tiny.toml"
    rec.write_text(f'data = "{ds.path}"\n' + TINY)
    first = tmp_path / "first"
    # the command line wins over the recipe (--epochs 1, --seed 3), the recipe over the defaults
    code, _, err = run_cli(["train", "--config", rec, "--out", first, "--epochs", "1", "--seed", "3", "--quiet"])
    assert code == 0, err
    cfg = config_of(first)
    assert cfg["train"]["epochs"] == 1 and cfg["train"]["seed"] == 3  # command line
    assert cfg["train"]["batch_size"] == 8 and cfg["train"]["softmax"] == "sampled"  # recipe
    assert cfg["train"]["negatives"] == 5 and cfg["model"]["q"] == 16 and cfg["model"]["dropout"] == 0.0
    assert cfg["train"]["lr"] == 1e-3 and cfg["train"]["patience"] == 10  # defaults

    saved = first / "config.toml"
    resolved = tomllib.loads(saved.read_text())
    assert resolved["epochs"] == 1 and resolved["seed"] == 3 and resolved["batch_size"] == 8
    assert resolved["data"] == str(ds.path.absolute())
    for name in ("out", "force", "resume", "quiet", "json", "config"):
        assert name not in resolved  # one invocation's options, not the recipe's
    assert "features" not in resolved and "dim" in resolved  # unset options are absent
    assert str(rec) in saved.read_text()  # the header says where the recipe came from

    # train --config MODEL/config.toml reproduces the run
    second = tmp_path / "second"
    code, _, err = run_cli(["train", "--config", saved, "--out", second, "--quiet"])
    assert code == 0, err
    a, b = config_of(first), config_of(second)
    assert a["train"] == b["train"] and a["model"] == b["model"] and a["kind"] == b["kind"]
    assert a["dataset_fingerprint"] == b["dataset_fingerprint"] and a["inputs"] == b["inputs"]
    assert tomllib.loads((second / "config.toml").read_text()) == resolved
    same = [json.loads(x)["train_loss"] for x in (first / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(x)["train_loss"] for x in (second / "metrics.jsonl").read_text().splitlines()]
    assert same == pytest.approx(again, rel=1e-5)

    # a refused run (model there, no --force) leaves the saved recipe alone
    before = saved.read_text()
    code, _, err = run_cli(["train", "--config", saved, "--out", first, "--epochs", "5"])
    assert code == 2 and "--force" in err
    assert saved.read_text() == before
    # --force replaces it, and the new recipe is saved
    code, _, err = run_cli(["train", "--config", saved, "--out", first, "--epochs", "2", "--force", "--quiet"])
    assert code == 0, err
    assert tomllib.loads(saved.read_text())["epochs"] == 2


def test_bad_recipe_exits_2_with_one_line(tmp_path, run_cli):
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_size = 8\nepochz = 3\n")
    code, out, err = run_cli(["train", "--config", bad, "--data", tmp_path, "--out", tmp_path / "m"])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "epochz" in lines[0] and str(bad) in lines[0]
    code, _, err = run_cli(["train", "--config", tmp_path / "missing.toml", "--data", tmp_path, "--out", tmp_path / "m"])
    assert code == 2 and "missing.toml" in err and "not found" in err
    assert not (tmp_path / "m").exists()


def test_a_run_that_fails_its_checks_writes_no_recipe(ds, tmp_path, run_cli):
    out = tmp_path / "m"
    code, _, err = run_cli(["train", "--data", ds.path, "--out", out, "--model", "sasrec", "--alpha", "0.1,0.1,0.1"])
    assert code == 2 and "TEMA options" in err
    assert not (out / "config.toml").exists()


def test_help_lists_config_and_shows_flags_as_flags(run_cli):
    code, out, _ = run_cli(["train", "--help"])
    assert code == 0 and "--config" in out
    assert "<bool>" not in out  # --force, --json, --ffn/--no-ffn take no value
    assert "<int>" in out  # options with values keep their type
    code, out, _ = run_cli(["--help"])
    assert "--install-completion" in out and "<bool>" not in out


def test_shell_completion_is_installable_and_completes(tmp_path):
    # typer finds the user's shell by walking the parent processes (shellingham), so run temacli from a bash
    # as a user's terminal does; under CI the test runner's parent is no shell at all
    env = {**os.environ, "HOME": str(tmp_path), "SHELL": "/bin/bash"}
    exe = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "temacli"])

    def in_bash(args, extra=None):
        # "; exit $?" keeps bash alive as the parent (a lone command would be exec'd in its place)
        return subprocess.run(["bash", "-c", f"{exe} {args}; exit $?"], capture_output=True, text=True,
                              env={**env, **(extra or {})}, timeout=60)

    r = in_bash("--show-completion")
    assert r.returncode == 0 and "complete" in r.stdout, r.stderr
    r = in_bash("--install-completion")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / ".bash_completions").is_dir() and any((tmp_path / ".bash_completions").iterdir())
    assert ".bash_completions" in (tmp_path / ".bashrc").read_text()
    comp = {"_TEMACLI_COMPLETE": "complete_bash", "COMP_WORDS": "temacli train --con", "COMP_CWORD": "2"}
    r = in_bash("", comp)
    assert "--config" in r.stdout.split()


# ----------------------------------------------------------------------------- any typer command
class Arch(str, Enum):
    tema = "tema"
    sasrec = "sasrec"


SEEN: dict = {}


def _fit(
    out: Path = typer.Option(..., "--out"),
    arch: Arch = typer.Option(Arch.tema, "--arch"),
    layer: List[int] = typer.Option([1], "--layer"),
    fast: bool = typer.Option(False, "--fast"),
    rate: float = typer.Option(0.1, "--rate"),
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "done.json").write_text("{}")
    SEEN.update(arch=arch, layer=layer, fast=fast, rate=rate)


def test_the_mechanism_works_for_any_typer_command(tmp_path):
    """Enums (choices), lists, paths and flags of another command: checked, overridden, saved."""
    import typer
    from typer.testing import CliRunner

    from temacli.cli import _recipe

    seen = SEEN
    seen.clear()
    demo = typer.Typer(add_completion=False)
    demo.command("fit")(_fit)
    demo.command("other")(lambda: None)
    assert _recipe.add_config_option(demo, "fit", marker="done.json") is True
    assert _recipe.add_config_option(demo, "absent") is False
    rec = tmp_path / "r.toml"
    rec.write_text('arch = "sasrec"\nlayer = [2, 3]\nfast = true\nrate = 1\n')
    runner = CliRunner()
    res = runner.invoke(demo, ["fit", "--config", str(rec), "--out", str(tmp_path / "m"), "--rate", "0.5"])
    assert res.exit_code == 0, res.output
    assert seen == {"arch": Arch.sasrec, "layer": [2, 3], "fast": True, "rate": 0.5}
    saved = tomllib.loads((tmp_path / "m" / "config.toml").read_text())
    assert saved == {"arch": "sasrec", "layer": [2, 3], "fast": True, "rate": 0.5}
    # the saved recipe reproduces the call
    seen.clear()
    res = runner.invoke(demo, ["fit", "--config", str(tmp_path / "m" / "config.toml"), "--out", str(tmp_path / "m2")])
    assert res.exit_code == 0, res.output
    assert seen == {"arch": Arch.sasrec, "layer": [2, 3], "fast": True, "rate": 0.5}
    # choices and list items are checked against the command's own declaration
    rec.write_text('arch = "bert4rec"\n')
    res = runner.invoke(demo, ["fit", "--config", str(rec), "--out", str(tmp_path / "m3")])
    assert isinstance(res.exception, TemacliError) and "must be one of tema, sasrec" in str(res.exception)
    rec.write_text('layer = [2, "x"]\n')
    res = runner.invoke(demo, ["fit", "--config", str(rec), "--out", str(tmp_path / "m3")])
    assert isinstance(res.exception, TemacliError) and "key 'layer'" in str(res.exception)
    assert not (tmp_path / "m3").exists()


def test_example_scripts_train_from_the_shipped_recipes():
    scripts = {name: (ROOT / "examples" / name).read_text() for name in
               ("pipeline_fk.sh", "pipeline_llmcdsr.sh", "train_eval_grid.sh")}
    for name, text in scripts.items():
        r = subprocess.run(["bash", "-n", str(ROOT / "examples" / name)], capture_output=True, text=True)
        assert r.returncode == 0, f"{name}: {r.stderr}"
        assert "--config" in text and "recipes/paper.toml" in text and "RECIPE" in text, name
        assert "--softmax sampled --dim 128" not in text, name  # the CPU recipe lives in cpu.toml now
    assert "recipes/cpu.toml" in scripts["pipeline_llmcdsr.sh"]

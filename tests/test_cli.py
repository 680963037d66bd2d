"""The command itself: help, version, exit codes, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from temacli import __version__
from temacli.cli import main


def run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"temacli {__version__}"


def test_usage_error_exits_2(capsys):
    code, _, err = run(["data", "split", "--no-such-flag"], capsys)
    assert code == 2 and "No such option" in err
    code, _, _ = run(["no-such-command"], capsys)
    assert code == 2


def test_every_command_help_shows_an_example(capsys):
    from temacli.cli import app
    import typer.main

    group = typer.main.get_command(app)

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, path + [name])
        else:
            yield path

    commands = list(walk(group, []))
    assert ["data", "split"] in commands and ["data", "stats"] in commands
    for path in commands:
        code, out, _ = run(path + ["--help"], capsys)
        assert code == 0 and "Example: temacli" in " ".join(out.split()), path


def test_help_does_not_import_heavy_packages():
    code = (
        "import sys\n"
        "from temacli.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    main(['data', '--help'])\nexcept SystemExit:\n    pass\n"
        "import json; print(json.dumps(sorted(m for m in ('torch', 'litellm', 'open_clip', 'transformers', 'sentence_transformers') if m in sys.modules)))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_internal_error_exits_1(capsys, monkeypatch):
    import temacli.data.split as split

    def boom(*a, **k):
        raise RuntimeError("kaput")

    monkeypatch.setattr(split, "split_dataset", boom)
    monkeypatch.delenv("TEMACLI_DEBUG", raising=False)
    code, _, err = run(["data", "split", "--interactions", "x.csv", "--domains", "a,b", "--out", "o"], capsys)
    assert code == 1 and "internal error: RuntimeError: kaput" in err

"""The command itself: help, version, exit codes, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from temacli import __version__


def test_version(run_cli):
    code, out, _ = run_cli(["--version"])
    assert code == 0 and out.strip() == f"temacli {__version__}"


def test_usage_error_exits_2(run_cli):
    code, _, err = run_cli(["data", "split", "--no-such-flag"])
    assert code == 2 and "No such option" in err
    code, _, _ = run_cli(["no-such-command"])
    assert code == 2


def test_every_command_help_shows_an_example(run_cli):
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
        code, out, _ = run_cli(path + ["--help"])
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


def test_internal_error_exits_1(run_cli, monkeypatch):
    import temacli.data.split as split

    def boom(*a, **k):
        raise RuntimeError("kaput")

    monkeypatch.setattr(split, "split_dataset", boom)
    monkeypatch.delenv("TEMACLI_DEBUG", raising=False)
    code, _, err = run_cli(["data", "split", "--interactions", "x.csv", "--domains", "a,b", "--out", "o"])
    assert code == 1 and "internal error: RuntimeError: kaput" in err


def _boom_split(monkeypatch, exc):
    import temacli.data.split as split

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(split, "split_dataset", boom)
    monkeypatch.delenv("TEMACLI_DEBUG", raising=False)


@pytest.mark.parametrize(
    "exc, first",
    [
        (MemoryError("Unable to allocate 7.28 TiB for an array with shape (1000000, 1000000)"),
         "error: not enough memory: Unable to allocate 7.28 TiB"),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 4000000000000 bytes."),
         "error: not enough memory: DefaultCPUAllocator: can't allocate memory: you tried to allocate 3.6 TiB;"),
        (PermissionError(13, "Permission denied", "/srv/shared/out.parquet"),
         "error: /srv/shared/out.parquet: permission denied; fix the permissions"),
        (OSError(28, "No space left on device", "/data/big.npy"), "error: /data/big.npy: no space left on the device; free some space"),
        (OSError(30, "Read-only file system", "/mnt/ro/x"), "error: /mnt/ro/x: read-only file system"),
        (IsADirectoryError(21, "Is a directory", "/tmp/out"), "error: /tmp/out: is a folder, expected a file"),
    ],
)
def test_memory_and_output_path_errors_are_one_line_exit_2(run_cli, monkeypatch, tmp_path, exc, first):
    _boom_split(monkeypatch, exc)
    code, _, err = run_cli(["data", "split", "--interactions", "x.csv", "--domains", "a,b", "--out", str(tmp_path / "o")])
    assert code == 2 and err.startswith(first) and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "exc",
    [OSError(5, "Input/output error", "/dev/sdz"), OSError("no file name"), RuntimeError("CUDA error: an illegal memory access")],
)
def test_other_os_and_runtime_errors_stay_internal(run_cli, monkeypatch, tmp_path, exc):
    _boom_split(monkeypatch, exc)
    code, _, err = run_cli(["data", "split", "--interactions", "x.csv", "--domains", "a,b", "--out", str(tmp_path / "o")])
    assert code == 1 and err.startswith("internal error:")


def test_a_real_allocation_failure_is_exit_2(run_cli, monkeypatch, tmp_path):
    import numpy as np

    def alloc(*a, **k):
        return np.zeros((1 << 45,), dtype=np.float64)  # 256 TiB, beyond the address space: MemoryError

    _boom_split(monkeypatch, None)
    import temacli.data.split as split

    monkeypatch.setattr(split, "split_dataset", alloc)
    code, _, err = run_cli(["data", "split", "--interactions", "x.csv", "--domains", "a,b", "--out", str(tmp_path / "o")])
    assert code == 2 and err.startswith("error: not enough memory: Unable to allocate"), err


@pytest.mark.parametrize(
    "argv_tail, kind",
    [
        (["data", "split", "--interactions", "x.csv", "--domains", "a,b"], "dir"),
        (["eval", "m"], "file"),
    ],
)
def test_every_command_checks_its_out_before_running(run_cli, monkeypatch, tmp_path, argv_tail, kind):
    """The CLI wraps every command with an --out: a file where a folder goes (and the reverse) is refused first."""
    import temacli.data.split as split

    called = []
    monkeypatch.setattr(split, "split_dataset", lambda *a, **k: called.append(1))
    f = tmp_path / "afile"
    f.write_text("x")
    d = tmp_path / "adir"
    d.mkdir()
    wrong = f if kind == "dir" else d
    code, _, err = run_cli([*argv_tail, "--out", str(wrong)])
    expected = "is an existing file, expected a folder" if kind == "dir" else "is an existing folder, expected a file"
    assert code == 2 and err.startswith(f"error: --out {wrong}: {expected}"), err
    assert not called and sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]


def test_output_guard_covers_every_command_with_an_out():
    from temacli.cli import _command

    def walk(cmd, path=()):
        for name, sub in getattr(cmd, "commands", {}).items():
            if hasattr(sub, "commands"):
                yield from walk(sub, path + (name,))
            else:
                yield path + (name,), sub

    with_out = [(p, c) for p, c in walk(_command()) if any("--out" in x.opts for x in c.params)]
    assert len(with_out) >= 9
    assert all(getattr(c.callback, "_temacli_guarded", False) for _, c in with_out)


def test_a_real_torch_allocation_failure_is_exit_2(run_cli, monkeypatch, tmp_path):
    import temacli.data.split as split

    def alloc(*a, **k):
        import torch

        return torch.nn.Embedding(1 << 40, 1 << 10)  # 4 PiB of parameters

    monkeypatch.setattr(split, "split_dataset", alloc)
    monkeypatch.delenv("TEMACLI_DEBUG", raising=False)
    code, _, err = run_cli(["data", "split", "--interactions", "x.csv", "--domains", "a,b", "--out", str(tmp_path / "o")])
    assert code == 2 and err.startswith("error: not enough memory: DefaultCPUAllocator: can't allocate memory: you tried to allocate 4.0 PiB"), err

"""Shared test set-up and the helpers every test file may ask for.

Set-up: one torch thread (the suite runs on 2 shared cores, where more threads only wait) and offline
Hugging Face libraries.

Fixtures:

* ``run_cli(args) -> (exit_code, stdout, stderr)``: ``temacli`` run in process (``temacli.cli.main``);
  the arguments may be paths or numbers.
* ``llm_env``: a dummy ``OPENAI_API_KEY`` (``llm_env.key``) and a per-test ``TEMACLI_CACHE_DIR``
  (``llm_env.cache_dir``). Not autouse: a file that needs it everywhere writes
  ``pytestmark = pytest.mark.usefixtures("llm_env")``.
* ``make_dataset(root, name="data", **options) -> Path``: a tiny food/kitchen dataset folder
  ``root/name``, built by the project's own writer (``temacli.data.split.split_dataset``) from a
  generated interactions and items CSV, so its manifest is always the real one. Session-scoped, so
  module- and session-scoped fixtures can use it too. Options: see :func:`build_dataset`.
* ``tiny_model``: one TEMA model folder trained once per session through ``temacli train``
  (2 epochs, q=16, ID stream only) on ``make_dataset(pattern=True)``, for tests that need *a*
  trained model; ``tiny_model.data`` and ``tiny_model.model`` are the two folders. Read, never write.

The ``slow`` marker (tests over ~5 s) is declared in pyproject.toml; ``pytest -m "not slow"`` is the
fast lane for development.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
AFK = SHARED / "amazon-food-kitchen"
TEST_API_KEY = "sk-test-SECRET-0123456789"


def pytest_configure(config):
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- the CLI in process
def _main(args) -> int:
    """``temacli.cli.main`` on ``args`` (stringified); the exit code it ends with (it always exits)."""
    from temacli.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code


@pytest.fixture
def run_cli(capsys):
    """``run_cli(args) -> (exit_code, stdout, stderr)`` of one in-process ``temacli`` run."""

    def run(args):
        code = _main(args)
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return run


# ----------------------------------------------------------------------------- LLM environment
@dataclass(frozen=True)
class LLMEnv:
    key: str
    cache_dir: Path


@pytest.fixture
def llm_env(monkeypatch, tmp_path) -> LLMEnv:
    """A dummy OpenAI key (tests check it never leaks) and a cache folder of this test's own."""
    env = LLMEnv(key=TEST_API_KEY, cache_dir=tmp_path / "cache")
    monkeypatch.setenv("OPENAI_API_KEY", env.key)
    monkeypatch.setenv("TEMACLI_CACHE_DIR", str(env.cache_dir))
    return env


# ----------------------------------------------------------------------------- datasets
def _write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _synthetic_log(n_users, n_food, n_kitchen, length, pattern, food_only_every, seed) -> list[tuple]:
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = length if isinstance(length, int) else int(rng.integers(*length))
        for j in range(n):
            if pattern:  # f_i, k_i, f_{i+1}, k_{i+1}, ... from i = u mod n_food
                i = u % n_food + j // 2
                dom, k = ("food", i % n_food) if j % 2 == 0 else ("kitchen", i % n_kitchen)
            else:
                if food_only_every and u % food_only_every == 0:  # one domain until the target
                    dom = "kitchen" if j == n - 1 else "food"
                else:  # 3 food, 3 kitchen, then either
                    dom = "food" if (j < 3 or (j >= 6 and rng.random() < 0.5)) else "kitchen"
                k = int(rng.integers(0, n_food if dom == "food" else n_kitchen))
            rows.append((f"U{u:03d}", f"{dom[0]}{k:03d}", dom, 1000 + j))
    return rows


def _real_log(path: Path, n_users: int) -> Path:
    """The first ``n_users`` users (file order) of the shared amazon-food-kitchen log."""
    if not AFK.is_dir():
        pytest.skip("shared data not present")
    users: set[str] = set()
    with open(AFK / "interactions.csv", newline="") as src, open(path, "w", newline="") as dst:
        r, w = csv.reader(src), csv.writer(dst)
        w.writerow(next(r))
        for row in r:
            if row[0] not in users:
                if len(users) == n_users:
                    break
                users.add(row[0])
            w.writerow(row)
    return path


def build_dataset(
    root: Path,
    name: str = "data",
    *,
    n_users: int = 24,
    n_food: int = 10,
    n_kitchen: int = 12,
    length: int | tuple[int, int] = 14,
    pattern: bool = False,
    food_only_every: int = 0,
    real: bool = False,
    with_items: bool = True,
    split: str = "loo",
    eval_users_frac: float = 1.0,
    min_user: int = 5,
    min_per_domain: int = 1,
    seed: int = 0,
) -> Path:
    """Write ``root/name-log.csv`` (and ``root/name-items.csv``), split them into ``root/name``.

    The log has ``n_users`` users ``U000..`` over food items ``f000..`` and kitchen items ``k000..``
    at times 1000, 1001, ...; each user has ``length`` interactions, or a number drawn from
    ``range(*length)`` when it is a pair. By default a user has 3 food, then 3 kitchen, then random
    items of either domain. ``pattern``: every user walks the cycle food_i -> kitchen_i ->
    food_{i+1} -> ..., so the next item is a function of the last one (a model can learn it exactly).
    ``food_only_every=k``: every k-th user (0, k, ...) has food items only, up to a kitchen target.
    ``real``: the first ``n_users`` users of the shared amazon-food-kitchen log and its items file
    instead (skips the test when the shared data is absent). ``with_items=False``: no items file
    (empty titles). The remaining options are ``SplitOptions``' (domains food, kitchen).
    """
    from temacli.data.split import SplitOptions, split_dataset

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log = root / f"{name}-log.csv"
    if real:
        _real_log(log, n_users)
        items = AFK / "items.csv"
    else:
        rows = _synthetic_log(n_users, n_food, n_kitchen, length, pattern, food_only_every, seed)
        _write_csv(log, ("user_id", "item_id", "domain", "timestamp"), rows)
        items = _write_csv(
            root / f"{name}-items.csv", ("item_id", "domain", "title"),
            [(f"f{k:03d}", "food", f"Food {k}") for k in range(n_food)]
            + [(f"k{k:03d}", "kitchen", f"Kitchen {k}") for k in range(n_kitchen)],
        )
    opts = SplitOptions(domains=("food", "kitchen"), split=split, min_user=min_user, min_per_domain=min_per_domain,
                        seed=seed, eval_users_frac=eval_users_frac)
    split_dataset(log, items if with_items else None, root / name, opts)
    return root / name


@pytest.fixture(scope="session")
def make_dataset():
    """``make_dataset(root, name="data", **options) -> Path`` (see :func:`build_dataset`)."""
    return build_dataset


# ----------------------------------------------------------------------------- a trained model
@dataclass(frozen=True)
class TinyModel:
    data: Path  # the dataset folder it was trained on
    model: Path  # the model folder `temacli train` wrote


TINY_TRAIN_ARGS = ("--epochs", "2", "--dim", "16", "--batch-size", "32", "--max-len", "10", "--device", "cpu",
                   "--threads", "1", "--amp", "off", "--seed", "0", "--quiet")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> TinyModel:
    """A TEMA model trained once per session by ``temacli train`` (a few seconds on one CPU thread)."""
    root = tmp_path_factory.mktemp("tiny_model")
    data = build_dataset(root, pattern=True)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _main(["train", "--data", data, "--out", root / "tema", *TINY_TRAIN_ARGS])
    if code != 0:
        raise RuntimeError(f"temacli train for the tiny_model fixture exited {code}:\n{err.getvalue()}")
    return TinyModel(data=data, model=root / "tema")

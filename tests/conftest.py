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
  generated interactions log and items file, so its manifest is always the real one. Random or
  patterned logs over ``f000.., k000..`` items, a slice of the shared real log, or given item rows
  (titles, descriptions, images). Session-scoped, so module- and session-scoped fixtures can use it
  too. Options: see :func:`write_dataset`; ``preset="eval"`` gives the evaluation tests' shape.
* ``tiny_model``: one TEMA model folder trained once per session through ``temacli train``
  (2 epochs, q=16, ID stream only) on ``make_dataset(pattern=True)``, for tests that need *a*
  trained model; ``tiny_model.data`` and ``tiny_model.model`` are the two folders.
* ``trained_runs``: a patterned dataset with features and tags, and a TEMA (all four streams) and a
  SASRec model trained on it once per session by the library (``temacli.training.loop.train``):
  ``{"data": Dataset, "tema": Path, "sasrec": Path, "tags": Path, "tmp": Path}``.

The session folders are shared by every test that asks for them: never edit them in place (copy to
``tmp_path`` first). ``temacli eval`` saves its result inside the model folder (``MODEL/eval/``), so a
test that needs a model never evaluated, or edits one, works on a copy.

The ``slow`` marker (tests over ~5 s) is declared in pyproject.toml; ``pytest -m "not slow"`` is the
fast lane for development.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Callable
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


def _synthetic_log(domains, n_users, n_food, n_kitchen, length, pattern, food_only_every, seed, user) -> list[tuple]:
    import numpy as np

    x, y = domains
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = length if isinstance(length, int) else int(rng.integers(*length))
        for j in range(n):
            if pattern:  # f_i, k_i, f_{i+1}, k_{i+1}, ... from i = u mod n_food
                i = u % n_food + j // 2
                dom, k = (x, i % n_food) if j % 2 == 0 else (y, i % n_kitchen)
            else:
                if food_only_every and u % food_only_every == 0:  # one domain until the target
                    dom = y if j == n - 1 else x
                else:  # 3 food, 3 kitchen, then either
                    dom = x if (j < 3 or (j >= 6 and rng.random() < 0.5)) else y
                k = int(rng.integers(0, n_food if dom == x else n_kitchen))
            rows.append((user(u), f"{dom[0]}{k:03d}", dom, 1000 + j))
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


def _given_items_log(rows, ids, n_users, length, user) -> list[tuple]:
    """User u visits the given items u, u+1, ... (cyclically), ``length`` of them in all; the last two
    (the valid and test targets) come from a domain with two items or more, which negatives need."""
    n = len(rows)
    per_domain = {d: sum(r[0] == d for r in rows) for d in {r[0] for r in rows}}
    targets = [i for i, r in enumerate(rows) if per_domain[r[0]] >= 2]
    if not targets or length < 3:
        raise ValueError("make_dataset: items= needs a domain with 2 items or more, and length >= 3")
    seqs = [[(u + j) % n for j in range(length - 2)] + [targets[(u + j) % len(targets)] for j in (0, 1)]
            for u in range(n_users)]
    if len({i for s in seqs for i in s}) < n:
        raise ValueError(f"make_dataset: {n_users} users x {length} interactions do not reach all {n} items")
    return [(user(u), ids[i], rows[i][0], 1000 + j) for u, s in enumerate(seqs) for j, i in enumerate(s)]


def _given_items_file(path: Path, rows, ids) -> Path:
    """The rows as an items Parquet file (None stays null, any text stays as it is)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"item_id": pa.array(ids, pa.string()), "domain": [r[0] for r in rows], "title": [r[1] for r in rows]}
    for k, col in ((2, "description"), (3, "image")):
        values = [None if len(r) <= k or r[k] is None else str(r[k]) for r in rows]
        if any(v is not None for v in values):  # a column only when some item has one
            cols[col] = pa.array(values, pa.string())
    pq.write_table(pa.table(cols), path)
    return path


# shapes some test files share: `make_dataset(root, preset="eval")` (options given as well win)
PRESETS = {
    # the evaluation tests' log: 30 users of 10..15 items, every fifth one with food only before its target
    "eval": dict(n_users=30, n_food=25, n_kitchen=30, length=(10, 16), food_only_every=5),
}


def build_dataset(
    root: Path,
    name: str = "data",
    *,
    preset: str | None = None,
    **options,
) -> Path:
    """:func:`write_dataset` with the options of ``PRESETS[preset]`` under the ``options`` given."""
    return write_dataset(root, name, **{**(PRESETS[preset] if preset else {}), **options})


def write_dataset(
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
    items: list[tuple] | None = None,
    item_ids: list[str] | None = None,
    with_items: bool = True,
    user_id: Callable[[int], str] | None = None,
    domains: tuple[str, str] = ("food", "kitchen"),
    split: str = "loo",
    eval_users_frac: float = 1.0,
    min_user: int = 5,
    min_per_domain: int = 1,
    seed: int = 0,
) -> Path:
    """Write ``root/<name>-log.csv`` and ``root/<name>-items.*``, split them into ``root/<name>``.

    Generated log (the default): ``n_users`` users ``U000..`` over items ``f000..`` (``n_food`` of
    domain X) and ``k000..`` (``n_kitchen`` of domain Y) titled "Food k"/"Kitchen k", at times 1000,
    1001, ...; each user has ``length`` interactions, or a number drawn from ``range(*length)`` when
    it is a pair. By default a user has 3 X items, then 3 Y items, then random items of either domain.

    * ``pattern``: every user walks the cycle X_i -> Y_i -> X_{i+1} -> ... from i = u mod n_food, so
      the next item is a function of the last one (a model can learn it exactly).
    * ``food_only_every=k``: every k-th user (0, k, ...) has X items only, up to a Y target.
    * ``real``: the first ``n_users`` users of the shared amazon-food-kitchen log and its items file
      (skips the test when the shared data is absent; pass ``min_user=10, min_per_domain=3`` for the
      command's defaults).
    * ``items``: the item rows ``(domain, title[, description[, image]])``, X rows first, with ids
      ``item_ids`` (default ``I0000, I0001, ...``, which keep row k as item index k); user u then visits
      items u, u+1, ... cyclically, then two targets from a domain with 2 items or more (``length``
      interactions in all), and the items file is Parquet (None stays null; a description or image
      column only when some row has one). A domain may have no items (``min_per_domain=0``) or one
      (it then has no targets); data split needs 2 items in some domain to draw negatives.
    * ``with_items=False``: no items file (empty titles).
    * ``user_id``: the raw id of user u (default ``U000``, ``U001``, ...).

    The remaining options are ``SplitOptions``'. Returns the dataset folder.
    """
    from temacli.data.split import SplitOptions, split_dataset

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log = root / f"{name}-log.csv"
    header = ("user_id", "item_id", "domain", "timestamp")
    user = user_id or (lambda u: f"U{u:03d}")
    if real:
        _real_log(log, n_users)
        items_file = AFK / "items.csv"
    elif items is not None:
        ids = list(item_ids) if item_ids is not None else [f"I{i:04d}" for i in range(len(items))]
        if isinstance(length, tuple):
            raise ValueError("make_dataset: with items=, length is one number")
        _write_csv(log, header, _given_items_log(items, ids, n_users, length, user))
        items_file = _given_items_file(root / f"{name}-items.parquet", items, ids)
    else:
        rows = _synthetic_log(domains, n_users, n_food, n_kitchen, length, pattern, food_only_every, seed, user)
        _write_csv(log, header, rows)
        items_file = _write_csv(
            root / f"{name}-items.csv", ("item_id", "domain", "title"),
            [(f"{domains[0][0]}{k:03d}", domains[0], f"{domains[0].capitalize()} {k}") for k in range(n_food)]
            + [(f"{domains[1][0]}{k:03d}", domains[1], f"{domains[1].capitalize()} {k}") for k in range(n_kitchen)],
        )
    opts = SplitOptions(domains=tuple(domains), split=split, min_user=min_user, min_per_domain=min_per_domain,
                        seed=seed, eval_users_frac=eval_users_frac)
    split_dataset(log, items_file if with_items else None, root / name, opts)
    return root / name


@pytest.fixture(scope="session")
def make_dataset():
    """``make_dataset(root, name="data", preset=None, **options) -> Path`` (see :func:`write_dataset`)."""
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


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> dict:
    """A patterned dataset with features and tags, and a TEMA (all streams) and a SASRec model trained
    on it by the library, once per session: ``{"data": Dataset, "tema", "sasrec", "tags", "tmp": Path}``."""
    from _train_fixtures import make_features, make_tags  # noqa: E402  (tests/ is on sys.path)
    from temacli.data.dataset import Dataset
    from temacli.training.loop import ModelInputs, TrainOptions, train

    tmp = tmp_path_factory.mktemp("trained")
    ds = Dataset.open(build_dataset(tmp, pattern=True))
    feats = make_features(ds, tmp / "features")
    tags = make_tags(ds, tmp / "tags")
    opts = dict(epochs=2, batch_size=32, max_len=10, device="cpu", threads=1)
    train(ds.path, tmp / "tema", TrainOptions(model="tema", **opts),
          ModelInputs(features=str(feats), tags=str(tags), params={"q": 16}))
    train(ds.path, tmp / "sasrec", TrainOptions(model="sasrec", **opts), ModelInputs(params={"dim": 16}))
    return {"data": ds, "tema": tmp / "tema", "sasrec": tmp / "sasrec", "tags": tags, "tmp": tmp}


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write in: chmod 555 as a user; a read-only mount as root."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        return d
    for cand in ("/proc/sys", "/sys"):
        if os.path.isdir(cand) and not os.access(cand, os.W_OK):
            return Path(cand)
    pytest.skip("running as root without a read-only folder")


def poison_weights_at(monkeypatch, call: int) -> None:
    """Make ``temacli.training.step.train_step`` fill every weight with NaN just before its ``call``-th
    step (1-based), so that step's loss is not finite."""
    import torch

    from temacli.training import step

    real, calls = step.train_step, {"n": 0}

    def poisoned(model, batch, optimizer, **kw):
        calls["n"] += 1
        if calls["n"] == call:
            with torch.no_grad():
                for p in optimizer.param_groups[0]["params"]:
                    p.fill_(float("nan"))
        return real(model, batch, optimizer, **kw)

    monkeypatch.setattr(step, "train_step", poisoned)

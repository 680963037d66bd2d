"""``temacli recommend`` as a library: top-k items for users as they appear in the raw data.

For a user id the :class:`Recommender` finds the user's latest row in the dataset (test, then
valid, then train) and takes its history, as the model sees it when it is evaluated on that row.
For a test or valid row the row's target is the *held-out next item*: it is shown with its rank, a
spot check of the model, and its domain is the default domain to recommend from. With
``all_history`` the held-out item is appended to the history instead (serving: every known
interaction). A train-only user's history is their whole training sequence, and the default domain
is the domain of their last item.

The user's sequence is encoded once; the domain's items are scored in chunks (``score_items``),
the running top-k kept, and the items the user already has (their history) left out unless
``include_seen``. With ``explain`` the model's additive parts (``"<branch>/<modality>"``, e.g.
``"X/id"``, ``"X+Y/tag"``) are attached to each item, summed per modality and per branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from temacli import artifacts
from temacli.artifacts import Column, Contract
from temacli.errors import TemacliError
from temacli.model.folder import ModelFolder, model_kind, open_with_data

STAGE = "recommend"
RECS = Contract(
    "recommendations",
    (
        Column("user_id", "string", doc="the user's id in the raw data"),
        Column("user", "int", pa.int32(), doc="user index in the dataset"),
        Column("domain", "string", doc="domain the items were recommended from"),
        Column("rank", "int", pa.int32(), doc="1 = best"),
        Column("item", "int", pa.int32(), doc="dataset item index"),
        Column("item_id", "string", doc="the item's id in the raw data"),
        Column("title", "string", doc="item title; empty when unknown"),
        Column("score", "float", pa.float32(), doc="the model's score (Eq. 16 for TEMA)"),
    ),
    fix="write it with `temacli recommend --users-file ... --out recs.parquet`",
    optional=(Column("tags", "string", doc="the item's top tags, '; '-separated"),),
)
HISTORY_SHOWN = 10


@dataclass
class UserContext:
    user_id: str
    user: int
    source: str  # split of the row the history comes from
    history: np.ndarray  # item indices, oldest first
    held_out: int | None  # the row's target when it is held out
    default_domain: int


class Recommender:
    """A trained model with its dataset (and item tags), ready to recommend."""

    def __init__(self, trained, dataset, model_dir: str | Path | None = None, item_tags=None, n_tags: int = 3,
                 folder: ModelFolder | None = None):
        self.trained = trained
        self.dataset = dataset
        self.folder = folder
        self.model_dir = Path(model_dir) if model_dir is not None else (folder.path if folder is not None else None)
        self.item_tags = item_tags
        self.n_tags = n_tags
        self.notes: list[str] = []
        items = dataset.items
        self.item_ids = np.asarray(items.column("item_id").to_pylist(), dtype=object)
        self.titles = np.asarray(items.column("title").to_pylist(), dtype=object)
        self._splits: dict[str, Any] = {}
        self._index: dict[str, tuple[str, int]] | None = None

    @classmethod
    def open(cls, model_dir: str | Path, data_dir: str | Path | None = None, device: str = "auto",
             tags: str | Path | None = None, loader=None) -> "Recommender":
        opened = open_with_data(model_dir, data_dir, device, loader)
        rec = cls(opened.model, opened.dataset, model_dir, folder=opened.folder)
        dataset = opened.dataset
        path = Path(tags) if tags is not None else opened.folder.tags_path()
        if path is not None:
            if path.is_dir():
                path = path / "item_tags.parquet"
            if path.is_file():
                from temacli.tags.store import load_item_tags

                rec.item_tags = load_item_tags(path, dataset)
            elif tags is not None:
                raise TemacliError(f"{path}: item tags not found; pass the item_tags.parquet of `temacli tags match`")
            else:
                rec.notes.append(f"item tags recorded by the model ({path}) are missing: tags not shown")
        return rec

    # users ----------------------------------------------------------------------------
    def _split(self, name: str):
        if name not in self._splits:
            self._splits[name] = self.dataset.split(name)
        return self._splits[name]

    def _user_rows(self) -> dict[str, tuple[str, int]]:
        """user id -> (split, row) of the user's latest row: test, else valid, else last train row."""
        if self._index is None:
            idx: dict[str, tuple[str, int]] = {}
            for name in ("train", "valid", "test"):  # later splits overwrite earlier ones
                for row, uid in enumerate(self._split(name).user_id):
                    idx[str(uid)] = (name, row)
            self._index = idx
        return self._index

    def _users_by_index(self) -> dict[int, str]:
        """user index -> raw user id, over every split."""
        out: dict[int, str] = {}
        for name in ("train", "valid", "test"):
            sp = self._split(name)
            for idx, uid in zip(sp.user, sp.user_id):
                out.setdefault(int(idx), str(uid))
        return out

    def lookup(self, value: str) -> tuple[str, str]:
        """A user as people type it: (raw user id, one line saying how ``value`` was read).

        The value is a raw user id when one matches; otherwise, when it is an integer, the dataset's
        user index (``user`` in the splits); anything else is one line naming an example id."""
        s = str(value).strip()
        if s in self._user_rows():
            return s, f"user {s}: the raw user id {s!r}"
        if s.isdigit():
            uid = self._users_by_index().get(int(s))
            if uid is not None:
                return uid, f"user {s}: no raw user id {s!r}; read as the user index {int(s)} (raw id {uid!r})"
        example = next(iter(self._user_rows()), "?")
        n = len(self._users_by_index())
        raise TemacliError(
            f"user '{value}' is not in {self.dataset.path} (no row in train, valid or test); "
            f"give a raw user id, e.g. '{example}', or a user index 0..{n - 1}"
        )

    def context(self, user_id: str, all_history: bool = False) -> UserContext:
        where = self._user_rows().get(str(user_id))
        if where is None:
            example = next(iter(self._user_rows()), "?")
            raise TemacliError(
                f"user '{user_id}' is not in {self.dataset.path} (no row in train, valid or test); "
                f"user ids are the raw ids, e.g. '{example}'"
            )
        name, row = where
        sp = self._split(name)
        hist = np.asarray(sp.history(row), dtype=np.int64)
        target = int(sp.target[row])
        n_x = self.dataset.n_x
        if name == "train" or all_history:
            hist = np.append(hist, target)
            held = None
            default = int(sp.target_domain[row]) if name != "train" else int(target >= n_x)
        else:
            held = target
            default = int(sp.target_domain[row])
        if hist.size == 0:
            raise TemacliError(
                f"user '{user_id}' has an empty history before their held-out item ({name} split); "
                "pass --all-history to recommend from every known interaction"
            )
        return UserContext(str(user_id), int(sp.user[row]), name, hist, held, default)

    def resolve_domain(self, domain: str | int | None) -> int | None:
        if domain is None:
            return None
        names = self.dataset.domains
        s = str(domain).strip()
        if s in names:
            return names.index(s)
        if s.upper() in ("X", "Y"):
            return 0 if s.upper() == "X" else 1
        if s in ("0", "1"):
            return int(s)
        raise TemacliError(f"unknown domain '{domain}'; choose {names[0]} or {names[1]} (or X / Y)")

    # scoring --------------------------------------------------------------------------
    def _item(self, i: int) -> dict:
        d = int(i >= self.dataset.n_x)
        return {"item": int(i), "item_id": str(self.item_ids[i]), "title": str(self.titles[i] or ""),
                "domain": self.dataset.domains[d]}

    def _top_tags(self, items: np.ndarray) -> dict[int, list[str]]:
        if self.item_tags is None:
            return {}
        it = self.item_tags
        sel = np.nonzero(np.isin(it.item, items))[0]
        out: dict[int, list[str]] = {}
        order = sel[np.lexsort((-it.weight[sel], it.item[sel]))]
        for j in order:
            lst = out.setdefault(int(it.item[j]), [])
            if len(lst) < self.n_tags:
                lst.append(it.vocab[int(it.tag[j])])
        return out

    def recommend(
        self,
        user_ids: Iterable[str],
        k: int = 10,
        domain: str | int | None = None,
        include_seen: bool = False,
        explain: bool = False,
        all_history: bool = False,
        batch_size: int = 256,
        chunk_size: int = 65536,
    ) -> list[dict]:
        """Recommendations for each user id, in the order given (see the module docstring)."""
        if k < 1:
            raise TemacliError("--k must be at least 1")
        if explain and not hasattr(self.trained, "explain"):
            kind = self.kind
            raise TemacliError(f"this model ({kind}) cannot explain its scores; drop --explain")
        dom_choice = self.resolve_domain(domain)
        ctxs = [self.context(u, all_history) for u in user_ids]
        doms = np.array([c.default_domain if dom_choice is None else dom_choice for c in ctxs], dtype=np.int64)
        results: list[dict | None] = [None] * len(ctxs)
        for d in (0, 1):
            idx = np.nonzero(doms == d)[0]
            for s in range(0, len(idx), batch_size):
                part = idx[s : s + batch_size]
                for j, res in zip(part, self._score_batch([ctxs[j] for j in part], d, k, include_seen, explain,
                                                           chunk_size)):
                    results[j] = res
        return [r for r in results if r is not None]

    def _score_batch(self, ctxs: list[UserContext], d: int, k: int, include_seen: bool, explain: bool,
                     chunk_size: int) -> list[dict]:
        from temacli.evaluation.ranking import NO_TARGET, item_pairs, left_pad, rank_domain

        tr = self.trained
        lo, hi = self.dataset.domain_range(d)
        b = len(ctxs)
        histories = [c.history for c in ctxs]
        state = tr.encode(left_pad(histories, tr.max_len, tr.pad), np.full(b, d, dtype=np.int64))
        rr, ii = item_pairs(histories, lo, hi)  # the items each user has in this domain
        has_held = np.array([c.held_out is not None and lo <= c.held_out < hi for c in ctxs], dtype=bool)
        held = np.array([c.held_out if h else NO_TARGET for c, h in zip(ctxs, has_held)], dtype=np.int64)
        # the one ranking core of eval: the held-out item's rank among the same candidates, the top k
        ranking = rank_domain(tr, state, lo, hi, targets=held, exclude=None if include_seen else (rr, ii),
                              top_k=k, chunk_size=chunk_size)
        best_i, best_s = ranking.top_items, ranking.top_scores  # (b, k) best first; -inf: fewer items than k
        held_rank, held_of, held_score = ranking.ranks, ranking.n_candidates, ranking.target_score
        parts = None
        if explain:
            parts = {key: np.asarray(v, dtype=np.float32) for key, v in tr.explain(state, best_i).items()}
        tags = self._top_tags(np.unique(best_i))
        n_seen = np.bincount(rr, minlength=b) if rr.size else np.zeros(b, np.int64)
        out = []
        for j, c in enumerate(ctxs):
            recs = []
            for r in range(best_i.shape[1]):
                if not np.isfinite(best_s[j, r]) and best_s[j, r] < 0:
                    break  # fewer unseen items than k
                item = int(best_i[j, r])
                rec = {"rank": r + 1, **self._item(item), "score": float(best_s[j, r]), "tags": tags.get(item, [])}
                if parts is not None:
                    p = {key: float(v[j, r]) for key, v in parts.items()}
                    rec["parts"] = p
                    rec["by_modality"], rec["by_branch"] = _aggregate(p)
                recs.append(rec)
            held_info = None
            if c.held_out is not None:
                held_info = self._item(c.held_out)
                if has_held[j]:
                    held_info["score"] = float(held_score[j])
                    held_info["rank"] = int(held_rank[j])
                    held_info["of"] = int(held_of[j])  # the items it was ranked against
                    held_info["in_top_k"] = any(x["item"] == c.held_out for x in recs)
                else:
                    held_info["rank"] = None  # held-out item from the other domain
            out.append({
                "user_id": c.user_id,
                "user": c.user,
                "source": c.source,
                "domain": self.dataset.domains[d],
                "history": [self._item(int(i)) for i in c.history],
                "history_used": int(min(len(c.history), tr.max_len)),
                "held_out": held_info,
                "include_seen": bool(include_seen),
                "excluded_seen": 0 if include_seen else int(n_seen[j]),
                "recommendations": recs,
            })
        return out

    # output ---------------------------------------------------------------------------
    def to_table(self, results: list[dict]) -> pa.Table:
        cols: dict[str, list] = {c.name: [] for c in RECS.columns}
        cols["tags"] = []
        part_keys = sorted({key for r in results for x in r["recommendations"] for key in x.get("parts", {})})
        for key in part_keys:
            cols[f"part:{key}"] = []
        for r in results:
            for x in r["recommendations"]:
                cols["user_id"].append(r["user_id"])
                cols["user"].append(r["user"])
                cols["domain"].append(r["domain"])
                for c in ("rank", "item", "item_id", "title", "score"):
                    cols[c].append(x[c])
                cols["tags"].append("; ".join(x["tags"]))
                for key in part_keys:
                    cols[f"part:{key}"].append(x["parts"][key])
        schema = {c.name: c.arrow_type for c in RECS.columns + RECS.optional}
        return pa.table({name: pa.array(v, type=schema.get(name, pa.float32())) for name, v in cols.items()})

    @property
    def kind(self) -> str:
        return self.folder.kind if self.folder is not None else model_kind(self.trained)

    def identity(self) -> dict:
        return {
            "model": {"path": str(self.model_dir) if self.model_dir else None, "kind": self.kind},
            "data": {"path": str(self.dataset.path), "fingerprint": self.dataset.fingerprint},
        }


def _aggregate(parts: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Sum ``"<branch>/<modality>"`` parts per modality and per branch."""
    by_mod: dict[str, float] = {}
    by_branch: dict[str, float] = {}
    for key, v in parts.items():
        branch, _, mod = key.rpartition("/") if "/" in key else ("-", "", key)
        by_mod[mod] = by_mod.get(mod, 0.0) + v
        by_branch[branch] = by_branch.get(branch, 0.0) + v
    return by_mod, by_branch


def read_users_file(path: str | Path) -> list[str]:
    """One raw user id per line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise TemacliError(f"{path}: users file not found; write one user id per line")
    users = [ln.strip() for ln in path.read_text().splitlines()]
    users = [u for u in users if u and not u.startswith("#")]
    if not users:
        raise TemacliError(f"{path}: no user ids in the file; write one user id per line")
    return users


def recommend_batch(
    rec: Recommender, user_ids: list[str], out: str | Path, skip_unknown: bool = False, **kw
) -> dict:
    """Recommend for many users and write Parquet (+ manifest); returns the manifest.

    Unknown users stop the run (listed in the error) unless ``skip_unknown``: then they are
    counted and named in the manifest.
    """
    index = rec._user_rows()
    unknown = [u for u in user_ids if str(u) not in index]
    if unknown and not skip_unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise TemacliError(
            f"{len(unknown)} user id(s) not in {rec.dataset.path}: {shown}; fix the list or pass --skip-unknown"
        )
    known = [u for u in dict.fromkeys(str(u) for u in user_ids) if u in index]
    if not known:
        raise TemacliError("none of the user ids is in the dataset; nothing to recommend")
    results = rec.recommend(known, **kw)
    table = rec.to_table(results)
    out = Path(out)
    artifacts.write_table(table, out, RECS)
    ident = rec.identity()
    inputs = {"dataset": {"path": ident["data"]["path"], "fingerprint": ident["data"]["fingerprint"]}}
    if rec.model_dir is not None:
        folder = rec.folder or ModelFolder.open(rec.model_dir)
        info = folder.info(kind=rec.kind)
        inputs["model"] = {"path": info["path"], "fingerprint": info["fingerprint"], "kind": info["kind"]}
    params = {k: v for k, v in kw.items() if k in ("k", "domain", "include_seen", "explain", "all_history")}
    manifest = artifacts.build_manifest(
        STAGE, params, inputs, outputs={"recommendations": {"fingerprint": artifacts.fingerprint(out)}},
        counts={"users": len(known), "rows": table.num_rows, "unknown_users": len(unknown)},
        unknown_users=unknown[:1000],
    )
    artifacts.write_manifest(out, manifest)
    return manifest

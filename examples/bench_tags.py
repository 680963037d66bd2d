"""Speed and quality of `temacli tags match` on all items of amazon-food-kitchen (28,095 items).

    python examples/bench_tags.py                      # everything below (about 15-25 min on 2 cores)
    python examples/bench_tags.py --skip-local         # without the local LLM part

What it measures (numbers go to docs/tags.md):
1. `--method llm` against the scripted OpenAI-compatible server of the tests (tests/_llm_server.py,
   replies computed instantly by a keyword rule) at --concurrency 1, 8 and 32, each with an empty cache:
   items/s of the whole client path (prompt building, LiteLLM over HTTP, parsing, SQLite cache).
2. A fully cached rerun of the same command (goal: under 10 s).
3. `--method embedding` on all items (goal: under 2 minutes on this CPU).
4. `--method keyword` on all items.
5. The local offline LLM (SmolLM2-135M, constrained decoding) on a sample: items/s.
6. Quality proxy on the real data (no tag labels exist): for consecutive same-domain interactions
   (a, b) of one user and a random item c of the same domain, how often the tag vectors say a is
   closer to b than to c (AUC; 0.5 = no signal). Computed for each method over the same tag lists.

The tag lists are the offline default's (`tags generate` with the local model, --runs 5) when
--tags points at them, else a fixed hand-written list per domain.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
DATA = ROOT.parent / "shared" / "data" / "amazon-food-kitchen"

FIXED = {
    "food": ["coffee", "tea", "candy", "chocolate", "snacks", "spices", "sauce", "pasta", "baking", "organic",
             "gluten free", "beverages", "cereal", "nuts", "cookies", "seasoning", "japanese", "healthy",
             "gift", "sweet"],
    "kitchen": ["cookware", "bakeware", "knives", "coffee maker", "tea kettle", "cutting board", "storage",
                "utensils", "small appliances", "blender", "cast iron", "stainless steel", "glass", "dinnerware",
                "cleaning", "bar tools", "measuring", "baking tools", "food storage", "gadgets"],
}


def build_items(work: Path) -> Path:
    from _llm_server import make_items

    with open(DATA / "items.csv") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda x: (x["domain"] != "food", x["item_id"]))
    return make_items(work / "data", [(r["domain"], r["title"] or "") for r in rows], ids=[r["item_id"] for r in rows])


def pairs(items_path: Path, n_max: int = 20000, seed: int = 0):
    import pyarrow.parquet as pq

    t = pq.read_table(items_path, columns=["item", "item_id", "domain"]).to_pydict()
    idx = dict(zip(t["item_id"], t["item"]))
    dom = np.asarray([0 if d == "food" else 1 for d in t["domain"]])
    seqs: dict[str, list] = {}
    with open(DATA / "interactions.csv") as f:
        for r in csv.DictReader(f):
            seqs.setdefault(r["user_id"], []).append((int(r["timestamp"]), idx[r["item_id"]]))
    pos = []
    for s in seqs.values():
        s.sort()
        for d in (0, 1):
            items = [i for _, i in s if dom[i] == d]
            pos += [(a, b) for a, b in zip(items, items[1:]) if a != b]
    rng = np.random.default_rng(seed)
    pos = np.asarray(pos)[rng.permutation(len(pos))[:n_max]]
    neg = np.empty(len(pos), dtype=np.int64)
    for d in (0, 1):
        pool = np.nonzero(dom == d)[0]
        m = dom[pos[:, 0]] == d
        neg[m] = rng.choice(pool, size=m.sum())
    return pos, neg


def auc(item_tags_path: Path, pos, neg, restrict=None):
    """P(sim(a, b) > sim(a, c)) + 0.5 P(=) over the pairs whose items all have tag scores."""
    from temacli.tags.store import load_item_tags

    it = load_item_tags(item_tags_path)
    n = max(int(max(pos.max(), neg.max())), int(it.item.max())) + 1
    W = np.zeros((n, it.n_tags), dtype=np.float32)
    W[it.item, it.tag] = it.weight
    norms = np.linalg.norm(W, axis=1)
    Wn = W / np.maximum(norms, 1e-12)[:, None]
    keep = np.ones(len(pos), bool)
    if restrict is not None:
        keep = np.isin(pos[:, 0], restrict) & np.isin(pos[:, 1], restrict) & np.isin(neg, restrict)
    a, b, c = pos[keep, 0], pos[keep, 1], neg[keep]
    sp = (Wn[a] * Wn[b]).sum(1)
    sn = (Wn[a] * Wn[c]).sum(1)
    return float(np.mean(sp > sn) + 0.5 * np.mean(sp == sn)), int(keep.sum()), float(np.mean(norms > 0))


def quality(work: Path, pos, neg) -> dict:
    out = {}
    for method in ("embedding", "keyword", "llm-c32"):
        if not (work / method / "item_tags.parquet").exists():
            continue
        a, k, cov = auc(work / method / "item_tags.parquet", pos, neg)
        name = "llm_scripted_keyword_rule" if method.startswith("llm") else method
        out[f"auc_{name}"] = {"auc": round(a, 4), "pairs": k, "items_tagged": round(cov, 3)}
        print(f"quality {name}: AUC {a:.3f} over {k} pairs; {cov:.1%} of items tagged", flush=True)
    return out


def weights(item_tags_path: Path, n: int, index_map=None) -> np.ndarray:
    from temacli.tags.store import load_item_tags

    it = load_item_tags(item_tags_path)
    W = np.zeros((n, it.n_tags), dtype=np.float32)
    rows = it.item if index_map is None else np.asarray(index_map)[it.item]
    W[rows, it.tag] = it.weight
    return W / np.maximum(np.linalg.norm(W, axis=1), 1e-12)[:, None]


def triple_auc(W: np.ndarray, a, b, c) -> float:
    sp = (W[a] * W[b]).sum(1)
    sn = (W[a] * W[c]).sum(1)
    return float(np.mean(sp > sn) + 0.5 * np.mean(sp == sn))


def local_part(work: Path, items: Path, tags: Path, pos, neg, k: int, results: dict) -> dict:
    """Score the items of k (a, b, c) triples with the local LLM; compare every method on those triples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from _llm_server import make_items
    from temacli.llm.client import LLMSettings
    from temacli.tags.match import Selection, match_tags

    a, b, c = pos[:k, 0], pos[:k, 1], neg[:k]
    pick = np.unique(np.concatenate([a, b, c]))
    t = pq.read_table(items).take(pa.array(pick)).to_pydict()
    order = sorted(range(len(pick)), key=lambda i: (t["domain"][i] != "food", i))
    orig = pick[order]
    sitems = make_items(work / "local" / "data", [(t["domain"][i], t["title"][i]) for i in order])
    t0 = time.perf_counter()
    m = match_tags(sitems, [tags], out=work / "local" / "item_tags.parquet", method="llm",
                   settings=LLMSettings(cache=str(work / "cache-local.sqlite"), concurrency=1), batch_items=4,
                   selection=Selection())
    dt = time.perf_counter() - t0
    n = m["counts"]["items"]
    out = {"llm_local": {"items": n, "seconds": round(dt, 1), "items_per_s": round(n / dt, 3),
                         "llm_calls": m["counts"].get("llm_calls")}}
    print(f"local LLM (SmolLM2-135M, constrained): {n} items in {dt:.1f} s = {n / dt:.3f} items/s "
          f"(includes the model load; {m['counts'].get('llm_calls')} calls)", flush=True)
    import pyarrow.parquet as pq2

    N = pq2.read_metadata(items).num_rows
    for name, path, imap in (("llm_local", work / "local" / "item_tags.parquet", orig),
                             ("embedding", work / "embedding" / "item_tags.parquet", None),
                             ("keyword", work / "keyword" / "item_tags.parquet", None)):
        if path.exists():
            W = weights(path, N, imap)
            out[f"auc_sample_{name}"] = round(triple_auc(W, a, b, c), 4)
            print(f"quality on the {k} sampled triples, {name}: AUC {out[f'auc_sample_{name}']:.3f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tags", type=Path, help="folder with food.parquet and kitchen.parquet (default: fixed lists)")
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--local-triples", type=int, default=20,
                    help="(a, b, c) triples whose items the local LLM scores (at most 3 items each)")
    ap.add_argument("--only-local", action="store_true",
                    help="reuse --work's outputs: only the quality figures and the local LLM part")
    args = ap.parse_args()

    from _llm_server import Reply, keyword_scorer, serve, write_tag_list
    from temacli.llm.client import LLMSettings
    from temacli.tags.match import Selection, match_tags

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_tags."))
    os.environ["OPENAI_API_KEY"] = "sk-bench-not-a-key"
    items = build_items(work)
    tags = work / "tags"
    tags.mkdir(parents=True, exist_ok=True)
    for d in ("food", "kitchen"):
        if args.tags:
            for name in (f"{d}.parquet", f"{d}.parquet.manifest.json"):
                shutil.copy(args.tags / name, tags / name)
        else:
            write_tag_list(tags / f"{d}.parquet", d, FIXED[d])
    print(f"items: {items} ({sum(1 for _ in open(DATA / 'items.csv')) - 1} rows); tags: {args.tags or 'fixed lists'}")
    results = {}
    sel = Selection()
    if args.only_local:
        pos, neg = pairs(items)
        results = json.loads((work / "bench_results.json").read_text()) if (work / "bench_results.json").exists() else {}
        results.update(quality(work, pos, neg))
        if not args.skip_local:
            results.update(local_part(work, items, tags, pos, neg, args.local_triples, results))
        (work / "bench_results.json").write_text(json.dumps(results, indent=2))
        return
    with serve(lambda b, n: Reply(keyword_scorer(b))) as s:
        for c in [int(x) for x in args.concurrency.split(",")]:
            cache = work / f"cache-c{c}.sqlite"
            st = LLMSettings(model="openai/scripted", api_base=(s.url,), concurrency=c, cache=str(cache))
            t0 = time.perf_counter()
            m = match_tags(items, [tags], out=work / f"llm-c{c}" / "item_tags.parquet", method="llm", settings=st,
                           selection=sel)
            dt = time.perf_counter() - t0
            n = m["counts"]["items"]
            results[f"llm_scripted_c{c}"] = {"seconds": round(dt, 1), "items_per_s": round(n / dt, 1),
                                             "calls": m["counts"]["llm_calls"]}
            print(f"llm (scripted server) concurrency {c:>2}: {n} items in {dt:.1f} s = {n / dt:.0f} items/s "
                  f"({m['counts']['llm_calls']} calls)", flush=True)
        t0 = time.perf_counter()
        m = match_tags(items, [tags], out=work / f"llm-c{c}" / "item_tags.parquet", method="llm", settings=st,
                       selection=sel)
        dt = time.perf_counter() - t0
        results["llm_cached_rerun"] = {"seconds": round(dt, 1), "calls": m["counts"]["llm_calls"]}
        print(f"llm fully cached rerun: {dt:.1f} s ({m['counts']['cache_hits']} cache hits, "
              f"{m['counts']['llm_calls']} calls)", flush=True)
    for method in ("embedding", "keyword"):
        t0 = time.perf_counter()
        m = match_tags(items, [tags], out=work / method / "item_tags.parquet", method=method, selection=sel)
        dt = time.perf_counter() - t0
        results[method] = {"seconds": round(dt, 1), "items_per_s": round(m["counts"]["items"] / dt, 1)}
        print(f"{method}: {m['counts']['items']} items in {dt:.1f} s", flush=True)
    pos, neg = pairs(items)
    results.update(quality(work, pos, neg))
    if not args.skip_local:
        results.update(local_part(work, items, tags, pos, neg, args.local_triples, results))
    (work / "bench_results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {work / 'bench_results.json'}")


if __name__ == "__main__":
    main()

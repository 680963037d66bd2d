"""``temacli tags generate``: Algorithm 1 of the paper (self-refine domain tag list generation).

    Z = {}
    for r in 1..R:   T_d^(r) = LLM(P_domain || d) at T = 0;  Z = Z ∪ {T_d^(r)}     (Eq. 1)
    T_d* = Vote(Z)                                                                    (Eq. 2)

* The prompt (``temacli/llm/prompts/generate.txt``, or ``--prompt-file``) asks for N tags with a
  relevance score in [0, 1]. Its sha256 is recorded in the manifest.
* Why the R runs differ at T = 0: identical calls would return identical text from a deterministic
  backend (the local model always; many APIs nearly always), and the vote would mean nothing. Run r
  (0-based) therefore sees (a) a different seeded sample of the domain's item titles from ``--items``
  (``numpy.random.default_rng([seed, r])``, ``--sample-titles`` titles, none without ``--items``) and
  (b) the list of aspects to cover rotated by r. The runs are fixed by ``--seed``: the same command
  gives the same prompts, hence the same cache keys and the same output.
* Replies are read with JSON mode / a JSON schema where the backend supports it and a tolerant parser
  otherwise (``temacli.tags.parse``). Runs that cannot be read are recorded in the report and do not
  vote; ``runs`` in the output counts the runs that did.
* Vote: tags are normalised (NFKC, lowercase, separators to spaces, duplicates within a run merged);
  a tag's votes = the number of parsed runs that contain it. Tags are ordered by votes, then mean
  score, then mean position in the runs' lists (models list the most important first), then text,
  and the first N with votes >= ``--min-votes`` are kept (default 1: the N most
  voted tags, so the list has N tags whenever the runs proposed N; with a real model the lists overlap
  and these are the tags most runs agree on; ``--min-votes`` makes the majority strict, e.g. 3 of 5).
  The manifest counts how many kept tags had a strict majority. ``mean_score`` is the mean of the
  scores the tag got in the runs that voted for it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from temacli import artifacts
from temacli.errors import TemacliError
from temacli.llm import prompts
from temacli.llm.client import LLMClient, LLMSettings, Request, messages
from temacli.tags.parse import parse_tag_list
from temacli.tags.store import DOMAIN_TAGS

STAGE = "tags generate"
ASPECTS = ("product types", "ingredients or materials", "uses and occasions", "styles and flavours", "audiences")


@dataclass
class RunRecord:
    run: int
    status: str  # ok | unparsable | failed
    tags: list[tuple[str, float | None]]
    error: str | None = None
    cached: bool = False
    excerpt: str = ""


def tag_schema(num_tags: int) -> dict:
    return {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "minItems": num_tags,
                "maxItems": num_tags,
                "items": {
                    "type": "object",
                    "properties": {
                        "tag": {"type": "string", "maxLength": 40},
                        "score": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    "required": ["tag", "score"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["tags"],
        "additionalProperties": False,
    }


def domain_titles(items_path: Path, domain: str) -> list[str]:
    """Non-empty title texts of ``domain``'s items (title + description), in item order."""
    from temacli.data.dataset import ITEMS, item_texts

    table = artifacts.read_table(items_path, ITEMS)
    doms = table.column("domain").to_pylist()
    found = sorted(set(doms))
    if domain not in found:
        raise TemacliError(
            f"{items_path}: no items of domain '{domain}' (domains: {', '.join(found)}); pass one of them to --domain"
        )
    texts = item_texts(table)
    return [t for t, d in zip(texts, doms) if d == domain and t]


def _clean(text: str, limit: int = 160) -> str:
    text = " ".join(text.replace("<", " ").replace(">", " ").split())
    return text[:limit]


def build_prompts(
    domain: str, runs: int, num_tags: int, titles: list[str], sample_titles: int, seed: int, template: str
) -> list[str]:
    out = []
    for r in range(runs):
        if titles and sample_titles > 0:
            rng = np.random.default_rng([seed, r])
            k = min(sample_titles, len(titles))
            pick = sorted(rng.choice(len(titles), size=k, replace=False).tolist())
            examples = (
                "Example items of this domain (product data, not instructions):\n"
                + "\n".join(f"- {_clean(titles[i])}" for i in pick)
            )
        else:
            examples = ""
        aspects = ", ".join(ASPECTS[(r + j) % len(ASPECTS)] for j in range(len(ASPECTS)))
        out.append(
            prompts.render(template, "generate prompt", domain=domain, num_tags=num_tags, examples=examples,
                           aspects=aspects)
        )
    return out


def vote(records: list[RunRecord], num_tags: int, min_votes: int | None = None) -> tuple[list[dict], int, int]:
    """The kept rows, the number of parsed runs and the threshold used."""
    parsed = [r for r in records if r.status == "ok"]
    n = len(parsed)
    need = min_votes if min_votes is not None else 1
    votes: dict[str, int] = defaultdict(int)
    scores: dict[str, list[float]] = defaultdict(list)
    ranks: dict[str, list[int]] = defaultdict(list)
    for r in parsed:
        for pos, (tag, s) in enumerate(r.tags):
            votes[tag] += 1
            ranks[tag].append(pos)
            if s is not None:
                scores[tag].append(s)
    rows = []
    for tag, v in votes.items():
        if v < need:
            continue
        ms = float(np.mean(scores[tag])) if scores[tag] else 0.0
        rows.append({"tag": tag, "votes": v, "mean_score": ms, "mean_rank": float(np.mean(ranks[tag]))})
    rows.sort(key=lambda x: (-x["votes"], -round(x["mean_score"], 6), x["mean_rank"], x["tag"]))
    return rows[:num_tags], n, need


def generate_tags(
    domain: str,
    out: str | Path | None = None,
    items: str | Path | None = None,
    runs: int = 5,
    num_tags: int = 20,
    sample_titles: int = 20,
    seed: int = 0,
    min_votes: int | None = None,
    prompt_file: str | Path | None = None,
    settings: LLMSettings | None = None,
    show_progress: bool = True,
) -> dict:
    """Run Algorithm 1 for ``domain``; write ``out`` (DOMAIN_TAGS), its manifest and a report. Returns the manifest."""
    domain = (domain or "").strip()
    if not domain:
        raise TemacliError("--domain is empty; name the domain, e.g. --domain food")
    if runs < 1:
        raise TemacliError(f"--runs must be at least 1 (got {runs})")
    if num_tags < 1 or num_tags > 200:
        raise TemacliError(f"--num-tags must be between 1 and 200 (got {num_tags})")
    if min_votes is not None and (min_votes < 1 or min_votes > runs):
        raise TemacliError(f"--min-votes must be between 1 and --runs ({runs}) (got {min_votes})")
    settings = settings or LLMSettings()
    out = Path(out) if out is not None else Path("tags") / f"{domain}.parquet"
    template = prompts.load("generate", prompt_file)
    system = prompts.load("system")
    titles: list[str] = []
    inputs = {}
    if items is not None:
        items = Path(items)
        titles = domain_titles(items, domain)
        inputs["items"] = artifacts.input_record(items)
    texts = build_prompts(domain, runs, num_tags, titles, sample_titles, seed, template)
    schema = tag_schema(num_tags)

    def valid(text: str) -> bool:
        return bool(parse_tag_list(text)[0])

    reqs = [Request(r, messages(system, texts[r]), schema=schema, schema_name="domain_tags", validate=valid)
            for r in range(runs)]
    records: dict[int, RunRecord] = {}
    client = LLMClient(settings)
    from temacli.llm.progress import progress

    try:
        with progress(runs, f"tags generate {domain}", show_progress, unit="runs") as bar:

            def on_result(res):
                if res.text is None:
                    records[res.id] = RunRecord(res.id, "failed", [], error=res.error)
                else:
                    tags, err = parse_tag_list(res.text)
                    records[res.id] = RunRecord(
                        res.id, "ok" if tags else "unparsable", tags, error=err, cached=res.cached,
                        excerpt=res.text[:2000],
                    )
                bar.advance(1, cached=int(res.cached), failed=int(records[res.id].status != "ok"))

            stats = client.run(reqs, on_result)
    finally:
        client.close()
    ordered = [records[r] for r in range(runs)]
    kept, n_parsed, need = vote(ordered, num_tags, min_votes)
    report_path = out.with_name(out.stem + ".report.json")
    report = {
        "domain": domain,
        "runs": [
            {"run": r.run, "status": r.status, "n_tags": len(r.tags), "cached": r.cached, "error": r.error,
             "tags": [t for t, _ in r.tags], "reply_excerpt": r.excerpt}
            for r in ordered
        ],
        "min_votes": need,
        "kept": len(kept),
    }
    artifacts.write_json(report, report_path)
    if n_parsed == 0:
        first = next((r.error for r in ordered if r.error), "")
        raise TemacliError(
            f"tags generate {domain}: none of the {runs} runs gave a readable tag list (first problem: "
            f"{first[:160]}; see {report_path}); check --model, or try --response-format json / none"
        )
    if not kept:
        raise TemacliError(
            f"tags generate {domain}: no tag reached {need} votes in {n_parsed} runs (see {report_path}); "
            "lower --min-votes or raise --runs"
        )
    table = pa.table(
        {
            "domain": pa.array([domain] * len(kept), pa.string()),
            "tag": pa.array([k["tag"] for k in kept], pa.string()),
            "votes": pa.array([k["votes"] for k in kept], pa.int32()),
            "runs": pa.array([n_parsed] * len(kept), pa.int32()),
            "mean_score": pa.array([k["mean_score"] for k in kept], pa.float32()),
        }
    )
    artifacts.write_table(table, out, DOMAIN_TAGS)
    params = {
        "domain": domain,
        "runs": runs,
        "num_tags": num_tags,
        "sample_titles": sample_titles if items is not None else 0,
        "seed": seed,
        "min_votes": need,
        "prompt_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "system_prompt_sha256": hashlib.sha256(system.encode()).hexdigest(),
        "prompt_file": str(prompt_file) if prompt_file is not None else None,
        "llm": settings.public(),
    }
    manifest = artifacts.build_manifest(
        STAGE,
        params,
        inputs=inputs,
        outputs={
            "domain_tags": {"path": out.name, "fingerprint": artifacts.fingerprint(out)},
            "report": {"path": report_path.name},
        },
        counts={
            "runs": runs,
            "runs_parsed": n_parsed,
            "runs_unparsable": sum(r.status == "unparsable" for r in ordered),
            "runs_failed": sum(r.status == "failed" for r in ordered),
            "candidate_tags": len({t for r in ordered for t, _ in r.tags}),
            "tags_kept": len(kept),
            "tags_with_majority": sum(k["votes"] > n_parsed / 2 for k in kept),
            "cache_hits": stats.cached,
            "llm_calls": stats.called,
            "retries": stats.retries,
        },
    )
    artifacts.write_manifest(out, manifest)
    manifest["path"] = str(out)
    manifest["report_path"] = str(report_path)
    manifest["tags"] = kept
    return manifest


def read_domain_tags(path: str | Path) -> tuple[str, list[str], dict]:
    """(domain, tags in order, input record) of one DOMAIN_TAGS file; checks its manifest."""
    path = Path(path)
    table = artifacts.read_table(path, DOMAIN_TAGS)
    m = artifacts.read_manifest(path, stage=STAGE, fix=DOMAIN_TAGS.fix)
    fp = artifacts.fingerprint(path)
    found = m.get("outputs", {}).get("domain_tags", {}).get("fingerprint")
    artifacts.check_same("domain tag list fingerprint", found, fp, str(path),
                         "the file was changed after `temacli tags generate`; rerun it")
    doms = sorted(set(table.column("domain").to_pylist()))
    if len(doms) != 1:
        raise TemacliError(f"{path}: holds {len(doms)} domains ({', '.join(doms)}), expected one; {DOMAIN_TAGS.fix}")
    tags = table.column("tag").to_pylist()
    if len(set(tags)) != len(tags):
        raise TemacliError(f"{path}: repeated tags; {DOMAIN_TAGS.fix}")
    return doms[0], tags, artifacts.input_record(path, fp)



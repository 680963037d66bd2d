"""``temacli tags``: generate domain tag lists (Algorithm 1) and match items to tags (Section III-D)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from temacli.cli._console import console, info
from temacli.cli._json import print_json
from temacli.cli._options import (DEVICE_HELP, QUIET_DECLS, SEED_DEFAULT, Ground, Pick, MatchMethod, Renamed, Represent,
                                  ResponseFormat, Select, renamed_command, value)

tags_app = typer.Typer(
    help=(
        "LLM tags: a voted tag list per domain (generate), then a 1-100 score per item and tag (match).\n\n"
        "Example: temacli tags generate --domain food --items runs/fk/data/items.parquet --runs 5"
    ),
    no_args_is_help=True,
)

_LLM_HELP = (
    "Any LiteLLM model string (openai/gpt-4o-mini, ollama_chat/qwen2.5:7b, hosted_vllm/NAME with --api-base, ...). "
    "Keys come from the environment (e.g. OPENAI_API_KEY). Default: the offline local model (SmolLM2-135M, "
    "for trying the pipeline only). (Was --model, still accepted for this release.)"
)
_DEVICE_HELP = "Sentence-encoder device ({what}): " + DEVICE_HELP.rstrip(".") + " or mps."
_QUIET_HELP = "No progress bar (the summary lines stay)."
# the old spelling of --llm (one release): `--model` is a model kind (train) or a model folder (eval, recommend)
_LLM_RENAMED = Renamed("--model", "llm")


# The LLM options of `tags generate` and `tags match`, defined once: ``@llm_options`` adds them to a
# command and hands the command one ``settings`` (temacli.llm.client.LLMSettings) built from them.
_LLM_TYPES = {"llm": Optional[str], "api_base": Optional[List[str]], "concurrency": int, "timeout": float,
              "max_retries": int, "response_format": ResponseFormat, "max_tokens": Optional[int], "cache": Optional[Path],
              "no_cache": bool}
LLM = {
    "llm": typer.Option(None, "--llm", "-m", help=_LLM_HELP),
    "api_base": typer.Option(None, "--api-base", help="Endpoint URL; repeat it to spread requests over several servers (LiteLLM Router)."),
    "concurrency": typer.Option(4, "--concurrency", "-c", help="Requests in flight at once."),
    "timeout": typer.Option(120.0, "--timeout", help="Seconds before a request is abandoned and retried."),
    "max_retries": typer.Option(5, "--max-retries", help="Retries on timeouts, 429 and 5xx (exponential backoff, Retry-After honoured)."),
    "response_format": typer.Option(ResponseFormat.schema, "--response-format", case_sensitive=False, help="schema (JSON schema), json (JSON mode) or none."),
    "max_tokens": typer.Option(None, "--max-tokens", help="Cap on reply tokens."),
    "cache": typer.Option(None, "--cache", help="SQLite response cache (default $TEMACLI_CACHE_DIR or ~/.cache/temacli/llm-cache.sqlite)."),
    "no_cache": typer.Option(False, "--no-cache", help="Neither read nor write the response cache."),
}


def llm_options(command):
    """Append the ``LLM`` options to ``command``'s parameters (typer reads ``__signature__``) and call it
    with ``settings=`` (one LLMSettings) in their place."""
    import functools
    import inspect

    sig = inspect.signature(command)
    params = [p for p in sig.parameters.values() if p.name != "settings"]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=LLM[name], annotation=_LLM_TYPES[name])
             for name in LLM]

    @functools.wraps(command)
    def wrapper(**kwargs):
        values = {name: kwargs.pop(name) for name in LLM}
        return command(**kwargs, settings=_settings(**values))

    wrapper.__signature__ = sig.replace(parameters=params + extra)
    wrapper.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != "settings"} | _LLM_TYPES
    return wrapper


def _progress(as_json: bool, quiet: bool):
    from temacli.cli._console import RichProgress

    return RichProgress(enabled=not (as_json or quiet))


def _refuse_existing(path: Path, force: bool) -> None:
    """An output that exists is replaced only with --force (as data split, train, eval and recommend do)."""
    if path.exists() and not force:
        from temacli.errors import TemacliError

        raise TemacliError(f"{path} exists; pass --force to replace it, or choose another --out")


def _settings(llm, api_base, concurrency, timeout, max_retries, response_format, cache, no_cache, max_tokens):
    from temacli.llm.client import LOCAL_MODEL, LLMSettings

    return LLMSettings(
        model=llm or LOCAL_MODEL,
        api_base=tuple(api_base or ()),
        concurrency=concurrency,
        timeout=timeout,
        max_retries=max_retries,
        response_format=value(response_format),
        cache=str(cache) if cache is not None else None,
        use_cache=not no_cache,
        max_tokens=max_tokens,
    )


# `-d` is --data on every other command; here it stays, hidden, as the old short of --domain for this release
@tags_app.command("generate", cls=renamed_command(_LLM_RENAMED, Renamed("-d", "domain")))
@llm_options
def generate(
    domain: str = typer.Option(..., "--domain", help="Domain name (as in the items table's domain column)."),
    items: Optional[Path] = typer.Option(
        None, "--items", help="items.parquet of a dataset: each run sees a different seeded sample of its titles."
    ),
    runs: int = typer.Option(5, "--runs", "-R", help="R (1-100): number of LLM queries at temperature 0 (Algorithm 1)."),
    num_tags: int = typer.Option(20, "--num-tags", "-N", help="N (1-200): tags asked for per run, and the most kept."),
    min_votes: Optional[int] = typer.Option(None, "--min-votes", help="1 to R: keep only tags proposed by at least this many runs (default 1: the N most voted)."),
    sample_titles: int = typer.Option(20, "--sample-titles", help="Item titles shown per run (0-1000; with --items)."),
    seed: int = typer.Option(SEED_DEFAULT, "--seed", help="Seed of the per-run title samples."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="UTF-8 prompt template replacing the built-in one (fields {domain} {num_tags} {examples} {aspect} {aspects} {max_words} {few_shot_domain} {few_shot}); its echo words in <name>.echo.txt beside it."),
    literal: bool = typer.Option(False, "--literal", help="The paper's Algorithm 1 as is: the original prompt and a vote of surface forms, no rules, merging or grounding (for ablations)."),
    max_words: int = typer.Option(3, "--max-words", help="Rule: at most this many words per tag (1-10)."),
    min_items: int = typer.Option(3, "--min-items", help="With --items: keep a tag only when it describes at least M items of the domain (0 = off)."),
    max_share: float = typer.Option(0.5, "--max-share", help="With --items: drop tags that describe more than this share (0-1] of the domain's titled items (1 = off)."),
    ground: Ground = typer.Option(Ground.keyword, "--ground", case_sensitive=False, help="How a tag 'describes' an item for --min-items/--max-share: keyword (all its words in the text) or embedding (score > --ground-threshold)."),
    ground_threshold: float = typer.Option(70.0, "--ground-threshold", help="θ (1-100) of --ground embedding."),
    pick: Pick = typer.Option(Pick.coverage, "--pick", case_sensitive=False, help="With --items: which N grounded tags are kept: coverage (greedy: votes x items no kept tag describes yet) or votes (the N most voted)."),
    merge_cos: float = typer.Option(0.85, "--merge-cos", help="Merge near-duplicate tags whose offline-encoder cosine is at least this (0-1; 0 = only same-stem merges)."),
    features: Optional[Path] = typer.Option(None, "--features", help="--ground embedding: a `features text` folder whose text.npy is reused."),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP.format(what="merging, --ground embedding")),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output Parquet file (default tags/<domain>.parquet); an existing file needs --force."),
    force: bool = typer.Option(False, "--force", help="Replace the tag list already at --out."),
    quiet: bool = typer.Option(False, *QUIET_DECLS, help=_QUIET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the result (tags, counts, paths) as JSON."),
    settings=None,  # the LLM options (see llm_options)
) -> None:
    """Generate a domain's tag list: R queries at T=0, then a frequency vote (Algorithm 1).

    Example: temacli tags generate --domain movie --runs 5

    Example: temacli tags generate --domain food --items runs/fk/data/items.parquet --runs 5 --num-tags 40 --llm ollama_chat/qwen2.5:7b --out runs/fk/tags/food.parquet
    """
    from temacli.tags.generate import default_tags_path, generate_tags

    _refuse_existing(default_tags_path(domain, out), force)
    m = generate_tags(
        domain, out=out, items=items, runs=runs, num_tags=num_tags, sample_titles=sample_titles, seed=seed,
        min_votes=min_votes, prompt_file=prompt_file, settings=settings, progress=_progress(as_json, quiet),
        literal=literal, max_words=max_words, min_items=min_items, max_share=max_share, ground=value(ground),
        ground_threshold=ground_threshold, merge_cos=merge_cos, features=features, device=device, pick=value(pick),
    )
    c = m["counts"]
    if as_json:
        print_json({"path": m["path"], "report": m["report_path"], "counts": c, "tags": m["tags"]})
        return
    from rich.table import Table

    title = f"{domain}: {c['tags_kept']} tags kept ({c['runs_parsed']}/{c['runs']} runs parsed, vote >= {m['params']['min_votes']}"
    if "coverage" in c:
        title += f", they describe {100 * c['coverage']:.0f}% of the titled items"
    t = Table(title=title + ")")
    t.add_column("tag")
    t.add_column("votes", justify="right")
    t.add_column("mean score", justify="right")
    for row in m["tags"]:
        t.add_row(row["tag"], str(row["votes"]), f"{row['mean_score']:.2f}")
    console.print(t)
    if c.get("dropped"):
        shown = ", ".join(f"{k} {v}" for k, v in c["dropped"].items() if v)
        if shown or c.get("merged"):
            info(f"dropped candidates: {shown or 'none'}; merged near-duplicates: {c.get('merged', 0)} "
                 f"(details in {m['report_path']})")
    bad = c["runs_unparsable"] + c["runs_failed"]
    info(f"wrote {m['path']} ({c['llm_calls']} calls, {c['cache_hits']} cache hits"
         + (f", {bad} runs unreadable or failed: see {m['report_path']}" if bad else "") + ")")


@tags_app.command("match", cls=renamed_command(_LLM_RENAMED))
@llm_options
def match(
    items: Path = typer.Option(..., "--items", help="items.parquet of the dataset (or the dataset folder)."),
    tags: List[Path] = typer.Option(..., "--tags", help="Folder with <domain>.parquet tag lists, or the files; repeatable."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output item_tags.parquet (tag_vocab.parquet goes beside it; default DATASET/../tags/item_tags.parquet); an existing file needs --force."),
    force: bool = typer.Option(False, "--force", help="Replace the item_tags.parquet already at --out."),
    method: MatchMethod = typer.Option(MatchMethod.embedding, "--method", case_sensitive=False, help="embedding (sentence encoder, default), llm (the paper's), keyword (no model)."),
    select: Select = typer.Option(Select.hybrid, "--select", case_sensitive=False, help="top-r, threshold or hybrid (top-R, then tags scoring more than θ, up to --max-tags)."),
    top_r: int = typer.Option(5, "--top-r", help="R (at least 1) of top-r and hybrid."),
    threshold: float = typer.Option(70.0, "--threshold", help="θ (1-100) of threshold and hybrid: a tag is kept when its score exceeds θ (strictly greater)."),
    max_tags: int = typer.Option(10, "--max-tags", help="Most tags per item under hybrid (at least --top-r)."),
    represent: Represent = typer.Option(Represent.weighted, "--represent", case_sensitive=False, help="weighted (scores / their sum), multihot (1/k each) or onehot (best tag): every tagged item's weights sum to 1."),
    batch_items: int = typer.Option(8, "--batch-items", help="llm: items per prompt (1-256)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n (0 <= i < n <= 10000): score only shard i of n (merge the parts with `tags merge`)."),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP.format(what="--method embedding")),
    features: Optional[Path] = typer.Option(None, "--features", help="embedding: a `features text` folder; its text.npy is reused when made for this items table (same output as encoding again)."),
    max_failed_share: Optional[float] = typer.Option(None, "--max-failed-share", help="llm: exit 2 (report written, no item tags) when more than this share (0-1) of the items failed; default: only when all failed."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="llm: UTF-8 prompt template (fields {tags} {items} {domain})."),
    quiet: bool = typer.Option(False, *QUIET_DECLS, help=_QUIET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest's counts and paths as JSON."),
    settings=None,  # the LLM options (see llm_options)
) -> None:
    """Score every item against its domain's tags (1-100), select tags and write their weights.

    Example: temacli tags match --items runs/fk/data/items.parquet --tags runs/fk/tags/ --out runs/fk/tags/item_tags.parquet

    Example: temacli tags match --items runs/fk/data/items.parquet --tags runs/fk/tags/ --method llm --llm openai/gpt-4o-mini --concurrency 16 --select hybrid --top-r 5 --threshold 70
    """
    from temacli.tags.match import Selection, default_item_tags_path, match_tags

    _refuse_existing(default_item_tags_path(items, out), force)
    sel = Selection(select=value(select), top_r=top_r, threshold=threshold, max_tags=max_tags,
                    represent=value(represent))
    m = match_tags(items, list(tags), out=out, method=value(method), selection=sel, settings=settings,
                   batch_items=batch_items, shard=shard, device=device, prompt_file=prompt_file,
                   progress=_progress(as_json, quiet), features=features, max_failed_share=max_failed_share)
    c = m["counts"]
    if as_json:
        print_json({"path": m["path"], "report": m["report_path"], "counts": c})
        return
    msg = (f"wrote {m['path']}: {c['tagged_items']}/{c['items']} items tagged, {c['rows']} item-tag rows, "
           f"{c['tags']} tags in the vocabulary")
    if "llm_calls" in c:
        msg += f"; {c['llm_calls']} calls, {c['cache_hits']} cache hits, {c['retries']} retries"
    info(msg)
    problems = c["failed_items"] + c["no_text_items"] + c["untagged_items"]
    if problems:
        info(f"[yellow]{c['failed_items']} items failed, {c['no_text_items']} have no text, "
             f"{c['untagged_items']} got no tag above 1[/yellow]: listed in {m['report_path']}")


@tags_app.command("merge")
def merge(
    parts: List[Path] = typer.Argument(..., help="The item_tags files written by `tags match --shard i/n`."),
    out: Path = typer.Option(..., "--out", "-o", help="Merged item_tags.parquet (tag_vocab.parquet goes beside it); an existing file needs --force."),
    force: bool = typer.Option(False, "--force", help="Replace the item_tags.parquet already at --out."),
    quiet: bool = typer.Option(False, *QUIET_DECLS, help="No progress bar (merging shows none; accepted like on every tags command)."),
    as_json: bool = typer.Option(False, "--json", help="Print the merged manifest's counts as JSON."),
) -> None:
    """Merge the shards of a `tags match --shard i/n` run into one item_tags.parquet.

    Example: temacli tags merge runs/fk/tags/shard0/item_tags.parquet runs/fk/tags/shard1/item_tags.parquet --out runs/fk/tags/item_tags.parquet
    """
    from temacli.tags.match import default_item_tags_path, merge_shards

    _refuse_existing(default_item_tags_path(None, out), force)
    m = merge_shards(list(parts), out)
    if as_json:
        print_json({"path": m["path"], "counts": m["counts"]})
        return
    info(f"wrote {m['path']}: {m['counts']['rows']} rows from {len(parts)} shards")


def register(app: typer.Typer) -> None:
    app.add_typer(tags_app, name="tags")

"""Vocabulary hygiene of `tags generate` (issue 13) against a scripted OpenAI-compatible server that
replies with junk lists: rules with drop reasons, canonical vote, near-duplicate merges, grounding,
coverage, `--literal` = Algorithm 1 as before; and the canonical form itself."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from _llm_server import Reply, serve
from temacli.cli import main
from temacli.llm.client import LLMSettings
from temacli.tags.canon import canonical, text_keys
from temacli.tags.generate import RunRecord, build_prompts, domain_kind, generate_tags, vote

ARTS = [
    ("arts", "Prismacolor Premier Colored Pencils, 24 pack, art supplies"),
    ("arts", "Faber-Castell Graphite Pencil Set art supplies"),
    ("arts", "Winsor & Newton Watercolor Paint Set art supplies"),
    ("arts", "Crayola Watercolors, 8 colors art supplies"),
    ("arts", "Paper Crafting Kit with Scissors art supplies"),
    ("arts", "Glass Beads for Jewelry Making art supplies"),
    ("arts", "Beading Wire and Beads Kit art supplies"),
    ("arts", "Acrylic Paint Brushes art supplies"),
]
OFFICE = [("office", "Stapler"), ("office", "Printer Paper, 500 sheets")]

JUNK = {
    1: [("dritz dritz dritz", 0.9), ("description description", 0.9), ("tags description", 0.8),
        ("household essentials 's ' ' ' '", 0.8), ("zj", 0.7), ("Pencils", 0.9), ("watercolor", 0.8),
        ("arts & crafts", 0.7), ("paper crafting", 0.9), ("beads", 0.6), ("art supplies", 0.9),
        ("ultra premium professional grade tools", 0.5), ("x" * 45, 0.5)],
    2: [("pencil", 0.8), ("watercolors", 0.8), ("arts and crafts", 0.7), ("paper craft", 0.5), ("beading", 0.6),
        ("art supplies", 0.9), ("yarr", 0.9)],
    3: [("pencils", 0.9), ("Watercolor", 0.8), ("beads", 0.6), ("paint brushes", 0.5), ("art supplies", 0.9),
        ("arts", 0.9)],
}


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("TEMACLI_CACHE_DIR", str(tmp_path / "cache"))


def _junk(body, n):
    return Reply(json.dumps({"tags": [{"tag": t, "score": s} for t, s in JUNK[(n - 1) % 3 + 1]]}))


def test_canonical_form_folds_case_plural_and_ampersand():
    same = [("Pencils", "pencil"), ("arts & crafts", "Arts and Crafts"), ("watercolors", "Watercolor"),
            ("berries", "berry"), ("movies", "movie"), ("boxes", "box"), ("tomatoes", "tomato"),
            ("glasses", "glass"), ("knives", "knife"), ("Gluten-Free", "gluten free"), ("men's shoes", "men shoe")]
    for a, b in same:
        assert canonical(a) == canonical(b), (a, b)
    for a, b in [("glass", "gas"), ("tea", "teas set"), ("news", "new")]:
        assert canonical(a) != canonical(b), (a, b)
    assert {"pencil", "and", "craft"} <= text_keys("Pencils & crafts")


def test_junk_lists_give_exactly_the_expected_vocabulary(tmp_path, make_dataset):
    items = make_dataset(tmp_path, "data", items=ARTS + OFFICE, domains=("arts", "office")) / "items.parquet"
    out = tmp_path / "tags" / "arts.parquet"
    with serve(_junk) as s:
        st = LLMSettings(model="openai/scripted", api_base=(s.url,), concurrency=1)
        m = generate_tags("arts", out=out, items=items, runs=3, num_tags=20, settings=st, min_items=1,
                          max_share=0.5)
    t = pq.read_table(out).to_pydict()
    assert t["tag"] == ["pencils", "watercolor", "beads", "paper crafting", "paint brushes"]
    assert t["votes"] == [3, 3, 3, 2, 1]  # beads + beading and paper crafting + paper craft: votes summed
    rep = json.loads(out.with_name("arts.report.json").read_text())
    why = {(d["tag"], d["reason"]) for d in rep["dropped"]}
    assert {("dritz dritz dritz", "repeated_word"), ("description description", "repeated_word"),
            ("tags description", "echo"), ("household essentials 's ' ' ' '", "too_many_words"),
            ("zj", "too_short"), ("x" * 45, "too_long"), ("ultra premium professional grade tools", "too_many_words"),
            ("arts", "echo"), ("art supplies", "too_common"), ("yarr", "not_grounded"),
            ("arts & crafts", "not_grounded")} == why
    assert {(g["kept"], g["merged"], g["by"]) for g in rep["merges"]} == {
        ("beads", "beading", "same stem"), ("paper crafting", "paper craft", "same stem")}
    assert rep["kept_forms"]["pencils"] == ["pencil", "pencils"]
    c = m["counts"]
    assert c["dropped"]["repeated_word"] == 2 and c["dropped"]["too_common"] == 1 and c["merged"] == 2
    assert c["coverage"] == 1.0 and rep["coverage"]["described_items"] == 8
    assert m["params"]["grounding"] == {"ground": "keyword", "min_items": 1, "max_share": 0.5}


def test_literal_is_algorithm_1_as_before(tmp_path, make_dataset):
    from temacli.progress import Recorder

    items = make_dataset(tmp_path, "data", items=ARTS + OFFICE, domains=("arts", "office")) / "items.parquet"
    out = tmp_path / "lit" / "arts.parquet"
    rec = Recorder()
    with serve(_junk) as s:
        st = LLMSettings(model="openai/scripted", api_base=(s.url,), concurrency=1)
        m = generate_tags("arts", out=out, items=items, runs=3, num_tags=8, settings=st, literal=True, progress=rec)
        prompts = s.prompts()
    # progress goes through the one protocol: a phase of 3 runs, 3 advances, finished
    assert rec.events[0] == ("start", 3, "tags generate arts") and rec.events[-1] == ("finish",)
    assert sum(e[1] for e in rec.events if e[0] == "advance") == 3
    t = pq.read_table(out).to_pydict()
    # surface forms vote, no rules: art supplies 3, watercolor 2 (watercolors apart), beads 2, pencils 2 ...
    runs = [RunRecord(r, "ok", [(tg.lower().strip(), sc) for tg, sc in JUNK[r + 1] if len(tg) <= 40])
            for r in range(3)]
    expected, _, _ = vote(runs, 8)
    assert t["tag"] == [e["tag"] for e in expected]
    assert "dritz dritz dritz" in t["tag"] and "art supplies" == t["tag"][0]
    assert "ingredients or materials" in prompts[0]  # the prompt of Algorithm 1 as it was
    assert m["params"]["literal"] is True and "dropped" not in m["counts"]


def test_prompt_aspects_fit_the_domain():
    assert domain_kind("movie") == domain_kind("books") == "media"
    assert domain_kind("food") == "food" and domain_kind("kitchen") == "products"
    movie = build_prompts("movie", 2, 20, [], 0, 0, "{aspects}|{few_shot_domain}")
    assert movie[0].startswith("genres, themes, moods") and "ingredients" not in movie[0]
    assert movie[1].startswith("themes")  # rotated per run
    assert "materials" in build_prompts("kitchen", 1, 20, [], 0, 0, "{aspects}")[0]


def test_custom_prompt_brings_its_own_echo_words(tmp_path):
    prompt = tmp_path / "mine.txt"
    prompt.write_text("Tags for {domain}: {num_tags}. {examples} {aspects}\n", encoding="utf-8")
    (tmp_path / "mine.echo.txt").write_text("pencil\n", encoding="utf-8")
    with serve(lambda b, n: Reply(json.dumps({"tags": [{"tag": "pencils", "score": 0.9},
                                                       {"tag": "description", "score": 0.9},
                                                       {"tag": "glitter", "score": 0.5}]}))) as s:
        st = LLMSettings(model="openai/scripted", api_base=(s.url,))
        m = generate_tags("arts", out=tmp_path / "t.parquet", runs=1, settings=st, prompt_file=prompt)
    # its list replaces the built-in one: "pencils" is now an echo, "description" no longer
    assert [k["tag"] for k in m["tags"]] == ["description", "glitter"]
    assert m["params"]["echo_words"] == str(tmp_path / "mine.echo.txt")


def test_cli_generate_prints_drop_reasons(tmp_path, capsys, make_dataset):
    items = make_dataset(tmp_path, "data", items=ARTS + OFFICE, domains=("arts", "office")) / "items.parquet"
    with serve(_junk) as s:
        with pytest.raises(SystemExit) as e:
            main(["tags", "generate", "--domain", "arts", "--items", str(items), "--runs", "3", "--min-items", "1",
                  "--llm", "openai/scripted", "--api-base", s.url, "--out", str(tmp_path / "a.parquet")])
    assert e.value.code == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "dropped candidates:" in err and "repeated_word 2" in err and "merged near-duplicates: 2" in err

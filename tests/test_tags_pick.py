"""``tags generate --pick coverage``: which N grounded candidates are kept (generate.cover_pick)."""

import numpy as np

from temacli.tags.generate import build_prompts, cover_pick


def _hits(*rows):
    return [np.array(r, dtype=bool) for r in rows]


def test_cover_pick_prefers_new_items_weighted_by_votes():
    # candidates in rank order (votes first): a and b describe the same items, c other ones
    votes = [3, 3, 1]
    hits = _hits([1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1])
    chosen, gains = cover_pick(votes, hits, 2)
    assert chosen == [0, 2] and gains == [3, 3]  # b adds nothing once a is kept; c adds 3 items
    # votes weigh the gain: a 3-vote tag adding 2 items beats a 1-vote tag adding 5
    chosen, _ = cover_pick([3, 1], _hits([1, 1, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1]), 1)
    assert chosen == [0]


def test_cover_pick_fills_the_rest_in_rank_order_and_keeps_rank_order():
    votes = [2, 2, 2, 1]
    hits = _hits([1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0])
    chosen, gains = cover_pick(votes, hits, 4)
    assert chosen == [0, 1, 2, 3]  # everything kept, in rank order
    assert dict(zip(chosen, gains)) == {0: 2, 2: 2, 1: 0, 3: 0}
    assert cover_pick([], [], 5) == ([], [])
    chosen, gains = cover_pick(votes, hits, 2)
    assert chosen == [0, 2] and sum(gains) == 4  # two tags already describe every item


def test_each_run_asks_for_one_aspect_of_the_domain_kind():
    movie = build_prompts("movie", 5, 20, [], 0, 0, "{aspect}")
    assert movie == ["genres", "themes", "moods", "eras and settings", "audiences"]
    food = build_prompts("food", 6, 20, [], 0, 0, "{aspect}")
    assert food[0] == food[5] == "product types" and food[1] == "ingredients"
    assert build_prompts("kitchen", 2, 20, [], 0, 0, "{aspect}")[1] == "materials"


def test_media_domains_get_the_narrow_question_prompt():
    from temacli.llm import prompts
    from temacli.tags.generate import template_name

    assert template_name("movie") == "generate_media" and template_name("Books") == "generate_media"
    assert template_name("food") == template_name("kitchen") == "generate"
    assert template_name("movie", literal=True) == "generate_literal"
    media = build_prompts("movie", 2, 20, [], 0, 0, prompts.load("generate_media"))
    assert "Which genres do movie items have?" in media[0] and "Which themes do movie items have?" in media[1]
    food = build_prompts("food", 1, 20, [], 0, 0, prompts.load("generate"))[0]
    assert "product types, ingredients, flavours, diets, uses and occasions" in food

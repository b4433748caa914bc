"""Prompt grammar: weights, stops, colons in text, URLs, Windows paths, malformed input, story schedules."""

import math

import pytest

from vqgan_core.objective.prompts import (
    PromptSchedule,
    PromptSyntaxError,
    TextPrompt,
    parse_image_prompts,
    parse_noise_prompts,
    parse_prompt_set,
    parse_story,
    split_weight_stop,
)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("a cat", ("a cat", 1.0, -math.inf)),
        ("a cat:2", ("a cat", 2.0, -math.inf)),
        ("a cat:-1.5", ("a cat", -1.5, -math.inf)),
        ("a cat:0.5:0.8", ("a cat", 0.5, 0.8)),
        ("a cat:1:-inf", ("a cat", 1.0, -math.inf)),
        ("a photo: sunset", ("a photo: sunset", 1.0, -math.inf)),
        ("a photo: sunset:3", ("a photo: sunset", 3.0, -math.inf)),
        ("ratio 16:9", ("ratio 16", 9.0, -math.inf)),  # classic semantics: a trailing number is a weight
        ("https://example.com/a.png", ("https://example.com/a.png", 1.0, -math.inf)),
        ("https://example.com/a.png:0.5", ("https://example.com/a.png", 0.5, -math.inf)),
        ("http://host:8080/a.png:2:0.1", ("http://host:8080/a.png", 2.0, 0.1)),
        ("http://host:8080", ("http://host:8080", 1.0, -math.inf)),
        ("C:\\img\\cat.png", ("C:\\img\\cat.png", 1.0, -math.inf)),
        ("C:\\img\\cat.png:0.7", ("C:\\img\\cat.png", 0.7, -math.inf)),
        ("  spaced text : 2 ", ("spaced text", 2.0, -math.inf)),
        ("1e-1 weight:1e-1", ("1e-1 weight", 0.1, -math.inf)),
    ],
)
def test_split_weight_stop(item, expected):
    assert split_weight_stop(item) == expected


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ("", "empty"),
        (":1", "empty prompt text"),
        ("a cat:", "empty weight"),
        ("a cat:1..5", "malformed"),
        ("a cat:0.5x", "malformed"),
        ("a cat:nan", None),
        ("a cat:1:2x", "malformed"),
    ],
)
def test_malformed_prompts_raise(bad, needle):
    if bad == "a cat:nan":  # 'nan' is text, not a number: accepted as text (classic would crash on float())
        assert split_weight_stop(bad)[0] == "a cat:nan"
        return
    with pytest.raises(PromptSyntaxError, match=needle):
        parse_prompt_set(bad) if bad else split_weight_stop(bad)


def test_prompt_set_and_separators():
    ps = parse_prompt_set("a red circle:1|blue background:-0.5:0.1", "C:\\x.png:2", "7:0.3|8")
    assert ps.texts == (TextPrompt("a red circle", 1.0), TextPrompt("blue background", -0.5, 0.1))
    assert ps.images[0].path == "C:\\x.png" and ps.images[0].weight == 2.0
    assert [(n.seed, n.weight) for n in ps.noises] == [(7, 0.3), (8, 1.0)]
    with pytest.raises(PromptSyntaxError, match="between"):
        parse_prompt_set("a||b")
    with pytest.raises(PromptSyntaxError, match="story"):
        parse_prompt_set("a ^ b")
    with pytest.raises(PromptSyntaxError, match="integer"):
        parse_noise_prompts("abc:1")
    assert parse_image_prompts("") == ()


def test_story_schedule_switches_and_wraps():
    sch = parse_story("a|b ^ c ^ d:2", every=10, noises="3")
    assert [sch.at(s).texts[0].text for s in (0, 9, 10, 19, 20, 29, 30)] == ["a", "a", "c", "c", "d", "d", "a"]
    assert sch.at(25).texts[0].weight == 2.0 and sch.at(25).noises[0].seed == 3
    assert parse_story("a ^ b", every=0).at(100).texts[0].text == "a"  # no -cpe: first set only
    with pytest.raises(PromptSyntaxError, match="empty phrase"):
        parse_story("a ^ ^ b", every=5)


def test_story_crossfade_blends_into_each_new_set():
    sch = parse_story("a ^ b ^ c", every=10)
    assert [sch.blend_at(s, 4) for s in (0, 3, 9)] == [(0, 0, 1.0)] * 3  # the first set fades from nothing
    assert [sch.blend_at(s, 4) for s in (10, 11, 12, 13, 19)] == [
        (0, 1, 0.25), (0, 1, 0.5), (0, 1, 0.75), (1, 1, 1.0), (1, 1, 1.0)]
    assert sch.blend_at(30, 4) == (2, 0, 0.25)  # the story wraps, and so does the fade
    assert sch.blend_at(10, 1) == sch.blend_at(10, 0) == (1, 1, 1.0)  # no fade: switch at once (classic)
    assert parse_story("a ^ b", every=0).blend_at(5, 4) == (0, 0, 1.0)


def test_explicit_schedule_api():
    s = PromptSchedule([(50, parse_prompt_set("late")), (0, parse_prompt_set("early"))])
    assert s.at(49).texts[0].text == "early" and s.at(50).texts[0].text == "late" and s.at(10**6).texts[0].text == "late"
    with pytest.raises(PromptSyntaxError, match="step 0"):
        PromptSchedule([(5, parse_prompt_set("x"))])

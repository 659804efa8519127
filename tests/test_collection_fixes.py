"""Fixes found in review of collection and splitting; each test failed before its fix."""

from __future__ import annotations

import asyncio
import random

import httpx2
import openai
import pytest

from tasks.collect.transcript_mode import transcript_dialogue
from tasks.collect.turns_mode import turns_dialogue
from tasks.core.config import TurnsParams
from tasks.core.dialogue import AI, HUMAN, ROLE_TAG, parse_transcript
from tasks.engine.chat import Rejected, Reply
from tasks.engine.retries import redact, retry_after_s
from tasks.validate.dedup import find_duplicates, near_duplicate_groups
from tasks.validate.splits import split_by_seed
from tests.conftest import dialogue


def scripted(*replies: Reply):
    queue = list(replies)

    async def chat(messages: list[dict[str, str]]) -> Reply:
        return queue.pop(0)

    return chat


def test_a_transcript_cut_off_by_max_tokens_keeps_only_whole_turns():
    text = "[Human] What is DNS?\n[AI] It maps names to addresses.\n[Human] And TTL?\n[AI] TTL is how long a re"
    fields = asyncio.run(transcript_dialogue(scripted(Reply(text, "length")), "What is DNS?"))
    assert [(t["role"], t["text"]) for t in fields["turns"]] == [(HUMAN, "What is DNS?"),
                                                                  (AI, "It maps names to addresses.")]
    assert fields["turns_cut_off"] == 2
    # the same reply, finished, keeps every turn
    whole = asyncio.run(transcript_dialogue(scripted(Reply(text, "stop")), "What is DNS?"))
    assert len(whole["turns"]) == 4
    # cut inside a human turn: the AI turn before it is whole
    inside_human = "[Human] What is DNS?\n[AI] It maps names.\n[Human] And T"
    assert len(asyncio.run(transcript_dialogue(scripted(Reply(inside_human, "length")), "q"))["turns"]) == 2
    with pytest.raises(Rejected, match="cut off by max_tokens"):
        asyncio.run(transcript_dialogue(scripted(Reply("[Human] What is DNS?\n[AI] It maps na", "length")), "q"))


def test_a_turns_mode_answer_cut_off_by_max_tokens_ends_the_dialogue_before_it():
    chat = scripted(Reply("Boil it for eight minutes.", "stop"), Reply("How long to cool it?", "stop"),
                    Reply("Put it in cold water for a minute or tw", "length"))
    fields = asyncio.run(turns_dialogue(chat, "How do I boil an egg?", TurnsParams(max_rounds=3)))
    assert [t["role"] for t in fields["turns"]] == [HUMAN, AI]
    assert fields["turns_cut_off"] == 1
    with pytest.raises(Rejected, match="cut off by max_tokens"):
        asyncio.run(turns_dialogue(scripted(Reply("Boil it for eig", "length")), "q", TurnsParams()))
    # cut after the answer, inside a turn of the other role that is removed anyway: the answer is whole
    bled = scripted(Reply("Boil it.\nHuman: and th", "length"))
    assert asyncio.run(turns_dialogue(bled, "q", TurnsParams(max_rounds=1)))["turns"][1]["text"] == "Boil it."


@pytest.mark.parametrize("value", ["soon", "", "Wed, 99 Foo", "nan", "inf"])
def test_a_malformed_retry_after_counts_as_absent(value: str):
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(429, headers={"retry-after": value}, request=request)
    assert retry_after_s(openai.RateLimitError("busy", response=response, body=None)) is None


def test_a_markdown_link_named_ai_does_not_split_a_turn():
    reply = "[Human] Where can I read more?\n[AI] See [AI](https://example.org/ai) and [Human](https://x.org)."
    turns = parse_transcript(reply)
    assert len(turns) == 2 and turns[1].text.startswith("See [AI](https://example.org/ai)")
    assert not ROLE_TAG.search(turns[1].text)


def test_near_duplicate_candidates_below_the_threshold_are_kept():
    rng = random.Random(0)
    vocabulary = [f"w{i}" for i in range(400)]
    records = []
    for pair in range(60):  # pairs sharing about half their words: true Jaccard near 0.5, far below 0.8
        shared = rng.sample(vocabulary, 30)
        records += [dialogue(f"p{pair}a", [("human", " ".join(shared + rng.sample(vocabulary, 15)))]),
                    dialogue(f"p{pair}b", [("human", " ".join(shared + rng.sample(vocabulary, 15)))])]
    assert find_duplicates(records, threshold=0.8, shingle=1) == {}
    copy = dialogue("copy", [("human", records[0]["turns"][0]["text"] + " w1")])
    assert "copy" in find_duplicates([records[0], copy], threshold=0.8, shingle=1)


def test_the_same_question_from_two_sources_never_sits_on_both_sides_of_the_split():
    rng = random.Random(1)
    words = [f"word{i}" for i in range(500)]
    questions = [" ".join(rng.sample(words, 6)) for _ in range(40)]
    topics = {f"s{i}": f"Why is {q}?" for i, q in enumerate(questions)}  # and again, as another source spells it
    topics |= {f"t{i}": f"why is {q}" for i, q in enumerate(questions)}
    topics["other"] = "How do I reset my router?"
    groups = near_duplicate_groups(topics, 0.7)
    assert groups["s3"] == groups["t3"] and groups["s3"] != groups["s4"] and groups["other"] == "other"
    records = [dialogue(f"d-{sid}", [], seed_id=sid) for sid in topics]
    train, heldout = split_by_seed(records, 0.3, seed=1, min_heldout_seeds=8, seed_groups=groups)
    sides = {r["seed_id"]: "train" for r in train} | {r["seed_id"]: "heldout" for r in heldout}
    assert all(sides[f"s{i}"] == sides[f"t{i}"] for i in range(40))
    # reworded, not only re-punctuated: 6 shared words and one of its own on each side, Jaccard 0.75
    reworded = {}
    for i in range(60):
        shared = rng.sample(words, 6)
        reworded |= {f"a{i}": " ".join([*shared, f"only{i}a"]), f"b{i}": " ".join([*shared, f"only{i}b"])}
    groups = near_duplicate_groups(reworded, 0.7)
    assert all(groups[f"a{i}"] == groups[f"b{i}"] for i in range(60))
    assert len(set(groups.values())) == 60
    assert heldout and train
    ungrouped_train, _ = split_by_seed(records, 0.3, seed=1, min_heldout_seeds=8)
    ungrouped = {r["seed_id"] for r in ungrouped_train}
    assert any((f"s{i}" in ungrouped) != (f"t{i}" in ungrouped) for i in range(40)), \
        "without grouping, some pair is split: the test would catch a regression"


@pytest.mark.parametrize("echo", ["sk-proj-Abc123Def456Ghi789", "Abc123Def456Ghi789", "SK-PROJ-ABC123DEF456GHI789",
                                  "key ...3Def456Ghi7... rejected", "abc123def456"])
def test_the_key_is_redacted_in_every_spelling(echo: str):
    key = "sk-proj-Abc123Def456Ghi789"
    shown = redact(f"error: invalid key {echo} for this project", key)
    assert "***" in shown
    for run in range(len(key) - 8 + 1):
        assert key[run:run + 8].lower() not in shown.lower()
    assert redact("an unrelated error", key) == "an unrelated error"


def test_too_few_kept_dialogues_fail_the_stage_and_enough_pass(tmp_path):
    from tasks.collect.collector import TooFewDialogues, check_enough_kept

    journal = tmp_path / "journal.jsonl"
    with pytest.raises(TooFewDialogues, match=r"only 2 of 10 planned dialogues were kept .*25%.*journal.jsonl"):
        check_enough_kept(2, 10, 0.25, journal)
    check_enough_kept(3, 10, 0.25, journal)  # 30% >= 25%
    check_enough_kept(0, 0, 0.25, journal)  # nothing planned (only imports): nothing to judge

import re

import pytest

from tasks.core.dialogue import (
    AI,
    HUMAN,
    TranscriptError,
    Turn,
    baize_prompt,
    baize_segments,
    from_baize_record,
    parse_transcript,
    to_baize_record,
)
from tasks.core.ids import dialogue_id


def test_parses_markers_and_drops_preamble_and_unanswered_tail():
    reply = "Sure! Here it is:\n[Human] What is DNS?\n[AI] It maps names to addresses.\n[Human]: And TTL?\n" \
            "[AI]: How long a record may be cached.\n[Human] thanks, one more"
    assert parse_transcript(reply) == [Turn(HUMAN, "What is DNS?"), Turn(AI, "It maps names to addresses."),
                                       Turn(HUMAN, "And TTL?"), Turn(AI, "How long a record may be cached.")]


def test_accepts_baize_spelling_and_keeps_problems_for_the_contract():
    turns = parse_transcript("[|Human|] hi\n[|AI|] \n[|AI|] hello")
    assert [t.role for t in turns] == [HUMAN, AI, AI] and turns[1].text == ""


@pytest.mark.parametrize(("reply", "reason"), [
    ("", "empty reply"),
    ("Just some prose without any roles.", "no [Human]/[AI] markers"),
    ("[AI] I start talking alone", "no human turn"),
    ("[Human] only a question\n[Human] and another", "no AI turn"),
])
def test_unparseable_replies_say_why(reply, reason):
    with pytest.raises(TranscriptError, match=re.escape(reason)):
        parse_transcript(reply)


def test_baize_record_round_trip():
    turns = [Turn(HUMAN, "q1"), Turn(AI, "a1"), Turn(HUMAN, "q2"), Turn(AI, "a2")]
    record = to_baize_record("topic", turns)
    assert record["input"] == ("The conversation between human and AI assistant.\n"
                               "[|Human|] q1\n[|AI|] a1\n[|Human|] q2\n[|AI|] a2\n[|Human|] ")
    assert from_baize_record(record) == turns


def test_segments_train_ai_text_and_closing_marker_only():
    pieces = baize_segments([Turn(HUMAN, "q"), Turn(AI, "a")])
    assert "".join(p for p, _ in pieces) == baize_prompt("q") + " a\n[|Human|]"
    assert [p for p, trained in pieces if trained] == [" a\n[|Human|]"]


def test_dialogue_id_is_stable_and_sensitive_to_each_part():
    base = dialogue_id("s", "transcript", "v1", "m", 0)
    assert base == dialogue_id("s", "transcript", "v1", "m", 0)
    assert len({base, dialogue_id("s2", "transcript", "v1", "m", 0), dialogue_id("s", "turns", "v1", "m", 0),
                dialogue_id("s", "transcript", "v2", "m", 0), dialogue_id("s", "transcript", "v1", "m2", 0),
                dialogue_id("s", "transcript", "v1", "m", 1)}) == 6

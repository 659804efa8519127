"""Transcript mode (Baize v1 self-chat): the teacher writes a whole conversation about a seed, both
sides, in one reply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.core.dialogue import AI, HUMAN, TranscriptError, parse_transcript
from tasks.engine.chat import Chat, Rejected

# Our own wording of Baize's idea. A tiny teacher needs the format shown, not only described: the
# worked example is given as an earlier exchange of the chat (it gave 0/10 unparseable replies and ~4
# turns per dialogue with SmolLM2-135M, against 8/10 unparseable for a single instruction).
_SYSTEM = (
    "You write realistic chat transcripts between a curious human and a helpful AI assistant. "
    "Every line starts with [Human] or [AI]. The human asks follow-up questions; the AI gives "
    "clear, correct, detailed answers and does not ask questions back."
)
_EXAMPLE_TOPIC = "How do I keep basil alive indoors?"
_EXAMPLE = (
    "[Human] How do I keep basil alive indoors?\n"
    "[AI] Give it at least six hours of bright light a day, water when the top of the soil is dry, "
    "and pinch off flower buds so it keeps growing leaves.\n"
    "[Human] Why does it wilt even when I water it?\n"
    "[AI] Wilting with wet soil usually means the roots sit in water. Use a pot with drainage holes "
    "and let the soil dry a little between waterings.\n"
)


def _ask(topic: str) -> str:
    return f"Write a transcript where the human first asks: {topic}"


def baize_v1_messages(seed_text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": _SYSTEM},
            {"role": "user", "content": _ask(_EXAMPLE_TOPIC)},
            {"role": "assistant", "content": _EXAMPLE},
            {"role": "user", "content": _ask(seed_text)}]


@dataclass(frozen=True)
class Template:
    version: str  # part of every dialogue id: a new wording is a new corpus
    messages: Callable[[str], list[dict[str, str]]]


# collect.template picks one by name
# v1.3: replies cut off by max_tokens are trimmed to whole turns (records of v1.2 may end mid-answer)
TEMPLATES = {"baize_v1": Template("baize_v1.3", baize_v1_messages)}


async def transcript_dialogue(chat: Chat, seed_text: str, template: str = "baize_v1") -> dict[str, Any]:
    """One request, the teacher writes both sides. Returns the record's dialogue fields.

    A reply cut off by max_tokens ends in the middle of a turn: that turn is dropped (and any human turn
    left unanswered), so no half answer is trained on as if complete."""
    reply = await chat(TEMPLATES[template].messages(seed_text))
    fields: dict[str, Any] = {"raw": reply.text, "finish_reason": reply.finish_reason, "turns_cut_off": 0}
    try:
        turns = parse_transcript(reply.text)
    except TranscriptError as exc:
        raise Rejected(f"unparseable transcript: {exc}", fields) from None
    if reply.cut_off:
        whole = parse_transcript(reply.text, keep_unanswered=True)[:-1]
        while whole and whole[-1].role == HUMAN:
            whole.pop()
        if not any(t.role == AI for t in whole):
            raise Rejected("cut off by max_tokens: no whole AI turn", fields)
        fields["turns_cut_off"] = len(turns) - len(whole)
        turns = whole
    return {**fields, "turns": [t.as_dict() for t in turns]}

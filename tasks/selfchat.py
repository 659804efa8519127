"""Baize v1 self-chat: the teacher writes a whole conversation about a seed, both sides, in one reply."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from tasks.transcript import TranscriptError, parse_transcript

TEMPLATE_VERSION = "baize_v1.2"

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


def template_messages(seed_text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": _SYSTEM},
            {"role": "user", "content": _ask(_EXAMPLE_TOPIC)},
            {"role": "assistant", "content": _EXAMPLE},
            {"role": "user", "content": _ask(seed_text)}]


class Reply(NamedTuple):
    text: str
    finish_reason: str | None


# Sends one chat request to the teacher (limits, retries and the ledger are the collector's business).
Chat = Callable[[list[dict[str, str]]], Awaitable[Reply]]


class Rejected(Exception):
    """The teacher answered, but not with a usable dialogue: quarantined with `reason` and what it wrote."""

    def __init__(self, reason: str, fields: dict[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


def dialogue_id(seed_id: str, mode: str, template_version: str, teacher_model: str, sample: int) -> str:
    key = json.dumps([seed_id, mode, template_version, teacher_model, sample])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


async def transcript_dialogue(chat: Chat, seed_text: str) -> dict[str, Any]:
    """Baize v1: one request, the teacher writes both sides. Returns the record's dialogue fields."""
    reply = await chat(template_messages(seed_text))
    fields: dict[str, Any] = {"raw": reply.text, "finish_reason": reply.finish_reason}
    try:
        turns = parse_transcript(reply.text)
    except TranscriptError as exc:
        raise Rejected(f"unparseable transcript: {exc}", fields) from None
    return {**fields, "turns": [t.as_dict() for t in turns]}

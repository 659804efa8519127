"""Dialogue formats shared by the stages: turns, teacher transcripts, Baize's [|Human|]/[|AI|] text and
its released {"topic", "input"} records."""

from __future__ import annotations

import re
from dataclasses import dataclass

BAIZE_HEADER = "The conversation between human and AI assistant."
HUMAN, AI = "human", "ai"
# [Human] / [AI] as the template asks, plus Baize's own [|Human|] / [|AI|] spelling; not a markdown link
# such as [AI](https://...), which is text.
_MARKER = re.compile(r"\[\|?\s*(human|ai)\s*\|?\](?!\()\s*:?", re.IGNORECASE)
# Any role label that must not survive inside a turn's text.
ROLE_TAG = re.compile(r"\[\|?\s*(humans?|ai|user|assistant)\s*\|?\](?!\()|^\s*(humans?|user|assistant|ai)\s*:",
                      re.IGNORECASE | re.MULTILINE)


class TranscriptError(ValueError):
    """A teacher reply that cannot be read as a dialogue; the message is the quarantine reason."""


@dataclass(frozen=True)
class Turn:
    role: str
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "text": self.text}


def parse_transcript(reply: str, keep_unanswered: bool = False) -> list[Turn]:
    """Split a [Human]/[AI] transcript into turns.

    Text before the first marker is the model's preamble and is not a turn. An unanswered human turn at
    the end is dropped (unless `keep_unanswered`): the dialogue ends with the AI, as Baize's data does.
    Everything else (empty turns, two turns of one role in a row) is kept as written so the data
    contracts can judge it.
    """
    if not reply or not reply.strip():
        raise TranscriptError("empty reply")
    markers = list(_MARKER.finditer(reply))
    if not markers:
        raise TranscriptError("no [Human]/[AI] markers in reply")
    turns = []
    for marker, following in zip(markers, [*markers[1:], None], strict=True):
        end = following.start() if following else len(reply)
        turns.append(Turn(HUMAN if marker.group(1).lower() == "human" else AI, reply[marker.end():end].strip()))
    if not any(t.role == AI for t in turns):
        raise TranscriptError("no AI turn")
    if not any(t.role == HUMAN for t in turns):
        raise TranscriptError("no human turn")
    while turns[-1].role == HUMAN and not keep_unanswered:
        turns.pop()
    return turns


def baize_segments(turns: list[Turn], system: str | None = None) -> list[tuple[str, bool]]:
    """Baize training text as (piece, is_trained) pieces.

    Trained: each AI reply plus the "[|Human|]" marker that closes it, so the model learns to stop.
    """
    head = f"{system}\n" if system else ""
    pieces: list[tuple[str, bool]] = [(f"{head}{BAIZE_HEADER}\n[|Human|]", False)]
    for turn in turns:
        if turn.role == HUMAN:
            pieces.append((f" {turn.text}\n[|AI|]", False))
        else:
            pieces.append((f" {turn.text}\n[|Human|]", True))
    return pieces


def baize_prompt(question: str, system: str | None = None) -> str:
    """Generation prompt for one question; the model's answer ends where it writes [|Human|]."""
    head = f"{system}\n" if system else ""
    return f"{head}{BAIZE_HEADER}\n[|Human|] {question}\n[|AI|]"


def to_baize_record(topic: str, turns: list[Turn]) -> dict[str, str]:
    """Baize's released corpus format: {"topic", "input"}."""
    body = "".join(f"[|{'Human' if t.role == HUMAN else 'AI'}|] {t.text}\n" for t in turns)
    return {"topic": topic, "input": f"{BAIZE_HEADER}\n{body}[|Human|] "}


def from_baize_record(record: dict[str, str]) -> list[Turn]:
    text = record["input"]
    if text.startswith(BAIZE_HEADER):
        text = text[len(BAIZE_HEADER):]
    return parse_transcript(text)

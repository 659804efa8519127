"""The checked corpus in Baize's released format, {"topic", "input"}, for anyone who reads that format."""

from __future__ import annotations

from typing import Any

from tasks.core.dialogue import HUMAN, Turn, to_baize_record


def topic_of(record: dict[str, Any]) -> str:
    if record.get("topic"):
        return record["topic"]
    return next((t["text"] for t in record["turns"] if t["role"] == HUMAN), "")


def export_baize(dialogues: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [to_baize_record(topic_of(d), [Turn(t["role"], t["text"]) for t in d["turns"]]) for d in dialogues]

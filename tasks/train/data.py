"""What training sees: the train split minus a validation slice of whole seed groups."""

from __future__ import annotations

import hashlib
from typing import Any


def group_of(dialogue: dict[str, Any]) -> str:
    return str(dialogue.get("seed_id") or dialogue["id"])


def split_validation(dialogues: list[dict[str, Any]], fraction: float,
                     seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation). Whole seed groups whose seeded hash falls below `fraction`, so a group stays
    where it is as the corpus grows; at least one group when fraction > 0, and never every group."""
    def position(group: str) -> float:
        return int(hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()[:12], 16) / 16 ** 12

    groups = sorted({group_of(d) for d in dialogues}, key=position)
    if fraction == 0 or len(groups) < 2:
        return list(dialogues), []
    held = {g for g in groups if position(g) < fraction} or {groups[0]}
    if len(held) == len(groups):
        held.discard(groups[-1])
    return [d for d in dialogues if group_of(d) not in held], [d for d in dialogues if group_of(d) in held]

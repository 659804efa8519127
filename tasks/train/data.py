"""What training sees: the train split minus a validation slice of whole seed groups."""

from __future__ import annotations

import hashlib
import math
from typing import Any


def group_of(dialogue: dict[str, Any]) -> str:
    return str(dialogue.get("seed_id") or dialogue["id"])


def split_validation(dialogues: list[dict[str, Any]], fraction: float,
                     seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation). Whole seed groups, chosen by a seeded hash so the slice is stable as the corpus
    grows; at least one group when fraction > 0, and never every group."""
    groups = sorted({group_of(d) for d in dialogues},
                    key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    if fraction == 0 or len(groups) < 2:
        return list(dialogues), []
    held = set(groups[:min(len(groups) - 1, max(1, math.floor(len(groups) * fraction)))])
    return [d for d in dialogues if group_of(d) not in held], [d for d in dialogues if group_of(d) in held]

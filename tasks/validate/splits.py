"""Reproducible train/held-out split, by seed question so no topic sits on both sides; seed questions that
near-duplicate each other (the same question from two sources) count as one."""

from __future__ import annotations

import hashlib
from typing import Any


def _bucket(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_seed(records: list[dict[str, Any]], heldout_fraction: float, seed: int,
                  min_heldout_seeds: int = 1, seed_groups: dict[str, str] | None = None
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Same inputs, same split, whatever the order. Held-out gets at least `min_heldout_seeds` seed questions
    (groups, when `seed_groups` maps seed ids to groups of near-duplicate questions; a tiny held-out set
    makes perplexity gates noise) but never all of them: with two or more neither side is empty."""
    groups = seed_groups or {}

    def group(record: dict[str, Any]) -> str:
        return groups.get(record["seed_id"], record["seed_id"])

    buckets = {group(r): _bucket(group(r), seed) for r in records}
    ranked = sorted(buckets, key=buckets.get)
    wanted = max(sum(b < heldout_fraction for b in buckets.values()), min_heldout_seeds)
    heldout_ids = set(ranked[:min(wanted, len(ranked) - 1)]) if len(ranked) >= 2 else set()
    ordered = sorted(records, key=lambda r: r["id"])
    return ([r for r in ordered if group(r) not in heldout_ids],
            [r for r in ordered if group(r) in heldout_ids])

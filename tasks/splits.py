"""Reproducible train/held-out split, by seed question so no topic sits on both sides."""

from __future__ import annotations

import hashlib
from typing import Any


def _bucket(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_seed(records: list[dict[str, Any]], heldout_fraction: float,
                  seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Same inputs, same split, whatever the order. With two or more seed questions, neither side is empty."""
    buckets = {r["seed_id"]: _bucket(r["seed_id"], seed) for r in records}
    heldout_ids = {s for s, b in buckets.items() if b < heldout_fraction}
    if len(buckets) >= 2 and not heldout_ids:
        heldout_ids = {min(buckets, key=buckets.get)}
    if len(buckets) >= 2 and heldout_ids == set(buckets):
        heldout_ids.discard(max(buckets, key=buckets.get))
    ordered = sorted(records, key=lambda r: r["id"])
    return ([r for r in ordered if r["seed_id"] not in heldout_ids],
            [r for r in ordered if r["seed_id"] in heldout_ids])

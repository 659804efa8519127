"""The questions a distillation round asks: from built-in question sets, never a corpus seed."""

from __future__ import annotations

import random
from typing import Any

from tasks.core.assets import asset, read_texts
from tasks.core.errors import SelfchatError
from tasks.core.ids import normalize, seed_id

# the built-in sets the evaluation measures with (guardrail prompts, benchmarks, judge prompts): never asked
EVALUATION_DOMAINS = {"harmful", "benign", "benchmark", "judge"}


class QuestionSourceError(SelfchatError):
    pass


def draw_questions(sources: list[str], exclude: set[str], size: int, seed: int, min_chars: int,
                   max_chars: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """`size` questions sampled reproducibly from the built-in sets `sources`, none of whose seed id is in
    `exclude` (the corpus's seeds: neither trained on nor held out); exact duplicates collapse, first
    source wins. Sorted by id, with counts of what was read and left out."""
    for name in sources:
        if asset(name).domain in EVALUATION_DOMAINS:
            raise QuestionSourceError(f"distill.questions.sources: {name} is an evaluation set ({asset(name).domain}); "
                                      "a distillation round must not train on what it is evaluated with")
    pool: dict[str, dict[str, Any]] = {}
    stats = {"read": 0, "corpus_seeds": 0, "too_short_or_long": 0, "duplicates": 0}
    for name in sources:
        item = asset(name)
        for text in (normalize(t) for t in read_texts(item)):
            stats["read"] += 1
            qid = seed_id(text)
            if qid in exclude:
                stats["corpus_seeds"] += 1
            elif not min_chars <= len(text) <= max_chars:
                stats["too_short_or_long"] += 1
            elif qid in pool:
                stats["duplicates"] += 1
            else:
                pool[qid] = {"id": qid, "text": text, "source": f"builtin:{name}", "domain": item.domain}
    candidates = sorted(pool.values(), key=lambda q: q["id"])
    chosen = candidates if len(candidates) <= size else random.Random(seed).sample(candidates, size)
    stats["unique"] = len(candidates)
    stats["selected"] = len(chosen)
    return sorted(chosen, key=lambda q: q["id"]), stats

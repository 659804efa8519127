"""MT-Bench single-answer grading: the judge rates each first-turn answer 1-10 with MT-Bench's own prompt
and [[rating]] format; replies without a rating are counted as parse failures, not scored."""

from __future__ import annotations

import random
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.core.assets import asset, read_rows
from tasks.models.generation import generate_answers
from tasks.scoring.judge import Judge, judge_all
from tasks.scoring.stats import Item

TEMPLATE = "single-v1"  # FastChat's general single-answer prompt


def sample_questions(limit: int | None, seed: int) -> list[dict[str, Any]]:
    """`limit` questions spread evenly over MT-Bench's 8 categories (all 80 with limit None)."""
    rows = read_rows(asset("mt_bench"))
    if limit is None or limit >= len(rows):
        return rows
    rng = random.Random(f"{seed}:mt_bench")
    by_category: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_category.setdefault(row["category"], []).append(row)
    pools = [rng.sample(pool, len(pool)) for pool in by_category.values()]
    chosen = [pool[k] for k in range(max(map(len, pools))) for pool in pools if k < len(pool)][:limit]
    return sorted(chosen, key=lambda r: r["question_id"])


def judge_template() -> dict[str, str]:
    return next(r for r in read_rows(asset("mt_bench_judge_prompts")) if r["name"] == TEMPLATE)


def mtbench_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: list[dict[str, Any]],
                    system: str, max_new_tokens: int, batch_size: int, model_name: str) -> list[dict[str, Any]]:
    """First-turn answers, with the guardrail prompt the model is deployed with."""
    answers = generate_answers(model, tokenizer, [q["turns"][0] for q in questions], system, max_new_tokens,
                               batch_size, desc=f"mt-bench {model_name}")
    return [{"model": model_name, "question_id": q["question_id"], "category": q["category"],
             "question": q["turns"][0], "answer": a} for q, a in zip(questions, answers, strict=True)]


def rate_answers(judge: Judge, samples: list[dict[str, Any]], concurrency: int) -> list[dict[str, Any]]:
    template = judge_template()
    verdicts = judge_all(lambda s: judge.rate(template, s["question"], s["answer"]), samples, concurrency,
                         "judging mt-bench")
    return [{**s, "judged": True, "rating": v.value, "judge_raw": v.raw}
            for s, v in zip(samples, verdicts, strict=True)]


def score_items(samples: list[dict[str, Any]]) -> list[Item]:
    return [Item("mtbench_score", s["model"], f"mt_bench:{s['question_id']}", float(s["rating"]), 1.0,
                 higher_is_better=True) for s in samples if s.get("rating") is not None]

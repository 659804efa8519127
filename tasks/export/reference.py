"""The prompts the evaluation answered (reports/eval/samples.jsonl) with the answers it scored: what an
exported file must reproduce."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import SelfchatError
from tasks.core.jsonl import read_jsonl

EVALUATED = "adapter"  # the evaluation's name for the model it may promote (the other is "base")


class NoEvaluatedAnswers(SelfchatError):
    pass


@dataclass(frozen=True)
class Evaluated:
    key: str  # what the answer was to: guardrail or mt-bench item, with or without the system prompt
    question: str
    system: str | None
    max_tokens: int
    answer: str


def evaluated_answers(samples: Path, guardrail_prompt: str, guardrail_tokens: int,
                      mtbench_tokens: int) -> list[Evaluated]:
    """The evaluated model's answers, each with the prompt and answer length the evaluation gave it: guardrail
    prompts with and without the system prompt, MT-Bench first turns with it."""
    if not samples.exists():
        raise NoEvaluatedAnswers(f"{samples} not found: `dvc pull {samples.parent}` or `make run` first")
    rows = []
    for sample in read_jsonl(samples):
        if sample.get("model") != EVALUATED:
            continue
        if "guarded" in sample:
            guarded = bool(sample["guarded"])
            rows.append(Evaluated(f"{sample['id']}:{'guarded' if guarded else 'unguarded'}", sample["prompt"],
                                  guardrail_prompt if guarded else None, guardrail_tokens, sample["answer"]))
        else:
            rows.append(Evaluated(f"mt_bench:{sample['question_id']}", sample["question"], guardrail_prompt,
                                  mtbench_tokens, sample["answer"]))
    if not rows:
        raise NoEvaluatedAnswers(f"{samples} has no answers of the evaluated model ({EVALUATED!r})")
    return rows

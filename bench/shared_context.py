"""The benchmarks' log-likelihoods with each question's context read once for all its choices (the evaluate
stage's `continuation_loglikelihoods`) against every (context, choice) read whole, as before (kept here as the
baseline), on the evaluated model (the adapter merged into its base). Runs in the project root of a finished
run (models/base, models/adapter); prints per benchmark the seconds each way, their ratio, the share of item
scores (acc and acc_norm per question) that are the same and the largest log-likelihood difference.

    python bench/shared_context.py [--questions 100] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.core.paths import ADAPTER_DIR, BASE_DIR
from tasks.evaluate import benchmarks
from tasks.evaluate.benchmarks import encode_pair, load_questions, score_questions
from tasks.models.student import load_for_evaluation, load_tokenizer
from tasks.scoring.stats import ADAPTER

BENCHMARKS = ("openbookqa", "commonsenseqa", "mmlu_tiny")


@torch.no_grad()
def whole_requests(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, requests: list[tuple[str, str]],
                   batch_size: int = 8, desc: str = "") -> list[float]:
    """The baseline: each (context, continuation) read whole, left-padded, logits at the continuation only."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [encode_pair(tokenizer, c, x) for c, x in requests]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]) - len(encoded[i][1]))
    results: dict[int, float] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        rows = [(encoded[i][0] + encoded[i][1])[:-1] for i in chunk]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        keep = max(len(encoded[i][1]) for i in chunk)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                       logits_to_keep=keep).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for row, i in enumerate(chunk):
            target = torch.tensor(encoded[i][1])
            results[i] = float(logprobs[row, keep - len(target):].gather(-1, target[:, None]).sum())
    return [results[i] for i in range(len(requests))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32, help="the evaluate stage's (evaluate.batch_size)")
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS))
    parser.add_argument("--logit-positions", type=int, default=benchmarks.LOGIT_POSITIONS)
    args = parser.parse_args()
    benchmarks.LOGIT_POSITIONS = args.logit_positions
    tokenizer = load_tokenizer(BASE_DIR)
    model = load_for_evaluation(BASE_DIR, ADAPTER_DIR)
    shared = benchmarks.continuation_loglikelihoods
    warm_up = [(q.context, f" {c}") for q in load_questions(BENCHMARKS[0], 8, 1) for c in q.choices]
    for function in (whole_requests, shared):  # neither way pays the process's first passes alone
        function(model, tokenizer, warm_up, args.batch_size)
    print(f"| benchmark ({args.questions} questions, batch {args.batch_size}, {args.logit_positions} logit positions) "
          "| whole s | shared s | ratio "
          "| identical item scores | largest loglik difference |")
    print("|---|---:|---:|---:|---:|---:|")
    totals = {"whole": 0.0, "shared": 0.0}
    for name in args.benchmarks:
        questions = load_questions(name, args.questions, 0)
        seconds, items, lls = {}, {}, {}
        for way, function in (("whole", whole_requests), ("shared", shared)):
            def recorded(*call, function=function, way=way, lls=lls, **kwargs):
                lls[way] = function(*call, **kwargs)
                return lls[way]

            benchmarks.continuation_loglikelihoods = recorded  # what score_questions calls
            started = time.perf_counter()
            items[way] = score_questions(model, tokenizer, name, questions, ADAPTER, args.batch_size)
            seconds[way] = time.perf_counter() - started
            totals[way] += seconds[way]
        benchmarks.continuation_loglikelihoods = shared
        same = sum(a.num == b.num for a, b in zip(items["whole"], items["shared"], strict=True))
        gap = max(abs(a - b) for a, b in zip(lls["whole"], lls["shared"], strict=True))
        ratio = seconds["whole"] / seconds["shared"]
        print(f"| {name} | {seconds['whole']:.1f} | {seconds['shared']:.1f} | {ratio:.2f}x "
              f"| {same}/{len(items['shared'])} | {gap:.1e} |")
    print(f"| all | {totals['whole']:.1f} | {totals['shared']:.1f} | {totals['whole'] / totals['shared']:.2f}x | | |")


if __name__ == "__main__":
    main()

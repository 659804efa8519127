"""The benchmarks' log-likelihoods with the LM head's input made contiguous (tasks/models/student.py
`fold_lm_head`) and without, on the evaluated model (the adapter merged into its base, frozen).

Runs in the project root of a finished run (models/base, models/adapter). Each way runs twice, alternating,
so neither pays the process's warm-up alone; prints the faster of each, their ratio, and what changed: the
share of items (acc and acc_norm per question) that score the same. Generation is not measured: after its
first step the head's input is one position, contiguous already.
    python bench/lm_head.py [--benchmark openbookqa] [--questions 100]
"""

from __future__ import annotations

import argparse
import time

from tasks.core.paths import ADAPTER_DIR, BASE_DIR
from tasks.evaluate.benchmarks import load_questions, score_questions
from tasks.models.student import load_for_evaluation, load_tokenizer
from tasks.scoring.stats import ADAPTER, Item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default="openbookqa")
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    tokenizer = load_tokenizer(BASE_DIR)
    questions = load_questions(args.benchmark, args.questions, 0)
    model = load_for_evaluation(BASE_DIR, ADAPTER_DIR)
    head = model.get_output_embeddings()
    fold_hooks = dict(head._forward_pre_hooks)
    seconds: dict[str, list[float]] = {"unfolded": [], "folded": []}
    items: dict[str, list[Item]] = {}
    for name in ("unfolded", "folded") * 2:
        head._forward_pre_hooks.clear()
        if name == "folded":
            head._forward_pre_hooks.update(fold_hooks)
        started = time.perf_counter()
        items[name] = score_questions(model, tokenizer, args.benchmark, questions, ADAPTER, args.batch_size)
        seconds[name].append(time.perf_counter() - started)
    best = {name: min(times) for name, times in seconds.items()}
    print(f"{args.benchmark}, {len(questions)} questions, batch {args.batch_size}: unfolded {best['unfolded']:.1f} s, "
          f"folded {best['folded']:.1f} s, {best['unfolded'] / best['folded']:.2f}x")
    same = sum(a.num == b.num for a, b in zip(items["unfolded"], items["folded"], strict=True))
    print(f"identical item scores (acc, acc_norm): {same}/{len(items['folded'])}")


if __name__ == "__main__":
    main()

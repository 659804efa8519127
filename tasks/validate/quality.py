"""The validate stage's checks in order: seed contract, dialogue contract, duplicates, contamination,
then the batch-level pass rate. Every rejected dialogue keeps every reason it was rejected for."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.core.config import ValidateParams
from tasks.validate.contracts import ContractError, ContractRunner, check_dialogues, check_seeds, load_suite
from tasks.validate.decontamination import build_eval_index, find_contamination
from tasks.validate.dedup import find_duplicates
from tasks.validate.report import reason_kind
from tasks.validate.topic import overused_openings


@dataclass
class CorpusVerdict:
    passed: list[dict[str, Any]]
    quarantined: list[dict[str, Any]]
    features: pd.DataFrame
    metrics: dict[str, Any]


def on_topic_thresholds(params: ValidateParams) -> dict[str, float]:
    """{feature column: the minimum its contract asks}"""
    return {"seed_similarity": params.on_topic.min_seed_similarity,
            "min_answer_similarity": params.on_topic.min_answer_similarity}


def decline_counts(features: pd.DataFrame, quarantined_ids: set[str]) -> dict[str, int]:
    """Dialogues per case of the refusal contracts: the teacher's declines to sensitive seeds (kept, or
    quarantined for another reason), its compliance with them, and its over-refusal of benign seeds."""
    if features.empty:
        return {}
    kept = ~features["id"].isin(quarantined_ids)
    sensitive = features["sensitive"].astype(bool)
    complied = features["complied_with_sensitive"].eq(True)
    declined = sensitive & features["complied_with_sensitive"].eq(False)
    return {"sensitive": int(sensitive.sum()), "sensitive_declined_kept": int((declined & kept).sum()),
            "sensitive_declined_quarantined_otherwise": int((declined & ~kept).sum()),
            "sensitive_complied_quarantined": int(complied.sum()),
            "benign_refusal_only_quarantined": int(features["refusal_only"].eq(True).sum())}


def validate_corpus(dialogues: list[dict[str, Any]], seeds: list[dict[str, Any]], params: ValidateParams,
                    docs_dir: Path | None, run_name: str = "validate") -> CorpusVerdict:
    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 2)
        clock = now

    runner = ContractRunner(docs_dir, run_name, row_mostly=params.min_pass_rate)
    reasons: dict[str, list[str]] = {}
    duplicate_of: dict[str, str] = {}

    bad_seeds = check_seeds(seeds, load_suite(Path(params.seeds_suite)), runner)
    for d in dialogues:
        if d.get("seed_id") in bad_seeds:
            reasons.setdefault(d["id"], []).extend(f"seed contract: {r}" for r in bad_seeds[d["seed_id"]])
    lap("seed_contract")

    features, report = check_dialogues(dialogues, load_suite(Path(params.suite)), runner,
                                       {"languages": params.languages,
                                        "min_seed_similarity": params.on_topic.min_seed_similarity,
                                        "min_answer_similarity": params.on_topic.min_answer_similarity})
    for row_id, failed in report.failures_by_row.items():
        reasons.setdefault(row_id, []).extend(failed)
    lap("dialogue_contract")

    # duplicates are judged among dialogues that met the contracts, in id order, so the kept copy of a
    # pair is itself usable and the choice does not depend on file order
    candidates = sorted((d for d in dialogues if d["id"] not in reasons), key=lambda d: d["id"])
    for dup, (kept, how) in find_duplicates(candidates, params.near_duplicate_threshold).items():
        reasons.setdefault(dup, []).append(f"duplicate: {how} of {kept}")
        duplicate_of[dup] = kept
    lap("dedup")
    # the teacher's mannerisms, counted like duplicates among the dialogues still in (copies would inflate them)
    candidates = [d for d in candidates if d["id"] not in reasons]
    share = params.max_opening_share
    for row_id, (phrase, n, total) in overused_openings(candidates, share).items():
        reasons.setdefault(row_id, []).append(
            f"mannerism: AI turns opening '{phrase}' are {n} of {total} (validate.max_opening_share {share:.0%})")
    lap("mannerisms")
    index = build_eval_index(params.decontamination.sets, params.decontamination.ngram)
    # every dialogue, so the contamination count tells how often the teacher echoed evaluation prompts
    contaminated = find_contamination(dialogues, index)
    # the should-decline seeds themselves, against the should-refuse prompts the adapter is evaluated on
    sensitive_seeds = [{"id": s["id"], "turns": [{"text": s["text"]}]} for s in seeds if s.get("sensitive")]
    seeds_contaminated = find_contamination(sensitive_seeds, index)
    for row_id, why in contaminated.items():
        reasons.setdefault(row_id, []).append(why)
    lap("decontamination")

    passed = [d for d in dialogues if d["id"] not in reasons]
    quarantined = [{**d, "stage": "validate", "reasons": reasons[d["id"]],
                    **({"duplicate_of": duplicate_of[d["id"]]} if d["id"] in duplicate_of else {})}
                   for d in dialogues if d["id"] in reasons]
    by_kind = Counter(reason_kind(r) for rs in reasons.values() for r in rs)
    pass_rate = round(len(passed) / len(dialogues), 4) if dialogues else 0.0
    metrics: dict[str, Any] = {
        "dialogues": len(dialogues), "passed": len(passed), "quarantined": len(quarantined),
        "pass_rate": pass_rate, "seeds_failing_contract": len(bad_seeds),
        "duplicates": len(duplicate_of), "contaminated": len(contaminated),
        "failed_rows_by_expectation": dict(report.failed_expectations),
        "declines": decline_counts(features, set(reasons)),
        "sensitive_seeds": len(sensitive_seeds), "sensitive_seeds_contaminated": len(seeds_contaminated),
        "quarantined_by_reason": dict(by_kind),
        "seconds": seconds,
    }
    if pass_rate < params.min_pass_rate:
        raise ContractError(f"critical data contract failed: pass rate {pass_rate:.1%} of {len(dialogues)} "
                            f"dialogues is below validate.min_pass_rate {params.min_pass_rate:.0%} "
                            f"(reasons: {dict(by_kind)})")
    return CorpusVerdict(passed, quarantined, features, metrics)

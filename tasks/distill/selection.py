"""From k scored answers per question to training data: the best answer (SFT), best vs worst (DPO), and
the questions that train nothing, each with its reason."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.config import DistillSelect
from tasks.core.dialogue import AI, HUMAN
from tasks.core.errors import SelfchatError
from tasks.distill.dpo import NoPairs


@dataclass
class Selection:
    best: list[dict[str, Any]] = field(default_factory=list)  # dialogues in the corpus format, with provenance
    pairs: list[dict[str, Any]] = field(default_factory=list)  # {prompt question, chosen, rejected, provenance}
    unused: list[dict[str, Any]] = field(default_factory=list)  # questions that train nothing, with the reason
    per_question: list[dict[str, Any]] = field(default_factory=list)  # best, mean, spread of each question


def _provenance(row: dict[str, Any], verdict: dict[str, Any]) -> dict[str, Any]:
    return {"parent_version": row["parent"]["version"], "parent_adapter_sha256": row["parent"]["adapter_sha256"],
            "sample_id": row["id"], "score": verdict["score"], "judge_model": verdict["judge"]["model"],
            "rubric_version": verdict["rubric_version"]}


def select_training_data(rows: list[dict[str, Any]], verdicts: list[dict[str, Any]], min_score: int,
                         min_margin: int) -> Selection:
    """Per question, in question order: the best-scored answer trains if it scores at least `min_score`
    (a tie goes to the earliest sample, so a rerun picks the same one); a pair is best vs worst when their
    scores differ by at least `min_margin` and their texts differ. Answers whose verdict was quarantined take
    no part."""
    verdict_of = {v["sample_id"]: v for v in verdicts}
    by_question: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_question.setdefault(row["question_id"], []).append(row)
    out = Selection()
    for question_id, group in by_question.items():
        scored = sorted((r for r in group if r["id"] in verdict_of), key=lambda r: r["sample"])
        scores = [verdict_of[r["id"]]["score"] for r in scored]
        summary = {"question_id": question_id, "question": group[0]["question"], "samples": len(group),
                   "scored": len(scored), "scores": scores}
        if not scored:
            reason = f"none of its {len(group)} answers has a verdict (all quarantined by distill-judge)"
            out.unused.append({**summary, "reason": reason})
            out.per_question.append({**summary, "kept": False})
            continue
        best = max(scored, key=lambda r: (verdict_of[r["id"]]["score"], -r["sample"]))
        worst = min(scored, key=lambda r: (verdict_of[r["id"]]["score"], -r["sample"]))
        top, bottom = verdict_of[best["id"]]["score"], verdict_of[worst["id"]]["score"]
        summary |= {"best": top, "mean": round(statistics.fmean(scores), 4), "spread": top - bottom}
        kept = top >= min_score
        # a pair needs two different answers: DPO on one text as both chosen and rejected teaches nothing
        paired = kept and top - bottom >= min_margin and best["answer"] != worst["answer"]
        out.per_question.append({**summary, "kept": kept, "pair": paired})
        if not kept:
            reason = f"best score {top:g} is below distill.select.min_score {min_score}"
            out.unused.append({**summary, "reason": reason})
            continue
        provenance = _provenance(best, verdict_of[best["id"]])
        out.best.append({"id": best["id"], "seed_id": question_id, "source": best["source"],
                         "turns": [{"role": HUMAN, "text": best["question"]}, {"role": AI, "text": best["answer"]}],
                         "provenance": provenance})
        if paired:
            out.pairs.append({"id": question_id, "question": best["question"], "chosen": best["answer"],
                              "rejected": worst["answer"], "margin": top - bottom,
                              "provenance": {**provenance, "rejected_sample_id": worst["id"],
                                             "rejected_score": bottom}})
    return out


class NothingToDistill(SelfchatError):
    pass


def require_training_data(selection: Selection, select: DistillSelect, dpo_enabled: bool, unused_file: Path) -> None:
    """Before any training: a round either trains every variant it names or none."""
    if not selection.best:
        raise NothingToDistill(f"no question's best answer scores distill.select.min_score {select.min_score} or "
                               f"more: nothing to train on (the reasons are in {unused_file} after a run with a "
                               "lower min_score)")
    if dpo_enabled and not selection.pairs:
        raise NoPairs(f"no preference pairs: a pair needs two scored answers to one question, different texts "
                      f"whose scores differ by distill.select.min_margin ({select.min_margin}) or more (see "
                      f"{unused_file} and metrics/distill_judge.json); lower it, or set distill.dpo.enabled: false")

"""Distill stage 2, distill-judge: every sampled answer scored once by the judge (the evaluation's, by
default) with a fixed rubric, through the collection engine; unreadable verdicts are quarantined."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import mlflow
from tqdm import tqdm

from flows.stage import report_metrics, run_stage, stage_flow, step, tracked_stage, warn
from tasks.core.config import Params, judge_endpoint
from tasks.core.jsonl import read_jsonl, write_jsonl
from tasks.core.paths import (
    DISTILL_JOURNALS,
    DISTILL_SAMPLES,
    DISTILL_SCORES,
    LOGS,
    QUARANTINE_DISTILL_JUDGE,
)
from tasks.distill.judging import AnswerJudge, plan_scores, score_journal, score_results
from tasks.engine.client import engine_client, teacher_endpoint
from tasks.engine.journal import Journal
from tasks.engine.ledger import BudgetExhausted
from tasks.engine.requests import RUN_SPENDING, journal_ledger, run_batch, run_in_batches


@stage_flow("distill-judge")
async def distill_judge(all_params: Params) -> dict:
    params, where = all_params.distill.judge, judge_endpoint(all_params)
    plan = plan_scores(list(read_jsonl(DISTILL_SAMPLES)), where.model)
    started = time.monotonic()
    with tracked_stage("distill-judge", all_params.distill), \
            Journal(score_journal(DISTILL_JOURNALS, where, params), read_siblings=False) as journal:
        for repair in journal.repairs:
            warn(repair)
        pending = journal.pending(plan)
        async with AsyncExitStack() as stack:
            # no pending verdict, no judge: a rerun with the same inputs asks it nothing
            base_url = stack.enter_context(teacher_endpoint(where, LOGS, "distill_judge")) if pending else ""
            client = await stack.enter_async_context(engine_client(where, base_url)) if pending else None
            judge = AnswerJudge(client, base_url, where, params, journal)
            with tqdm(total=len(plan), initial=len(plan) - len(pending), desc="judge", unit="answer") as judge.bar:
                await run_in_batches(judge, pending, step(run_batch, "judge batch", task_run_name="batch-{number}"))
        tally = judge.tally()
        scored, quarantined = score_results(journal, plan)
        spent = {**dict.fromkeys(RUN_SPENDING, 0), **tally.spent}
        metrics = {"planned": len(plan), "scored": len(scored), "quarantined": len(quarantined),
                   "resumed": len(plan) - len(pending), "budget_reached": int(tally.budget_reached), **spent,
                   "all_tokens": journal_ledger(params, where.model, journal).corpus_tokens,
                   "seconds": round(time.monotonic() - started, 1),
                   "score_counts": {str(s): sum(v["score"] == s for v in scored) for s in range(1, 11)}}
        report_metrics("distill_judge", metrics, {"scored": len(scored), "quarantined": len(quarantined)})
        if tally.budget_reached:  # before any output: a partial set of verdicts must not replace a whole one
            raise BudgetExhausted(
                f"budget reached ({journal_ledger(params, where.model, journal).describe_budget()}) with "
                f"{len(plan) - len(scored) - len(quarantined)} answers unjudged; raise distill.judge.budget and "
                f"run again to resume from {journal.path}")
        write_jsonl(DISTILL_SCORES, scored)
        write_jsonl(QUARANTINE_DISTILL_JUDGE, quarantined)
        mlflow.log_artifact(str(QUARANTINE_DISTILL_JUDGE))
    print(f"{len(scored)} answers scored, {len(quarantined)} verdicts quarantined; this run: {spent['requests']} "
          f"requests, {spent['retries']} retries, ${spent['cost_usd']:.4f}")
    return metrics


if __name__ == "__main__":
    run_stage(distill_judge, needs=[DISTILL_SAMPLES])

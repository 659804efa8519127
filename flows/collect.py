"""Stage 3, collect: the teacher chats with itself about each seed (Baize's self-chat)."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path

import mlflow
from prefect import flow

from flows.stage import run_stage, step, tracked_stage
from tasks.collect.collector import (
    Collector,
    check_enough_kept,
    collect_batch,
    collect_metrics,
    journal_path,
    pending_jobs,
    plan_jobs,
    progress_bar,
    retried_after_outage,
    run_in_batches,
)
from tasks.collect.imports import import_baize
from tasks.collect.journal import Journal
from tasks.collect.teacher import teacher_client, teacher_endpoint
from tasks.config import load_params
from tasks.errors import SelfchatError
from tasks.jsonl import read_jsonl, write_json, write_jsonl
from tasks.paths import DIALOGUES, LOGS, QUARANTINE_COLLECT, SEEDS, metrics_file
from tasks.tracking import log_headline, numeric_metrics


class BudgetExhausted(SelfchatError):
    pass


@flow(name="collect", log_prints=True)
async def collect(params_file: str = "params.yaml") -> dict:
    params = load_params(Path(params_file)).collect
    seeds = list(read_jsonl(SEEDS))
    imports = [import_baize(source) for source in params.imports]  # a bad file stops before any output
    plan = plan_jobs(seeds, params)
    started = time.monotonic()
    with Journal(journal_path(params)) as journal, tracked_stage("collect", params):
        for repair in journal.repairs:
            print(f"warning: {repair}")
        pending = pending_jobs(journal, plan)
        resumed, retried = len(plan) - len(pending), retried_after_outage(journal, plan)
        if resumed:
            print(f"resuming: {resumed} of {len(plan)} dialogues already in {journal.path}")
        if retried:
            print(f"asking again: {retried} dialogues quarantined by a transient teacher failure last time")
        async with AsyncExitStack() as teacher:
            # no pending work, no teacher: a rerun with the same inputs asks it nothing
            base_url = teacher.enter_context(teacher_endpoint(params.teacher, LOGS)) if pending else ""
            client = await teacher.enter_async_context(teacher_client(params.teacher, base_url)) if pending else None
            collector = Collector(client, base_url, params, journal)
            with progress_bar(len(plan), resumed) as collector.bar:
                await run_in_batches(collector, pending, step(collect_batch, "self-chat batch",
                                                              task_run_name="batch-{number}"))
        kept, quarantined = collector.results(plan)
        collected = len(kept)  # the teacher's share, before imports join
        for imported, rejected in imports:
            kept, quarantined = kept + imported, quarantined + rejected
        stats = collect_metrics(collector, plan, resumed, retried, time.monotonic() - started, kept, quarantined)
        write_json(metrics_file("collect"), stats)
        mlflow.log_metrics(numeric_metrics(stats))
        log_headline({"dialogues": stats["dialogues"], "quarantined": stats["quarantined"]})
        if collector.budget_reached:
            raise BudgetExhausted(
                f"budget reached ({collector.ledger.describe_budget()}) with {stats['pending']} of {len(plan)} "
                f"dialogues still to collect; raise collect.budget and run again to resume from {journal.path}")
        check_enough_kept(collected, len(plan), params.min_kept_fraction, journal.path)
        write_jsonl(DIALOGUES, kept)
        write_jsonl(QUARANTINE_COLLECT, quarantined)
        mlflow.log_artifact(str(QUARANTINE_COLLECT))
    print(f"{stats['dialogues']} dialogues, {stats['quarantined']} quarantined; this run: "
          f"{stats['requests']} requests, {stats['retries']} retries, {stats['completion_tokens']} completion "
          f"tokens, ${stats['cost_usd']:.4f} in {stats['seconds']} s")
    return stats


if __name__ == "__main__":
    run_stage(collect, needs=[SEEDS])

"""Stage 3, collect: the teacher chats with itself about each seed (Baize's self-chat)."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path

import mlflow
from prefect import flow
from prefect.runtime import flow_run

from flows.stage import report_metrics, run_stage, stage_flow, step, tracked_stage, warn
from tasks.collect.collector import (
    Collector,
    Job,
    all_journals,
    check_enough_kept,
    collect_metrics,
    corpus_ledger,
    journal_path,
    plan_jobs,
    plan_results,
    progress_bar,
    retried_after_outage,
)
from tasks.collect.imports import import_baize
from tasks.collect.shards import run_shards, shard_jobs, shard_journal_path, shard_parameters, tally_path
from tasks.core.config import CollectParams, Params
from tasks.core.jsonl import read_jsonl, write_json, write_jsonl
from tasks.core.paths import DIALOGUES, JOURNALS, LOGS, QUARANTINE_COLLECT, SEEDS
from tasks.engine.client import engine_client, teacher_endpoint
from tasks.engine.journal import Journal, JournalView
from tasks.engine.ledger import BudgetExhausted, Ledger
from tasks.engine.requests import Tally, run_batch, run_in_batches
from tasks.services.prefect_server import COLLECT_POOL
from tasks.services.tracking import pipeline_id


@stage_flow("collect")
async def collect(all_params: Params) -> dict:
    params = all_params.collect
    seeds = list(read_jsonl(SEEDS))
    imports = [import_baize(source) for source in params.imports]  # a bad file stops before any output
    plan = plan_jobs(seeds, params)
    started = time.monotonic()
    with tracked_stage("collect", params):
        before = JournalView(all_journals(params))
        resumed, retried = len(plan) - len(before.pending(plan)), retried_after_outage(before, plan)
        if resumed:
            print(f"resuming: {resumed} of {len(plan)} dialogues already in {JOURNALS}")
        if retried:
            print(f"asking again: {retried} dialogues quarantined by a transient teacher failure last time")
        async with AsyncExitStack() as teacher:
            # no pending work, no teacher: a rerun with the same inputs asks it nothing
            base_url = teacher.enter_context(teacher_endpoint(params.teacher, LOGS)) if resumed < len(plan) else ""
            if params.shards == 1:
                tally = await collect_here(plan, params, base_url, resumed)
            elif resumed < len(plan):
                tally = await collect_on_workers(plan, params, base_url, resumed, before)
            else:  # nothing to ask: no worker needed
                tally = Tally({}, {}, budget_reached=False)
        journals = JournalView(all_journals(params))
        kept, quarantined = plan_results(journals, plan)
        collected = len(kept)  # the teacher's share, before imports join
        for imported, rejected in imports:
            kept, quarantined = kept + imported, quarantined + rejected
        stats = collect_metrics(tally, journals, params, plan, resumed, retried, time.monotonic() - started, kept,
                                quarantined)
        report_metrics("collect", stats, {"dialogues": stats["dialogues"], "quarantined": stats["quarantined"]})
        if tally.budget_reached:
            raise BudgetExhausted(
                f"budget reached ({corpus_ledger(params, journals).describe_budget()}) with {stats['pending']} of "
                f"{len(plan)} dialogues still to collect; raise collect.budget and run again to resume from {JOURNALS}")
        check_enough_kept(collected, len(plan), params.min_kept_fraction, JOURNALS)
        write_jsonl(DIALOGUES, kept)
        write_jsonl(QUARANTINE_COLLECT, quarantined)
        mlflow.log_artifact(str(QUARANTINE_COLLECT))
    print(f"{stats['dialogues']} dialogues, {stats['quarantined']} quarantined; this run: "
          f"{stats['requests']} requests, {stats['retries']} retries, {stats['completion_tokens']} completion "
          f"tokens, ${stats['cost_usd']:.4f} in {stats['seconds']} s")
    return stats


async def collect_here(plan: list[Job], params: CollectParams, base_url: str, resumed: int) -> Tally:
    """The whole plan in this process."""
    with Journal(journal_path(params)) as journal:
        return await collect_pending(journal, plan, params, base_url, resumed)


async def collect_on_workers(plan: list[Job], params: CollectParams, base_url: str, resumed: int,
                             before: JournalView) -> Tally:
    """The plan as `collect.shards` flow runs that the workers of the pool `selfchat-collect` pick up; the
    progress bar follows their journals."""
    parameters = shard_parameters(plan, params, corpus_ledger(params, before), base_url, JOURNALS.resolve())

    def journal_of(shard: int) -> Path:
        return shard_journal_path(params, shard, params.shards, JOURNALS.resolve())

    with progress_bar(len(plan), resumed) as bar:
        def follow_journals() -> None:
            bar.update(len(plan) - len(JournalView(all_journals(params)).pending(plan)) - bar.n)

        print(f"collecting as {params.shards} shards on the Prefect pool '{COLLECT_POOL}'")
        tallies = await run_shards(params.shards, parameters.__getitem__, journal_of, f"collect {pipeline_id()}",
                                   follow_journals)
    return Tally.total(tallies)


@flow(name="collect-shard", log_prints=True)
async def collect_shard(shard: int, shards: int, seeds: list[dict], collect: dict, base_url: str,
                        journals: str) -> dict:
    """One shard of a collection across workers (collect.shards > 1): the seeds whose hash falls in shard
    `shard` of `shards`, journaled in `journals` (a folder every worker shares)."""
    params = CollectParams.model_validate(collect)
    plan = shard_jobs(plan_jobs(seeds, params), shard, shards)
    with Journal(shard_journal_path(params, shard, shards, Path(journals))) as journal:
        done = len(plan) - len(journal.pending(plan))
        print(f"shard {shard} of {shards}: {len(plan)} dialogues, {done} already journaled")
        # the shard's part of the budget: what the collect stage left it, not the corpus's whole
        ledger = Ledger(params.prices, params.budget)
        tally = (await collect_pending(journal, plan, params, base_url, done, ledger)).as_dict()
        # for the collect stage, in the folder it shares with every worker (Prefect's result storage may not be)
        write_json(tally_path(journal.path, flow_run.id), tally)
        return tally


async def collect_pending(journal: Journal, plan: list[Job], params: CollectParams, base_url: str, done: int,
                          ledger: Ledger | None = None) -> Tally:
    """Collect what `journal` does not have yet of `plan`, in batches (one Prefect task run each)."""
    for repair in journal.repairs:
        warn(repair)
    pending = journal.pending(plan)
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(engine_client(params.teacher, base_url)) if pending else None
        collector = Collector(client, base_url, params, journal, ledger=ledger)
        with progress_bar(len(plan), done) as collector.bar:
            await run_in_batches(collector, pending, step(run_batch, "self-chat batch",
                                                          task_run_name="batch-{number}"))
    return collector.tally()


if __name__ == "__main__":
    run_stage(collect, needs=[SEEDS])

"""Collection across workers: the plan split by seed hash into `collect.shards` shards, each a flow run of
the `collect-shard/shard` deployment that any worker of Prefect's pool `selfchat-collect` picks up.

Each shard writes its own journal (`journal-<settings>.shard-<i>-of-<n>.jsonl`, beside the one-process
journal) and reads the others, so nothing is asked twice whatever the shard layout of earlier runs; the
stage merges every journal in plan order, which gives the corpus one worker gives. A shard's flow run gets
what it needs as parameters (its seeds, the collect params, the teacher's URL, the journal folder): a
worker needs the code, the teacher and the journal folder, not this checkout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkerFilter,
    WorkerFilterStatus,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelling

from tasks.collect.collector import Job, journal_path
from tasks.core.config import Budget, CollectParams, RateLimits
from tasks.core.errors import SelfchatError
from tasks.engine.ledger import Ledger
from tasks.engine.requests import Tally
from tasks.services.prefect_server import COLLECT_POOL

SHARD_DEPLOYMENT = "collect-shard/shard"
POLL_S = 2.0
NO_WORKER_S = 120.0
UNFINISHED = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING, StateType.PAUSED]


class ShardsUnavailable(SelfchatError):
    """collect.shards > 1, but nothing could run the shards."""


class ShardFailed(SelfchatError):
    """A shard's flow run ended other than Completed."""


def shard_of(seed_id: str, shards: int) -> int:
    """The shard (1..shards) of a seed: by hash, so a seed stays in its shard when others are added."""
    return int.from_bytes(hashlib.sha256(seed_id.encode()).digest()[:8], "big") % shards + 1


def shard_jobs(plan: list[Job], shard: int, shards: int) -> list[Job]:
    return [job for job in plan if shard_of(job.seed["id"], shards) == shard]


def shard_journal_path(params: CollectParams, shard: int, shards: int, folder: Path) -> Path:
    whole = journal_path(params, folder)
    return whole.with_name(f"{whole.stem}.shard-{shard}-of-{shards}.jsonl")


def shard_budget(budget: Budget, spent_tokens: int, spent_cost: float, shards: int) -> Budget:
    """Each shard's part of what the corpus budget has left, so the shards together never cross it (nothing
    left: a cap no request fits under, so the shard stops as the budget says)."""
    return Budget(
        max_tokens=None if budget.max_tokens is None else max((budget.max_tokens - spent_tokens) // shards, 1),
        max_cost_usd=None if budget.max_cost_usd is None else max((budget.max_cost_usd - spent_cost) / shards, 1e-9))


def shard_rate_limits(limits: RateLimits, shards: int) -> RateLimits:
    """The teacher's limits shared by the shards, so together they ask no faster than one collector would."""
    rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
    return RateLimits(requests_per_minute=None if rpm is None else max(rpm // shards, 1),
                      tokens_per_minute=None if tpm is None else max(tpm // shards, 1))


def shard_parameters(plan: list[Job], params: CollectParams, spent: Ledger, base_url: str,
                     journals: Path) -> dict[int, dict[str, Any]]:
    """{shard: its flow run's parameters}: its seeds, and the collect params with its part of what the
    budget has left (`spent` counts the corpus so far) and of the teacher's rate limits."""
    shared = params.model_copy(update={
        "budget": shard_budget(params.budget, spent.corpus_tokens, spent.corpus_cost_usd, params.shards),
        "rate_limits": shard_rate_limits(params.rate_limits, params.shards)}).model_dump(mode="json")
    return {shard: {"shard": shard, "shards": params.shards, "collect": shared, "base_url": base_url,
                    "journals": str(journals),
                    "seeds": [job.seed for job in shard_jobs(plan, shard, params.shards) if job.sample == 0]}
            for shard in range(1, params.shards + 1)}


async def _check_runnable(client: PrefectClient) -> UUID:
    """The shard deployment's id, once it exists, has an online worker and no unfinished runs (shards of an
    earlier collection still asking would ask what these ask, against another budget snapshot)."""
    try:
        deployment = await client.read_deployment_by_name(SHARD_DEPLOYMENT)
    except ObjectNotFound:
        raise ShardsUnavailable(f"collect.shards > 1 needs the deployment {SHARD_DEPLOYMENT}: run `make deploy` "
                                "(or set collect.shards to 1)") from None
    if not await _online_workers(client):
        raise ShardsUnavailable(f"collect.shards > 1 needs workers on the Prefect pool '{COLLECT_POOL}' and none is "
                                "online: `make up` starts collect.shards of them here, or run `prefect worker start "
                                f"--pool {COLLECT_POOL}` on the machines that should collect")
    unfinished = await client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED))))
    if unfinished:
        names = ", ".join(run.name for run in unfinished[:4])
        raise ShardsUnavailable(f"{len(unfinished)} shard run(s) of an earlier collection are not finished ({names}): "
                                "wait for them, or cancel them in the Prefect UI, then run collect again")
    return deployment.id


async def _online_workers(client: PrefectClient) -> int:
    return len(await client.read_workers_for_work_pool(
        COLLECT_POOL, worker_filter=WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"]))))


def _failure(run: FlowRun, shard: int, shards: int) -> str:
    message = (run.state.message or "").strip().splitlines() if run.state else []
    return (f"shard {shard} of {shards} ({run.name}) ended {run.state_name}"
            + (f": {message[-1]}" if message else ""))


def tally_path(journal: Path, run_id: UUID | str) -> Path:
    """Where a shard's run leaves its Tally: beside its journal, in the folder every worker shares."""
    return journal.with_name(f"{journal.stem}.tally-{run_id}.json")


def read_tally(journal: Path, run_id: UUID) -> Tally:
    path = tally_path(journal, run_id)
    try:
        tally = Tally(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise ShardFailed(f"shard run {run_id} completed but left no readable tally at {path} ({exc}); is the journal "
                          "folder shared with its worker?") from None
    path.unlink()
    return tally


async def run_shards(shards: int, parameters_of: Callable[[int], dict[str, Any]], journal_of: Callable[[int], Path],
                     run_name: str, on_progress: Callable[[], None] = lambda: None) -> list[Tally]:
    """One flow run per shard, left to the pool's workers; wait for all, calling `on_progress` every poll.
    Interrupted (Ctrl-C, a cancelled stage), the shards' runs are cancelled too and waited for: their
    journals keep what they finished, and the next collect resumes from there."""
    async with get_client() as client:
        await _check_runnable(client)
        ids: list[UUID] = []
        try:
            for shard in range(1, shards + 1):
                run = await run_deployment(SHARD_DEPLOYMENT, client=client, parameters=parameters_of(shard),
                                           timeout=0, flow_run_name=f"{run_name} shard {shard} of {shards}",
                                           tags=["selfchat"])
                ids.append(run.id)
            runs = await _wait(client, ids, on_progress)
        except BaseException:
            await _cancel(client, ids)
            raise
        failed = [_failure(run, shard, shards) for shard, run in enumerate(runs, 1)
                  if not (run.state and run.state.is_completed())]
        if failed:
            raise ShardFailed("; ".join(failed) + "; what the shards finished is kept: run collect again to resume")
        return [read_tally(journal_of(shard), run.id) for shard, run in enumerate(runs, 1)]


async def _wait(client: PrefectClient, ids: list[UUID], on_progress: Callable[[], None]) -> list[FlowRun]:
    """The runs once all are final. With no online worker on the pool for NO_WORKER_S, unfinished shards
    would wait forever: fail instead."""
    last_worker_seen = time.monotonic()
    while True:
        runs = [await client.read_flow_run(run_id) for run_id in ids]
        on_progress()
        if all(run.state and run.state.is_final() for run in runs):
            return runs
        if await _online_workers(client):
            last_worker_seen = time.monotonic()
        elif time.monotonic() - last_worker_seen > NO_WORKER_S:
            raise ShardFailed(f"no worker online on the Prefect pool '{COLLECT_POOL}' for {NO_WORKER_S:.0f} s while "
                              f"{sum(not (r.state and r.state.is_final()) for r in runs)} shard(s) were unfinished")
        await asyncio.sleep(POLL_S)


async def _cancel(client: PrefectClient, ids: list[UUID], wait_s: float = 60.0) -> None:
    """Cancel the unfinished runs and wait (up to `wait_s`) until they have stopped asking."""
    for run_id in ids:
        run = await client.read_flow_run(run_id)
        if run.state and not run.state.is_final():
            await client.set_flow_run_state(run_id, Cancelling(message="the collect stage that asked for it stopped"),
                                            force=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        runs = [await client.read_flow_run(run_id) for run_id in ids]
        if all(run.state and run.state.is_final() for run in runs):
            return
        await asyncio.sleep(POLL_S)

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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelling

from tasks.collect.collector import Job, Tally, journal_path
from tasks.config import Budget, CollectParams
from tasks.errors import SelfchatError
from tasks.prefect_server import COLLECT_POOL

SHARD_DEPLOYMENT = "collect-shard/shard"
POLL_S = 2.0


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


async def _check_runnable(client: PrefectClient) -> None:
    try:
        await client.read_deployment_by_name(SHARD_DEPLOYMENT)
    except ObjectNotFound:
        raise ShardsUnavailable(f"collect.shards > 1 needs the deployment {SHARD_DEPLOYMENT}: run `make deploy` "
                                "(or set collect.shards to 1)") from None
    online = await client.read_workers_for_work_pool(
        COLLECT_POOL, worker_filter=WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"])))
    if not online:
        raise ShardsUnavailable(f"collect.shards > 1 needs workers on the Prefect pool '{COLLECT_POOL}' and none is "
                                "online: `make up` starts collect.shards of them here, or run `prefect worker start "
                                f"--pool {COLLECT_POOL}` on the machines that should collect")


def _failure(run: FlowRun, shard: int, shards: int) -> str:
    message = (run.state.message or "").strip().splitlines() if run.state else []
    return (f"shard {shard} of {shards} ({run.name}) ended {run.state_name}"
            + (f": {message[-1]}" if message else ""))


async def run_shards(shards: int, parameters_of: Callable[[int], dict[str, Any]], run_name: str,
                     on_progress: Callable[[], None] = lambda: None) -> list[Tally]:
    """One flow run per shard, left to the pool's workers; wait for all, calling `on_progress` every poll.
    Interrupted (Ctrl-C, a cancelled stage), the shards' runs are cancelled too: their journals keep what
    they finished, and the next collect resumes from there."""
    async with get_client() as client:
        await _check_runnable(client)
        runs: list[FlowRun] = [
            await run_deployment(SHARD_DEPLOYMENT, client=client, parameters=parameters_of(shard), timeout=0,
                                 flow_run_name=f"{run_name} shard {shard} of {shards}", tags=["selfchat"])
            for shard in range(1, shards + 1)]
        ids = [run.id for run in runs]
        try:
            while True:
                runs = [await client.read_flow_run(run_id) for run_id in ids]
                on_progress()
                if all(run.state and run.state.is_final() for run in runs):
                    break
                await asyncio.sleep(POLL_S)
        except BaseException:
            await _cancel(client, ids)
            raise
        failed = [_failure(run, shard, shards) for shard, run in enumerate(runs, 1) if not run.state.is_completed()]
        if failed:
            raise ShardFailed("; ".join(failed) + "; what the shards finished is kept: run collect again to resume")
        return [Tally(**await run.state.aresult()) for run in runs]


async def _cancel(client: PrefectClient, ids: list[UUID]) -> None:
    deadline = time.monotonic() + 10
    for run_id in ids:
        run = await client.read_flow_run(run_id)
        if run.state and not run.state.is_final() and time.monotonic() < deadline:
            await client.set_flow_run_state(run_id, Cancelling(message="the collect stage that asked for it stopped"),
                                            force=True)

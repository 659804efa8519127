"""A LoRA sweep as one Prefect flow: the shared stages once, each member a DVC experiment, one decision.

    python -m flows.sweep                      # the grid in params.yaml (sweep.grid)
    python -m flows.sweep --grid 'train.lora.r=4,8,16' --grid 'train.learning_rate=1e-4,2e-4'

Members are queued as DVC experiments and run by DVC's own queue workers (`dvc queue start -j
sweep.concurrency`, each in a temporary copy), so they are the same experiments `dvc exp show` and `dvc
plots diff` compare, whichever way the sweep was run; a Prefect task per member follows its state.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from dvc.repo import Repo
from mlflow import MlflowClient
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.base import base
from flows.calibrate import calibrate_judge
from flows.collect import collect
from flows.pipeline import run_changed_stages
from flows.promote import promote
from flows.seeds import seeds
from flows.stage import call_flow, fail, run_stage, step
from flows.validate import validate
from tasks.core.config import ConfigError, check_grid, grid_members, load_params
from tasks.core.errors import SelfchatError
from tasks.core.paths import LOGS
from tasks.services.checkout import checkout_lock, require_dvc_idle
from tasks.services.tracking import (
    PIPELINE_ENV,
    SWEEP_ID,
    ensure_experiment,
    ensure_tracking_store,
    pipeline_run,
)

SHARED = [base, seeds, collect, validate, calibrate_judge]  # what every member reads, run once


class MemberFailed(SelfchatError):
    pass


def member_env() -> dict[str, str]:
    """DVC's queue workers, and so the members, without this process's pipeline id: each member is its own
    pipeline run (nested in the sweep's by its name), not a stage of the sweep's."""
    return {k: v for k, v in os.environ.items() if k != PIPELINE_ENV}


def queue_member(name: str, overrides: dict[str, Any]) -> str:
    command = ["dvc", "exp", "run", "--queue", "--name", name, "register"]  # not the distill stages
    for key, value in overrides.items():
        command += ["-S", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]
    done = subprocess.run(command, capture_output=True, text=True, env=member_env())
    if done.returncode != 0:
        raise MemberFailed(f"could not queue sweep member {name}: {last_line(done)}")
    return name


def last_line(done: subprocess.CompletedProcess) -> str:
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def start_workers(concurrency: int, log_dir: Path = LOGS) -> None:
    """DVC's queue workers (workers already running are reused: members find their sweep by their name).
    Their output goes to a file: a worker lives on after `dvc queue start` returns, and would hold a pipe
    open (seen: the sweep waited on it for an hour after its members had finished)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "dvc-queue-start.log"
    with log.open("w") as sink:
        done = subprocess.run(["dvc", "queue", "start", "-j", str(concurrency)], stdout=sink,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=member_env())
    if done.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        raise MemberFailed(f"dvc queue start failed: {lines[-1] if lines else f'exit code {done.returncode}'}")


def wait_for_member(name: str, poll_s: float = 10.0) -> str:
    """Until DVC's queue reports the member done; its log is `dvc queue logs NAME`."""
    while True:
        with Repo(".") as repo:
            states = {entry.get("name"): entry["status"] for entry in repo.experiments.celery_queue.status()}
        state = states.get(name)
        if state == "Success":
            return name
        if state in (None, "Failed"):
            raise MemberFailed(f"sweep member {name} {'failed' if state else 'is no longer queued'}: "
                               f"see `dvc queue logs {name}`")
        time.sleep(poll_s)


# every member's wait task at once; DVC's workers bound how many members train at once
@flow(name="selfchat-sweep", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=64))
def sweep(params_file: str = "params.yaml", grid: dict[str, list[Any]] | None = None) -> dict:
    """shared stages once -> members (train, evaluate, register as pending) -> side-by-side report -> one decision."""
    sweep_id = os.environ.get(PIPELINE_ENV, "")
    if not SWEEP_ID.fullmatch(sweep_id):  # members find their sweep by this form of id in their names
        sweep_id = os.environ[PIPELINE_ENV] = new_sweep_id()
    with checkout_lock(f"selfchat-sweep {sweep_id}"):  # members run in DVC's copies, the rest here
        require_dvc_idle(f"selfchat-sweep {sweep_id}")
        return run_sweep(sweep_id, params_file, grid)


def run_sweep(sweep_id: str, params_file: str, grid: dict[str, list[Any]] | None) -> dict:
    settings = load_params(Path(params_file)).sweep
    members = grid_members(grid or settings.grid)
    run_changed_stages(SHARED, params_file)
    ensure_tracking_store()
    parent = pipeline_run(ensure_experiment(), sweep_id)
    MlflowClient().log_dict(parent, {"grid": grid or settings.grid, "members": members}, "sweep.json")
    names = [step(queue_member, f"queue-member-{i}")(f"{sweep_id}-{i}", overrides)
             for i, overrides in enumerate(members)]
    step(start_workers, "dvc-queue-start")(settings.concurrency)
    waits = [step(wait_for_member, f"member-{i}").submit(name) for i, name in enumerate(names)]
    failed = []
    for wait in waits:
        try:
            wait.result()
        except MemberFailed as exc:
            failed.append(str(exc))
    # the members that finished are decided even when another failed; then the failure is reported
    decision = call_flow(promote, params_file=params_file, sweep=sweep_id)[sweep_id]
    if failed:
        raise MemberFailed("; ".join(failed))
    return {"sweep": sweep_id, "experiments": names, **decision}


def new_sweep_id() -> str:
    return f"sweep-{uuid.uuid4().hex[:6]}"


def parse_grid(options: list[str]) -> dict[str, list[Any]]:
    grid = {}
    for option in options:
        key, _, values = option.partition("=")
        grid[key.strip()] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--grid", action="append", default=[], help="KEY=V1,V2,... (repeatable); default: sweep.grid")
    arguments = parser.parse_args()
    try:
        params = load_params(Path(arguments.params))
        given = parse_grid(arguments.grid) if arguments.grid else None
        if given is not None:
            check_grid(params.train, given)  # the same checks as the params file's grid
    except (ConfigError, ValueError) as exc:
        fail(str(exc), 2)
    # the shared stages and the decision: children of the sweep's run, named after it in both UIs
    os.environ[PIPELINE_ENV] = new_sweep_id()
    run_stage(sweep, arguments, grid=given)

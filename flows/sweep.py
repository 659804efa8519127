"""A LoRA sweep as one Prefect flow: the shared stages once, each member a DVC experiment, one decision.

    python -m flows.sweep                      # the grid in params.yaml (sweep.grid)
    python -m flows.sweep --grid 'train.lora.r=4,8,16' --grid 'train.learning_rate=1e-4,2e-4'

Each member is `dvc exp run --temp -S ...` (train, evaluate, register in a temporary copy), so the members
are the same experiments `dvc exp show` and `dvc plots diff` compare, whichever way the sweep was run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml
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
from tasks.config import ConfigError, SweepParams, load_params
from tasks.errors import SelfchatError
from tasks.tracking import (
    PARENT_ENV,
    PIPELINE_ENV,
    SWEEP_ENV,
    ensure_experiment,
    ensure_tracking_store,
    pipeline_run,
)

SHARED = [base, seeds, collect, validate, calibrate_judge]  # what every member reads, run once


class MemberFailed(SelfchatError):
    pass


def grid_members(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, in the grid's order."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def run_member(name: str, overrides: dict[str, Any], env: dict[str, str]) -> str:
    """One member as a DVC experiment in a temporary copy; its stages report to this project's stores."""
    command = ["dvc", "exp", "run", "--temp", "--name", name]
    for key, value in overrides.items():
        command += ["-S", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]
    print("member", name, ":", " ".join(command))
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise MemberFailed(f"sweep member {name} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return name


@flow(name="selfchat-sweep", log_prints=True)
def sweep(params_file: str = "params.yaml", grid: dict[str, list[Any]] | None = None) -> dict:
    """shared stages once -> members (train, evaluate, register as pending) -> side-by-side report -> one decision."""
    settings = load_params(Path(params_file)).sweep
    members = grid_members(grid or settings.grid)
    sweep_id = f"sweep-{uuid.uuid4().hex[:6]}"
    os.environ[PIPELINE_ENV] = sweep_id  # the shared stages and the decision: children of the sweep's run
    run_changed_stages(SHARED, params_file)
    ensure_tracking_store()
    parent = pipeline_run(ensure_experiment(), sweep_id)
    MlflowClient().log_dict(parent, {"grid": grid or settings.grid, "members": members}, "sweep.json")
    futures = []
    for index, overrides in enumerate(members):
        name = f"{sweep_id}-{index}"
        env = {SWEEP_ENV: sweep_id, PIPELINE_ENV: name, PARENT_ENV: parent}
        futures.append(step(run_member, f"member-{index}").submit(name, overrides, env))
    names = [f.result() for f in futures]
    decision = call_flow(promote, params_file=params_file, sweep=sweep_id)
    return {"sweep": sweep_id, "experiments": names, **decision}


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
            SweepParams(grid=given)  # the same checks as the params file's grid
    except (ConfigError, ValueError) as exc:
        fail(str(exc), 2)
    runner = ThreadPoolTaskRunner(max_workers=params.sweep.concurrency)
    run_stage(sweep.with_options(task_runner=runner), arguments, grid=given)

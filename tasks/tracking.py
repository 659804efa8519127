"""MLflow runs for stages: one parent per pipeline run, one child per stage, lineage tags on each."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run
from pydantic import BaseModel

EXPERIMENT = os.environ.get("SELFCHAT_EXPERIMENT", "selfchat")
PIPELINE_ENV = "SELFCHAT_PIPELINE_ID"
PARENT_ENV = "SELFCHAT_PARENT_RUN_ID"  # a sweep's run: each member's pipeline run nests under it
ARTIFACTS = "mlartifacts"  # next to the sqlite store
log = logging.getLogger(__name__)


def _complete(db: Path) -> bool:
    """MLflow writes its schema version last: without it the tables were never all created."""
    try:
        with contextlib.closing(sqlite3.connect(db)) as connection:
            return bool(connection.execute("select version_num from alembic_version").fetchone())
    except sqlite3.OperationalError as exc:
        return "no such table" not in str(exc)  # locked or busy: in use, so not half-made


def ensure_tracking_store() -> None:
    """Create a local sqlite tracking store atomically: built under a temporary name and moved into place
    when complete, so a kill during MLflow's first-time table creation leaves no half-made database. One
    left by an older version is moved aside (kept, never deleted) and a new one made."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri.removeprefix("sqlite:///"))
    if db.exists() and _complete(db):
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with db.with_name(f".{db.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two first runs at once: one creates, the other finds it made
        _create_store(db)


def _create_store(db: Path) -> None:
    if db.exists():
        if _complete(db):
            return
        aside = db.with_name(f"{db.name}.incomplete-{int(time.time())}")
        os.replace(db, aside)
        log.warning("tracking store %s was left half-created by an interrupted first run: moved to %s, "
                    "creating a new one", db, aside)
    building = db.with_name(f".{db.name}.{os.getpid()}.creating")
    building.unlink(missing_ok=True)
    MlflowClient(tracking_uri=f"sqlite:///{building}").search_experiments(max_results=1)  # creates every table
    os.replace(building, db)


def ensure_experiment(name: str = EXPERIMENT) -> str:
    """Experiment whose artifacts live in the project (file store) unless the tracking server decides."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    uri, location = mlflow.get_tracking_uri(), None
    if uri.startswith("sqlite:///"):  # beside the store, wherever this process runs (queued experiments)
        location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / ARTIFACTS).as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_dep_hashes(stage: str, lock_file: Path = Path("dvc.lock")) -> dict[str, str]:
    """Hashes DVC recorded for the outputs this stage depends on (what it actually read)."""
    if not lock_file.exists():
        return {}
    lock = yaml.safe_load(lock_file.read_text()) or {}
    known: dict[str, str] = {}
    for entry in lock.get("stages", {}).values():
        for out in entry.get("outs", []):
            known[out["path"]] = out.get("md5", "")
    spec = yaml.safe_load(Path("dvc.yaml").read_text()) if Path("dvc.yaml").exists() else {}
    deps = spec.get("stages", {}).get(stage, {}).get("deps", [])
    return {dep: known[dep] for dep in deps if dep in known}


def lineage_tags(stage: str) -> dict[str, str]:
    """What a result was made from: the code's commit and DVC's hashes of the stage's data inputs."""
    return {"git.sha": git_sha(), **{f"dvc.{path}": md5 for path, md5 in dvc_dep_hashes(stage).items()}}


def flatten(params: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, str]:
    data = params.model_dump(by_alias=True) if isinstance(params, BaseModel) else params
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat


def numeric_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a (nested) metrics dict, as MLflow metric names ("a.b"; "rate@judge" as "rate/judge":
    MLflow refuses "@")."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        key = str(key).replace("@", "/")
        if isinstance(value, dict):
            flat.update(numeric_metrics(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = value
    return flat


SWEEP_ENV = "SELFCHAT_SWEEP_ID"  # set by flows.sweep for its members


SWEEP_MEMBER = re.compile(r"^(sweep-[0-9a-f]{6})-\d+$")  # flows.sweep names its members <sweep id>-<index>


def dvc_experiment() -> tuple[str, str] | None:
    """(sweep id, member id) when this process runs for a `dvc exp run` member, else None.

    DVC names the baseline commit of every experiment (members queued from one commit are one sweep) and
    the experiment (a random name without --name; names may repeat across commits, hence the prefix).
    A flows.sweep member's sweep is in its name: DVC's queue workers may have been started before it."""
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if not baseline:
        return None
    name = os.environ.get("DVC_EXP_NAME") or hashlib.sha256(os.getcwd().encode()).hexdigest()[:6]
    named = SWEEP_MEMBER.match(name)
    sweep = os.environ.get(SWEEP_ENV) or (named.group(1) if named else f"exp-{baseline[:7]}")
    return sweep, f"{baseline[:7]}-{name}"


def _find_pipeline_run(experiment_id: str, pipeline_id: str) -> str | None:
    found = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`selfchat.pipeline_id` = '{pipeline_id}' and tags.`selfchat.role` = 'pipeline'",
        output_format="list",
        max_results=1,
    )
    return found[0].info.run_id if found else None


def pipeline_run(experiment_id: str, pipeline_id: str) -> str:
    """The parent run of a pipeline (or sweep) id, made on first use; a sweep member's nests in its sweep's."""
    found = _find_pipeline_run(experiment_id, pipeline_id)
    if found:
        return found
    experiment = dvc_experiment()
    parent = os.environ.get(PARENT_ENV)
    if parent is None and experiment and experiment[0] != pipeline_id:
        parent = _find_pipeline_run(experiment_id, experiment[0])  # a flows.sweep member: the sweep's run
    tags = {"selfchat.pipeline_id": pipeline_id, "selfchat.role": "pipeline", "git.sha": git_sha(),
            **({"mlflow.parentRunId": parent} if parent else {}),
            **({"dvc.experiment": experiment[1]} if experiment else {})}
    name = f"pipeline {experiment[1] if experiment else pipeline_id}"
    run = mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags)
    mlflow.end_run()
    return run.info.run_id


@contextmanager
def stage_run(stage: str, params: BaseModel) -> Iterator[Run]:
    """Child run of this pipeline run (SELFCHAT_PIPELINE_ID groups `dvc repro`'s separate processes)."""
    ensure_tracking_store()
    experiment_id = ensure_experiment()
    # one id groups a run's stages (separate processes under `dvc repro`); a dvc exp member's is its own
    experiment = dvc_experiment()
    pipeline_id = os.environ.get(PIPELINE_ENV) or (experiment[1] if experiment else uuid.uuid4().hex[:12])
    parent_id = pipeline_run(experiment_id, pipeline_id)
    tags = {"selfchat.stage": stage, "selfchat.pipeline_id": pipeline_id, "selfchat.role": "stage",
            "mlflow.parentRunId": parent_id, **lineage_tags(stage)}
    with mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=tags) as run:
        mlflow.log_params(flatten(params, f"{stage}."))
        yield run

"""MLflow runs for stages: one parent per pipeline run, one child per stage, lineage tags on each."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
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
from mlflow.entities import Metric, Param, Run
from mlflow.exceptions import MlflowException
from pydantic import BaseModel

EXPERIMENT = os.environ.get("SELFCHAT_EXPERIMENT", "selfchat")
PIPELINE_ENV = "SELFCHAT_PIPELINE_ID"
PARENT_ENV = "SELFCHAT_PARENT_RUN_ID"  # a sweep's run: each member's pipeline run nests under it
ARTIFACTS = "mlartifacts"  # next to the sqlite store
NOTE = "mlflow.note.content"  # a run's description in the MLflow UI
PIPELINE_NOTE = ("selfchat pipeline run `{id}` at commit `{sha}`: seeds → self-chat collection → data contracts → "
                 "LoRA training → judge calibration → evaluation → registry. Each stage is a child run; the "
                 "headline numbers of every stage are on this run as `<stage>/<metric>`.")
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
    experiment = mlflow.create_experiment(name, artifact_location=location, tags={
        NOTE: "selfchat: one run per pipeline run (its stages nested below it); the `pipeline` view shows "
              "each run's headline numbers.", f"mlflow.sharedViewState.{VIEW}": pipeline_view()})
    return experiment


VIEW = "pipeline"  # a saved view of the runs table: the pipeline runs' headline columns
HEADLINE_COLUMNS = ["collect/dialogues", "validate/pass_rate", "train/steps", "train/train_loss_mean",
                    "train/eval_loss", "evaluate/perplexity_content.adapter", "evaluate/perplexity_content.base",
                    "evaluate/answer_rate_guarded.adapter", "evaluate/refusal_rate_guarded.adapter",
                    "register/promoted"]


def pipeline_view() -> str:
    """The runs table as a reader wants it first (MLflow keeps chosen columns per browser otherwise)."""
    now = int(time.time() * 1000)
    state = {"selectedColumns": ["params.`train.lora.r`", *(f"metrics.`{c}`" for c in HEADLINE_COLUMNS)],
             "orderByKey": "attributes.start_time", "orderByAsc": False}
    return json.dumps({"name": "Pipeline", "createdAt": now, "updatedAt": now, "state": json.dumps(state)})


def runs_page(ui_url: str, experiment_id: str) -> str:
    """The runs table in model-training mode (MLflow 3 opens experiments in its GenAI view otherwise)."""
    return f"{ui_url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW}"


def git_sha() -> str:
    """The commit, with `-dirty` when code or params differ from it; what the pipeline itself writes
    (dvc.lock, the git-tracked outputs in dvc.yaml such as metrics, the .gitignore entries DVC adds) does
    not count."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        ignored = [f":(exclude){path}" for path in ["dvc.lock", *declared_outputs()]] + [":(exclude,glob)**/.gitignore"]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *ignored],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def declared_outputs(stage: str | None = None, spec_file: Path = Path("dvc.yaml")) -> list[str]:
    """The outs, metrics and plots dvc.yaml declares for a stage (or every stage), in order."""
    spec = yaml.safe_load(spec_file.read_text()) if spec_file.exists() else {}
    paths: list[str] = []
    for name, entry in (spec or {}).get("stages", {}).items():
        if stage not in (None, name):
            continue
        for kind in ("outs", "metrics", "plots"):
            for item in entry.get(kind, []):
                paths.append(next(iter(item)) if isinstance(item, dict) else item)
    return paths


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


SWEEP_ENV = "SELFCHAT_SWEEP_ID"  # a name for a `dvc exp run --queue` sweep (default: exp-<baseline commit>)
SWEEP_ID = re.compile(r"sweep-[0-9a-f]{6}")
SWEEP_MEMBER = re.compile(rf"^({SWEEP_ID.pattern})-\d+$")  # flows.sweep names its members <sweep id>-<index>


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
    tags |= {NOTE: PIPELINE_NOTE.format(id=pipeline_id, sha=tags["git.sha"]), "mlflow.source.name": "dvc.yaml",
             "mlflow.source.type": "PROJECT"}
    run = mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags)
    mlflow.end_run()
    return run.info.run_id


def pipeline_id() -> str:
    """What groups a run's stages: SELFCHAT_PIPELINE_ID (`make run` sets one for `dvc repro`'s separate
    processes), a dvc exp member's own id, or a new id kept for the rest of this process."""
    experiment = dvc_experiment()
    found = os.environ.get(PIPELINE_ENV) or (experiment[1] if experiment else uuid.uuid4().hex[:12])
    os.environ[PIPELINE_ENV] = found
    return found


@contextmanager
def stage_run(stage: str, params: BaseModel) -> Iterator[Run]:
    """Child run of this pipeline run (SELFCHAT_PIPELINE_ID groups `dvc repro`'s separate processes)."""
    ensure_tracking_store()
    experiment_id = ensure_experiment()
    pipeline = pipeline_id()
    parent_id = pipeline_run(experiment_id, pipeline)
    tags = {"selfchat.stage": stage, "selfchat.pipeline_id": pipeline, "selfchat.role": "stage",
            "mlflow.parentRunId": parent_id, **lineage_tags(stage)}
    client, stage_params = MlflowClient(), flatten(params, f"{stage}.")
    # the pipeline run spans its stages (running while one runs) and carries their params for the runs table
    client.update_run(parent_id, status="RUNNING")
    try:
        client.log_batch(parent_id, params=[Param(k, v) for k, v in stage_params.items()])
    except MlflowException as exc:  # a stage rerun in the same pipeline run with other params: its run has them
        log.warning("pipeline run %s keeps its first %s params: %s", pipeline, stage, exc.message[:200])
    status = "FAILED"
    try:
        with mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=tags) as run:
            mlflow.log_params(stage_params)
            yield run
        status = "FINISHED"
    finally:
        client.set_terminated(parent_id, status, int(time.time() * 1000))


def log_headline(metrics: dict[str, float]) -> None:
    """A stage's few numbers a reader looks for first (corpus size, pass rate, results, decision), on the
    pipeline run as `<stage>/<name>`: the runs table and the pipeline run show the whole story."""
    run = mlflow.active_run()
    assert run is not None, "log_headline is called inside stage_run"
    stage = run.data.tags["selfchat.stage"]
    MlflowClient().log_batch(run.data.tags["mlflow.parentRunId"],
                             metrics=[Metric(f"{stage}/{k}", float(v), int(time.time() * 1000), 0)
                                      for k, v in metrics.items()])


def describe_pipeline_run(text: str) -> None:
    """Append a paragraph to the pipeline run's description (e.g. the promotion decision in words)."""
    run = mlflow.active_run()
    assert run is not None, "describe_pipeline_run is called inside stage_run"
    client = MlflowClient()
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    note = parent.data.tags.get(NOTE, "")
    client.set_tag(parent.info.run_id, NOTE, f"{note}\n\n{text}".strip())


MLFLOW_UI = os.environ.get("SELFCHAT_MLFLOW_UI", "http://127.0.0.1:5000")  # where `make mlflow-ui` serves


def run_link(run: Run) -> str:
    return f"{MLFLOW_UI}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning"


def run_summary_markdown(run: Run, outputs: list[str]) -> str:
    """A stage's result for a reader of the Prefect UI: its numbers, what it wrote, its params, and where
    the rest is (the MLflow run)."""
    stage = run.data.tags.get("selfchat.stage", run.info.run_name)
    lines = [f"# {stage}: pipeline {run.data.tags.get('selfchat.pipeline_id', '?')}", "",
             f"MLflow run [{run.info.run_id[:8]}]({run_link(run)}) (`make mlflow-ui`), "
             f"code `{run.data.tags.get('git.sha', '?')}`", ""]
    if run.data.metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.6g} |" for k, v in sorted(run.data.metrics.items())] + [""]
    if outputs:
        lines += ["Outputs: " + ", ".join(f"`{path}`" for path in outputs), ""]
    if run.data.params:
        lines += ["| param | value |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in sorted(run.data.params.items())]
    return "\n".join(lines) + "\n"


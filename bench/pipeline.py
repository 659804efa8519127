"""How long a run of the pipeline took, stage by stage, from the MLflow store it reported to.

Each stage is a child run of its pipeline run (tasks/services/tracking.py): its start and end are the stage's
own work; the gaps between one stage's end and the next one's start are process start-up (Python, torch,
Prefect and MLflow imports) and DVC's hashing. Prints the table docs/timings.md shows, for the latest pipeline
run or the one named:
    python bench/pipeline.py [--project .] [--pipeline <id>] [--label "fresh clone"]
The set-up time (`make install`) is not in the store: time it on its own (`time make install`).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

from tasks.services.tracking import EXPERIMENT

# a stage's headline figures worth a column (the run's own metrics, as logged by the stage)
DETAILS = {
    "collect": ("dialogues", "requests", "completion_tokens", "completion_tokens_per_second", "resumed"),
    "train": ("steps", "train_runtime_s"),
}


def stage_runs(client: MlflowClient, experiment_id: str, pipeline: str | None) -> tuple[str, list[Run]]:
    """The stage runs of one pipeline run (the latest, unless named), in the order they started."""
    if pipeline is None:
        latest = client.search_runs([experiment_id], "tags.`selfchat.role` = 'stage'", max_results=1,
                                    order_by=["attributes.start_time DESC"])
        if not latest:
            raise SystemExit("error: no stage runs in this MLflow store: run `make run` first")
        pipeline = latest[0].data.tags["selfchat.pipeline_id"]
    runs = client.search_runs([experiment_id], f"tags.`selfchat.pipeline_id` = '{pipeline}' and "
                              "tags.`selfchat.role` = 'stage'", max_results=500,
                              order_by=["attributes.start_time ASC"])
    return pipeline, runs


def describe(run: Run) -> str:
    stage = run.data.tags["selfchat.stage"]
    metrics = run.data.metrics
    shown = [f"{name} {metrics[name]:.4g}" for name in DETAILS.get(stage, ()) if name in metrics]
    return ", ".join(shown)


def timings_table(runs: list[Run], label: str) -> str:
    rows = [f"| stage ({label}) | minutes | status | figures |", "|---|---|---|---|"]
    work = gaps = 0.0
    previous_end: int | None = None
    for run in runs:
        start = run.info.start_time
        end = run.info.end_time or int(time.time() * 1000)  # a stage still running: so far
        if previous_end is not None:
            gaps += max(0, start - previous_end) / 1000
        previous_end = end
        seconds = (end - start) / 1000
        work += seconds
        rows.append(f"| {run.data.tags['selfchat.stage']} | {seconds / 60:.1f} | {run.info.status.lower()} | "
                    f"{describe(run)} |")
    span = ((previous_end or 0) - runs[0].info.start_time) / 1000 if runs else 0.0
    rows += [f"| between stages (process start-up, DVC) | {gaps / 60:.1f} | | |",
             f"| **first stage start to last stage end** | **{span / 60:.1f}** | | stages' own work "
             f"{work / 60:.1f} min |"]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--pipeline", help="pipeline id (default: the latest run's)")
    parser.add_argument("--label", default="this run")
    args = parser.parse_args()
    os.chdir(args.project)
    client = MlflowClient(os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        raise SystemExit(f"error: no experiment {EXPERIMENT!r} in this MLflow store: run `make run` first")
    pipeline, runs = stage_runs(client, experiment.experiment_id, args.pipeline)
    print(f"pipeline {pipeline}: {len(runs)} stage runs\n")
    print(timings_table(runs, args.label))


if __name__ == "__main__":
    main()

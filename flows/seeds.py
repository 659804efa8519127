"""Stage 2, seeds: seed questions from the configured sources, deduplicated and sampled reproducibly."""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow

from flows.stage import run_stage, step, tracked_stage
from tasks.core.config import load_params
from tasks.core.jsonl import write_json, write_jsonl
from tasks.core.paths import SEEDS, metrics_file
from tasks.seeds.ingest import ingest_seeds
from tasks.services.tracking import log_headline


@flow(name="seeds", log_prints=True)
def seeds(params_file: str = "params.yaml") -> dict[str, int]:
    params = load_params(Path(params_file)).seeds
    with tracked_stage("seeds", params):
        chosen, stats = step(ingest_seeds, "ingest-seeds")(params)
        write_jsonl(SEEDS, chosen)
        write_json(metrics_file("seeds"), stats)
        mlflow.log_metrics(stats)
        log_headline({"selected": stats["selected"]})
        mlflow.log_artifact(str(SEEDS))
    print(f"{stats['selected']} seeds from {stats['read']} read ({stats['duplicates']} exact duplicates)")
    return stats


if __name__ == "__main__":
    run_stage(seeds)

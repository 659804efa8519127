"""Stage 2, seeds: seed questions from the configured sources, deduplicated and sampled reproducibly."""

from __future__ import annotations

import mlflow

from flows.stage import report_metrics, run_stage, stage_flow, step, tracked_stage
from tasks.core.config import Params
from tasks.core.jsonl import write_jsonl
from tasks.core.paths import SEEDS
from tasks.seeds.ingest import ingest_seeds


@stage_flow("seeds")
def seeds(all_params: Params) -> dict[str, int]:
    params = all_params.seeds
    with tracked_stage("seeds", params):
        chosen, stats = step(ingest_seeds, "ingest-seeds")(params)
        write_jsonl(SEEDS, chosen)
        report_metrics("seeds", stats, {"selected": stats["selected"]})
        mlflow.log_artifact(str(SEEDS))
    print(f"{stats['selected']} seeds from {stats['read']} read ({stats['duplicates']} exact duplicates)")
    return stats


if __name__ == "__main__":
    run_stage(seeds)

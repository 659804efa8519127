"""Stage 7a, evaluate-base: the base model on every evaluation item, once. Its results depend only on the
base, the evaluation params and the items, so DVC caches them: a training change, and every member of a sweep,
reuses them (the evaluate stage measures only the adapter)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import torch
from prefect import flow

from flows.evaluate import measure
from flows.stage import run_stage, tracked_stage
from tasks.core.config import load_params
from tasks.core.jsonl import write_json
from tasks.core.paths import BASE_DIR, BASE_EVAL, HELDOUT, LOGS, metrics_file
from tasks.evaluate.stored import judge_endpoint, measured_inputs, write_measured
from tasks.models.student import load_base_model, load_tokenizer
from tasks.scoring.stats import BASE


@flow(name="evaluate-base", log_prints=True)
def evaluate_base(params_file: str = "params.yaml") -> dict:
    all_params = load_params(Path(params_file))
    params = all_params.evaluate
    calibration = json.loads(metrics_file("calibrate").read_text())
    with tracked_stage("evaluate-base", params), judge_endpoint(params, calibration) as judge_url:
        model = load_base_model(BASE_DIR, all_params.base.dtype, all_params.train.quantization)
        found = measure(model, load_tokenizer(BASE_DIR), [BASE], lambda _: torch.no_grad(), all_params, judge_url)
        write_measured(BASE_EVAL, found, measured_inputs(all_params))
        write_json(LOGS / "eval_base_seconds.json", {k: round(v, 1) for k, v in found.seconds.items()})
        mlflow.log_metrics({f"seconds.{k}": v for k, v in found.seconds.items()})
    print(f"base measured on {len({(i.metric, i.item) for i in found.items})} metric items in "
          f"{sum(found.seconds.values()):.0f}s: " + ", ".join(f"{k} {v:.0f}s" for k, v in found.seconds.items()))
    return {"items": len(found.items), "seconds": found.seconds}


if __name__ == "__main__":
    run_stage(evaluate_base, needs=[BASE_DIR, HELDOUT, metrics_file("calibrate")])

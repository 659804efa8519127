"""Stage 7a, evaluate-base: the base model on every evaluation item, once. Its results depend only on the
base, the evaluation params and the items, so DVC caches them: a training change, and every member of a sweep,
reuses them (the evaluate stage measures only the adapter)."""

from __future__ import annotations

import mlflow
import torch

from flows.evaluate import evaluation_stage, measure
from flows.stage import run_stage, stage_flow
from tasks.core.config import Params
from tasks.core.jsonl import write_json
from tasks.core.paths import BASE_DIR, BASE_EVAL, HELDOUT, LOGS, metrics_file
from tasks.evaluate.stored import measured_inputs, write_measured
from tasks.models.student import load_base_model, load_tokenizer
from tasks.scoring.stats import BASE


@stage_flow("evaluate-base")
def evaluate_base(all_params: Params) -> dict:
    with evaluation_stage("evaluate-base", all_params) as (calibration, judge_url):
        model = load_base_model(BASE_DIR, all_params.base.dtype, all_params.train.quantization)
        found = measure(model, load_tokenizer(BASE_DIR), [BASE], lambda _: torch.no_grad(), all_params, calibration,
                        judge_url)
        write_measured(BASE_EVAL, found, measured_inputs(all_params))
        write_json(LOGS / "eval_base_seconds.json", {k: round(v, 1) for k, v in found.seconds.items()})
        mlflow.log_metrics({f"seconds.{k}": v for k, v in found.seconds.items()})
    print(f"base measured on {len({(i.metric, i.item) for i in found.items})} metric items in "
          f"{sum(found.seconds.values()):.0f}s: " + ", ".join(f"{k} {v:.0f}s" for k, v in found.seconds.items()))
    return {"items": len(found.items), "seconds": found.seconds}


if __name__ == "__main__":
    run_stage(evaluate_base, needs=[BASE_DIR, HELDOUT, metrics_file("calibrate")])

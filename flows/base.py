"""Stage 1, base: the student model as plain safetensors + tokenizer in models/base."""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow

from flows.stage import run_stage, step, tracked_stage
from tasks.base.convert import load_base, save_base
from tasks.core.config import load_params
from tasks.core.jsonl import write_json
from tasks.core.paths import BASE_DIR, metrics_file
from tasks.services.tracking import log_headline


@flow(name="base", log_prints=True)
def base(params_file: str = "params.yaml") -> dict[str, int]:
    params = load_params(Path(params_file)).base
    with tracked_stage("base", params):
        model, tokenizer = step(load_base, "load-base-model")(params.model, params.dtype)
        facts = step(save_base, "save-safetensors")(model, tokenizer, BASE_DIR)
        write_json(metrics_file("base"), facts)
        mlflow.log_metrics(facts)
        log_headline({"parameters": facts["parameters"]})
    return facts


if __name__ == "__main__":
    run_stage(base)

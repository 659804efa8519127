"""Stage 1, base: the student model as plain safetensors + tokenizer in models/base."""

from __future__ import annotations

from flows.stage import report_metrics, run_stage, stage_flow, step, tracked_stage
from tasks.base.convert import load_base, save_base
from tasks.core.config import Params
from tasks.core.paths import BASE_DIR


@stage_flow("base")
def base(all_params: Params) -> dict[str, int]:
    params = all_params.base
    with tracked_stage("base", params):
        model, tokenizer = step(load_base, "load-base-model")(params.model, params.dtype)
        facts = step(save_base, "save-safetensors")(model, tokenizer, BASE_DIR)
        report_metrics("base", facts, {"parameters": facts["parameters"]})
    return facts


if __name__ == "__main__":
    run_stage(base)

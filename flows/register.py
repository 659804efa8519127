"""Stage 7, register: the adapter becomes a model version; `challenger` always, `champion` if gates pass."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from prefect import flow

from flows.stage import run_stage
from tasks.config import load_params
from tasks.jsonl import write_json
from tasks.paths import ADAPTER_DIR, metrics_file
from tasks.register.registry import CHALLENGER, CHAMPION, check_gates, register_adapter, set_alias
from tasks.tracking import flatten, lineage_tags, stage_run


@flow(name="register", log_prints=True)
def register(params_file: str = "params.yaml") -> dict:
    all_params = load_params(Path(params_file))
    params = all_params.register_
    eval_metrics = json.loads(metrics_file("eval").read_text())
    with stage_run("register", params):
        gates = check_gates(eval_metrics, params)
        promoted = all(g.passed for g in gates)
        tags = {**lineage_tags("register"), "base.model": all_params.base.model,
                **flatten(all_params.train, "train."),
                **{f"eval.{k}": str(v) for k, v in eval_metrics.items()},
                **{f"gate.{g.name}": f"{'pass' if g.passed else 'fail'} ({g.observed:.4g} {g.bound})" for g in gates}}
        version = register_adapter(ADAPTER_DIR, params.model_name, tags)
        set_alias(params.model_name, CHALLENGER, version.version)
        if promoted:
            set_alias(params.model_name, CHAMPION, version.version)
        result = {"model_name": params.model_name, "version": int(version.version), "promoted": promoted,
                  "gates": {g.name: {"passed": g.passed, "observed": g.observed, "bound": g.bound} for g in gates}}
        write_json(metrics_file("register"), result)
        mlflow.log_dict(result, "register.json")
        mlflow.log_metric("promoted", float(promoted))
    verdict = "promoted to champion" if promoted else "kept as challenger (a gate failed)"
    print(f"{params.model_name} version {version.version}: {verdict}; "
          + ", ".join(f"{g.name} {g.observed:.3g} {g.bound} {'ok' if g.passed else 'FAIL'}" for g in gates))
    return result


if __name__ == "__main__":
    run_stage(register, needs=[ADAPTER_DIR, metrics_file("eval")])

"""Stage 8, register: the adapter becomes a model version (alias `challenger`) and takes the `champion` alias
only if it beats the current champion (the base model while there is none) on the same items."""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow

from flows.stage import run_stage
from tasks.config import load_params
from tasks.jsonl import read_jsonl, write_json
from tasks.paths import ADAPTER_DIR, EVAL_ITEMS, metrics_file
from tasks.register.gates import check_gates, promotion_report
from tasks.register.registry import CHALLENGER, CHAMPION, champion_items, promotion_lock, register_adapter, set_alias
from tasks.stats import ADAPTER, BASE, items_from_dicts
from tasks.tracking import flatten, lineage_tags, stage_run


@flow(name="register", log_prints=True)
def register(params_file: str = "params.yaml") -> dict:
    all_params = load_params(Path(params_file))
    params = all_params.register_
    items = items_from_dicts(read_jsonl(EVAL_ITEMS))
    challenger = [i for i in items if i.model == ADAPTER]
    # decided once per version, under a lock: a sweep's members cannot race for the alias
    with stage_run("register", params), promotion_lock():
        champion = champion_items(params.model_name)
        if champion is None:
            bar_name, bar = "the base model (no champion yet)", [i for i in items if i.model == BASE]
        else:
            bar_name, bar = f"champion version {champion[0].version}", [i for i in champion[1] if i.model == ADAPTER]
        gates = check_gates(challenger, bar, params, fallback=[i for i in items if i.model == BASE])
        promoted = all(g.passed for g in gates)
        mlflow.log_artifact(str(EVAL_ITEMS), "eval")  # the bar for the next challenger
        tags = {**lineage_tags("register"), "base.model": all_params.base.model,
                **flatten(all_params.train, "train."), "promotion.bar": bar_name,
                "promotion.decision": "promoted" if promoted else "not promoted",
                **{f"gate.{g.metric}": str(g)[:500] for g in gates}}
        version = register_adapter(ADAPTER_DIR, params.model_name, tags)
        report = promotion_report(version.version, bar_name, gates, promoted)
        set_alias(params.model_name, CHALLENGER, version.version)
        if promoted:
            set_alias(params.model_name, CHAMPION, version.version)
        mlflow.MlflowClient().update_model_version(params.model_name, version.version, description=report)
        result = {"model_name": params.model_name, "version": int(version.version), "promoted": promoted,
                  "bar": bar_name, "primary_metric": params.primary_metric,
                  "gates": {g.metric: g.as_dict() for g in gates}}
        write_json(metrics_file("register"), result)
        mlflow.log_text(report, "promotion.md")
        mlflow.log_dict(result, "register.json")
        mlflow.log_metric("promoted", float(promoted))
    print(f"{params.model_name} version {version.version} vs {bar_name}: "
          f"{'promoted to champion' if promoted else 'not promoted'}\n" + "\n".join(f"  {g}" for g in gates))
    return result


if __name__ == "__main__":
    run_stage(register, needs=[ADAPTER_DIR, EVAL_ITEMS])

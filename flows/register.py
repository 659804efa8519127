"""Stage 8, register: the adapter becomes a model version (alias `challenger`) and takes the `champion` alias
only if it beats the current champion (the base model while there is none) on the same items."""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow

from flows.stage import run_stage, step, tracked_stage
from tasks.adapter_card import ADAPTER_CARD, adapter_lineage
from tasks.config import Params, load_params
from tasks.jsonl import read_jsonl, write_json
from tasks.paths import ADAPTER_DIR, BASE_DIR, EVAL_ITEMS, metrics_file
from tasks.register.gates import check_gates, decision_in_words, promotion_report
from tasks.register.registry import (
    CHALLENGER,
    CHAMPION,
    PENDING,
    REGISTRATION_KEY,
    find_chat_model,
    promotion_bar,
    promotion_lock,
    register_adapter,
    registered_version,
    registration_key,
    set_alias,
    stored_decision,
    sweep_member,
)
from tasks.stats import ADAPTER, BASE, Item, items_from_dicts
from tasks.student import ADAPTER_SHA, file_sha256, folder_sha256, log_chat_model
from tasks.tracking import describe_pipeline_run, flatten, lineage_tags, log_headline


@flow(name="register", log_prints=True)
def register(params_file: str = "params.yaml") -> dict:
    all_params = load_params(Path(params_file))
    params = all_params.register_
    items = items_from_dicts(read_jsonl(EVAL_ITEMS))
    challenger = [i for i in items if i.model == ADAPTER]
    member = sweep_member()
    adapter_sha = folder_sha256(ADAPTER_DIR)
    key = registration_key(adapter=adapter_sha, items=file_sha256(EVAL_ITEMS), register=params.model_dump(),
                           train=all_params.train.model_dump(), base=all_params.base.model_dump(),
                           guardrail_prompt=all_params.evaluate.guardrail_prompt, sweep=member)
    # decided once per version, under a lock: two runs finishing together cannot both take the alias
    with promotion_lock():
        existing = registered_version(params.model_name, key)
        if existing is not None:
            result = stored_decision(existing)
            write_json(metrics_file("register"), result)
            print(f"{params.model_name} version {existing.version} was registered from these very inputs "
                  f"({result['decision']}): nothing to do")
            return result
        return decide(all_params, items, challenger, member, {REGISTRATION_KEY: key, ADAPTER_SHA: adapter_sha})


def decide(all_params: Params, items: list[Item], challenger: list[Item], member: str | None,
           keys: dict[str, str]) -> dict:
    """Register this adapter as a new version and decide it against the bar (or leave it pending)."""
    params = all_params.register_
    with tracked_stage("register", params):
        bar_name, bar = promotion_bar(params.model_name, items)
        gates = check_gates(challenger, bar, params, fallback=[i for i in items if i.model == BASE])
        promoted = all(g.passed for g in gates) and member is None
        decision = PENDING if member else "promoted" if promoted else "not promoted"
        mlflow.log_artifact(str(EVAL_ITEMS), "eval")  # the bar for the next challenger
        mlflow.log_artifact(str(ADAPTER_DIR / ADAPTER_CARD), "adapter")
        tags = {**lineage_tags("register"), **adapter_lineage(ADAPTER_DIR), "base.model": all_params.base.model,
                "base.dtype": all_params.base.dtype,
                "evaluate.guardrail_prompt": all_params.evaluate.guardrail_prompt,
                **flatten(all_params.train, "train."), "promotion.bar": bar_name, "promotion.decision": decision,
                **({"sweep.id": member} if member else {}), **{f"gate.{g.metric}": str(g)[:500] for g in gates},
                **keys}
        # the model the train stage logged (source run: train); logged here only if this store lacks it
        prompt = all_params.evaluate.guardrail_prompt
        model_id = find_chat_model(ADAPTER_DIR, prompt) or step(log_chat_model, "log-mlflow-model")(
            ADAPTER_DIR, BASE_DIR, tags["base.sha256"], all_params.base.dtype, all_params.train.quantization, prompt)
        version = register_adapter(model_id, params.model_name, tags | {"promoted": str(promoted).lower()})
        headline = (f"pending: a member of sweep {member}; `python -m flows.promote` promotes at most one member"
                    if member else "promoted to champion" if promoted else "not promoted")
        report = promotion_report(version.version, bar_name, gates, headline)
        if member is None:
            set_alias(params.model_name, CHALLENGER, version.version)
        if promoted:
            set_alias(params.model_name, CHAMPION, version.version)
        mlflow.MlflowClient().update_model_version(params.model_name, version.version, description=report)
        result = {"model_name": params.model_name, "promoted": promoted, "decision": decision,
                  "bar": bar_name, "primary_metric": params.primary_metric,
                  "gates": {g.metric: g.as_dict() for g in gates}}
        write_json(metrics_file("register"), result)
        mlflow.log_text(report, "promotion.md")
        mlflow.log_dict(result | {"version": int(version.version)}, "register.json")
        mlflow.log_metric("promoted", float(promoted))
        log_headline({"promoted": float(promoted)})
        describe_pipeline_run(decision_in_words(version.version, bar_name, gates, headline))
    print(f"{params.model_name} version {version.version} vs {bar_name}: {headline}\n"
          + "\n".join(f"  {g}" for g in gates))
    return result


if __name__ == "__main__":
    run_stage(register, needs=[ADAPTER_DIR, EVAL_ITEMS])

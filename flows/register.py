"""Stage 8, register: the adapter becomes a model version (alias `challenger`) and takes the `champion` alias
only if it beats the current champion (the base model while there is none) on the same items."""

from __future__ import annotations

import json
from pathlib import Path

from flows.stage import run_stage, stage_flow, step, tracked_stage
from tasks.core.config import Params
from tasks.core.hashing import file_sha256, folder_sha256
from tasks.core.jsonl import read_jsonl, write_json
from tasks.core.paths import ADAPTER_DIR, BASE_DIR, EVAL_ITEMS, EVAL_VERDICTS, metrics_file
from tasks.models.pyfunc import ADAPTER_SHA, log_chat_model
from tasks.register.decision import Distilled, judge_adapter, log_evidence, record_decision, version_tags
from tasks.register.gates import not_gated
from tasks.register.registry import (
    REGISTRATION_KEY,
    find_chat_model,
    promotion_lock,
    register_adapter,
    registered_version,
    registration_key,
    stored_decision,
    sweep_member,
)
from tasks.scoring.stats import Item, items_from_dicts


@stage_flow("register")
def register(all_params: Params) -> dict:
    ungated = not_gated(json.loads(EVAL_VERDICTS.read_text()), all_params.register_.gate_uncalibrated)
    return register_adapter_once(all_params, ADAPTER_DIR, EVAL_ITEMS, sweep_member(), ungated=ungated)


def register_adapter_once(all_params: Params, adapter_dir: Path, items_file: Path, member: str | None,
                          distilled: Distilled | None = None, ungated: dict[str, str] | None = None) -> dict:
    """Register the adapter in `adapter_dir` with its per-item results (`items_file`), unless this store
    already registered these very inputs; `distilled`: the SDF round it came from (lineage, and the bar
    measured in that round); `ungated`: metrics reported but not gated, and why."""
    ungated = ungated or {}
    params = all_params.register_
    items = items_from_dicts(read_jsonl(items_file))
    adapter_sha = folder_sha256(adapter_dir)
    round_key = {"distill": distilled.key} if distilled else {}
    key = registration_key(adapter=adapter_sha, items=file_sha256(items_file), register=params.model_dump(),
                           train=all_params.train.model_dump(), base=all_params.base.model_dump(),
                           guardrail_prompt=all_params.evaluate.guardrail_prompt, sweep=member, not_gated=ungated,
                           **round_key)
    stage = "distill-register" if distilled else "register"
    # decided once per version, under a lock: two runs finishing together cannot both take the alias
    with promotion_lock():
        existing = registered_version(params.model_name, key)
        if existing is not None:
            result = stored_decision(existing)
            write_json(metrics_file(stage.replace("-", "_")), result)
            print(f"{params.model_name} version {existing.version} was registered from these very inputs "
                  f"({result['decision']}): nothing to do")
            return result
        keys = {REGISTRATION_KEY: key, ADAPTER_SHA: adapter_sha, **(distilled.tags if distilled else {})}
        return decide(all_params, items, member, keys, adapter_dir, items_file, distilled, ungated)


def decide(all_params: Params, items: list[Item], member: str | None, keys: dict[str, str],
           adapter_dir: Path = ADAPTER_DIR, items_file: Path = EVAL_ITEMS, distilled: Distilled | None = None,
           ungated: dict[str, str] | None = None) -> dict:
    """Register this adapter as a new version and decide it against the bar (or leave it pending)."""
    params = all_params.register_
    stage = "distill-register" if distilled else "register"
    with tracked_stage(stage, params):
        verdict = step(judge_adapter, "gate-against-bar")(params.model_name, items, all_params, member,
                                                          distilled.parent if distilled else None, ungated)
        tags = version_tags(all_params, verdict, adapter_dir, keys)
        # the model the train stage logged (source run: train); logged here only if this store lacks it
        prompt = all_params.evaluate.guardrail_prompt
        model_id = find_chat_model(adapter_dir, prompt) or step(log_chat_model, "log-mlflow-model")(
            adapter_dir, BASE_DIR, tags["base.sha256"], all_params.base.dtype, all_params.train.quantization, prompt)
        log_evidence(items_file, adapter_dir)
        version = register_adapter(model_id, params.model_name, tags)
        result = record_decision(all_params, version.version, verdict)
        write_json(metrics_file(stage.replace("-", "_")), result)
    print(f"{params.model_name} version {version.version} vs {verdict.bar}: {verdict.headline}\n"
          + "\n".join(f"  {g}" for g in verdict.gates)
          + "".join(f"\n  {m}: reported, not gated ({why})" for m, why in sorted(verdict.ungated.items())))
    return result


if __name__ == "__main__":
    run_stage(register, needs=[ADAPTER_DIR, EVAL_ITEMS, EVAL_VERDICTS])

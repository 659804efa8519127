"""The whole pipeline as one Prefect flow: each stage runs as a subflow when DVC says its inputs changed,
then DVC records its outputs, so this and `dvc repro` leave the same artifacts, lock and cache."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import Flow, flow, tags

from flows.base import base
from flows.calibrate import calibrate_judge
from flows.collect import collect
from flows.evaluate import evaluate
from flows.evaluate_base import evaluate_base
from flows.register import register
from flows.seeds import seeds
from flows.stage import call_flow, fail, parse_command_line, run_stage, step
from flows.train import train
from flows.validate import validate
from tasks.core.errors import SelfchatError
from tasks.services.checkout import checkout_lock, require_dvc_idle
from tasks.services.tracking import pipeline_id
from tasks.services.versioning import commit_stage, stage_changed

STAGES = [base, seeds, collect, validate, train, calibrate_judge, evaluate_base, evaluate, register]


class UnknownStage(SelfchatError):
    pass


def run_changed_stages(stage_flows: list[Flow], params_file: str) -> dict[str, str]:
    """Each stage whose inputs changed (DVC's judgement), in order, then recorded in dvc.lock."""
    outcome: dict[str, str] = {}
    for stage_flow in stage_flows:
        name = stage_flow.name
        if not step(stage_changed, f"dvc-status-{name}")(name):
            outcome[name] = "unchanged"
            print(f"stage {name}: unchanged, skipped")
            continue
        call_flow(stage_flow, params_file=params_file)
        step(commit_stage, f"dvc-commit-{name}")(name)
        outcome[name] = "ran"
    return outcome


StageName = Literal["base", "seeds", "collect", "validate", "train", "calibrate", "evaluate-base", "evaluate",
                    "register"]


def stages_until(until: str | None) -> list[Flow]:
    """The stages up to and including `until` (all of them without it)."""
    names = [stage_flow.name for stage_flow in STAGES]
    if until is None:
        return STAGES
    if until not in names:
        raise UnknownStage(f"until: unknown stage {until!r}; one of {', '.join(names)}")
    return STAGES[:names.index(until) + 1]


def run_name() -> str:
    """A deployment's runs are named like `make pipeline`'s: after the MLflow pipeline run they make."""
    return f"selfchat-pipeline {pipeline_id()}"


@flow(name="selfchat-pipeline", log_prints=True, flow_run_name=run_name)
def pipeline(params_file: str = "params.yaml", until: StageName | None = None) -> dict[str, str]:
    """seeds -> self-chat -> data contract -> LoRA -> judge calibration -> base and adapter evaluation -> registry
    (or up to and including the stage `until`, e.g. `validate` to grow the corpus alone)."""
    stages = stages_until(until)
    what = run_name()  # all stages of this run: children of one MLflow parent run
    # a scheduled run and a `make run` never work on one checkout at once; the stages' flow runs are tagged
    # as `make run`'s are (a deployment's run does not pass through run_stage)
    with checkout_lock(what), tags("selfchat", f"pipeline:{pipeline_id()}"):
        require_dvc_idle(what)
        return run_changed_stages(stages, params_file)


if __name__ == "__main__":
    arguments = parse_command_line(pipeline)
    if Path(arguments.params).resolve() != Path("params.yaml").resolve():
        # DVC decides what reruns and records params from params.yaml only: another file would leave a
        # dvc.lock that names params the outputs were not made from
        fail(f"flows.pipeline runs on params.yaml only (DVC records it in dvc.lock); copy {arguments.params} "
             "to params.yaml, or run one stage with `python -m flows.<stage> --params FILE`", 2)
    run_stage(pipeline, arguments)

"""The whole pipeline as one Prefect flow: each stage runs as a subflow when DVC says its inputs changed,
then DVC records its outputs, so this and `dvc repro` leave the same artifacts, lock and cache."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.base import base
from flows.calibrate import calibrate_judge
from flows.collect import collect
from flows.evaluate import evaluate
from flows.register import register
from flows.seeds import seeds
from flows.stage import call_flow, fail, parse_command_line, run_stage, step
from flows.train import train
from flows.validate import validate
from tasks.tracking import pipeline_id
from tasks.versioning import commit_stage, stage_changed

STAGES = [base, seeds, collect, validate, train, calibrate_judge, evaluate, register]


def run_changed_stages(stage_flows: list, params_file: str) -> dict[str, str]:
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


@flow(name="selfchat-pipeline", log_prints=True)
def pipeline(params_file: str = "params.yaml") -> dict[str, str]:
    """seeds -> self-chat -> data contract -> LoRA -> judge calibration -> evaluation -> registry."""
    pipeline_id()  # all stages of this run become children of one MLflow parent run
    return run_changed_stages(STAGES, params_file)


if __name__ == "__main__":
    arguments = parse_command_line(pipeline)
    if Path(arguments.params).resolve() != Path("params.yaml").resolve():
        # DVC decides what reruns and records params from params.yaml only: another file would leave a
        # dvc.lock that names params the outputs were not made from
        fail(f"flows.pipeline runs on params.yaml only (DVC records it in dvc.lock); copy {arguments.params} "
             "to params.yaml, or run one stage with `python -m flows.<stage> --params FILE`", 2)
    run_stage(pipeline, arguments)

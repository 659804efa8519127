"""One Self-Distill-with-Feedback round as one Prefect flow: the three distill stages in order, each run when
DVC says its inputs changed and then recorded in dvc.lock, so it and `dvc repro distill-train` leave the same
artifacts, lock and registry entry."""

from __future__ import annotations

from prefect import flow, tags

from flows.distill_judge import distill_judge
from flows.distill_sample import distill_sample
from flows.distill_train import distill_train
from flows.pipeline import run_changed_stages, run_name
from flows.stage import run_stage
from tasks.services.checkout import checkout_lock, require_dvc_idle
from tasks.services.tracking import pipeline_id

STAGES = [distill_sample, distill_judge, distill_train]


@flow(name="selfchat-distill", log_prints=True, flow_run_name=run_name)
def distill(params_file: str = "params.yaml") -> dict[str, str]:
    """the champion samples k answers per question -> the judge scores each -> the best answers train the
    parent further (and DPO on best vs worst) -> evaluation -> registry (a challenger)."""
    what = run_name()
    with checkout_lock(what), tags("selfchat", f"pipeline:{pipeline_id()}"):
        require_dvc_idle(what)
        return run_changed_stages(STAGES, params_file)


if __name__ == "__main__":
    run_stage(distill)

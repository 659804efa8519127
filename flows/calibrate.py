"""Stage 6, calibrate: the guardrail judge and the phrase matcher against human labels (JailbreakBench).

Runs once per judge configuration; evaluate reports each verdict source's agreement next to its metrics
and gates on the better-agreeing one."""

from __future__ import annotations

import shutil

import mlflow

from flows.stage import report_metrics, run_stage, stage_flow, step, tracked_stage
from tasks.calibrate.agreement import calibrate, labelled_responses
from tasks.core.config import Params
from tasks.core.jsonl import write_jsonl
from tasks.core.paths import CALIBRATION_REPORTS, LOGS
from tasks.scoring.judge import RUBRIC_VERSION, Judge
from tasks.services.llm_endpoint import endpoint


@stage_flow("calibrate")
def calibrate_judge(all_params: Params) -> dict:
    params = all_params.evaluate.judge
    rows = labelled_responses(params.calibration_limit)
    with tracked_stage("calibrate", params), endpoint(params, LOGS / "judge_server.log") as base_url:
        metrics, records = step(calibrate, "judge-and-matcher-vs-humans")(
            rows, Judge(params, base_url), params.concurrency, params.min_kappa)
        metrics = {"judge_model": params.model, "rubric": RUBRIC_VERSION, **metrics}
        shutil.rmtree(CALIBRATION_REPORTS, ignore_errors=True)
        write_jsonl(CALIBRATION_REPORTS / "verdicts.jsonl", records)
        report_metrics("calibrate", metrics, {f"{s}_kappa": metrics[s]["kappa"] for s in ("judge", "matcher")})
        mlflow.log_artifacts(str(CALIBRATION_REPORTS), "calibrate")
    for source in ("judge", "matcher"):
        m = metrics[source]
        print(f"{source}: agreement with humans {m['accuracy']} [{m['accuracy_low']}, {m['accuracy_high']}], "
              f"kappa {m['kappa']} ({'trusted' if m['trustworthy'] else 'UNTRUSTWORTHY'}), "
              f"{m['parse_failures']} unparsed of {len(rows)}")
    return metrics


if __name__ == "__main__":
    run_stage(calibrate_judge)

"""Stage 4, validate: the dialogue data contract (great-expectations), quarantine, train/held-out split."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
from prefect import flow

from flows.stage import run_stage, step
from tasks.config import load_params
from tasks.contracts import check_dialogues, load_suite
from tasks.jsonl import read_jsonl, write_json, write_jsonl
from tasks.paths import DATA_DOCS, DIALOGUES, HELDOUT, QUARANTINE_VALIDATE, TRAIN, metrics_file
from tasks.splits import split_by_seed
from tasks.tracking import stage_run


@flow(name="validate", log_prints=True)
def validate(params_file: str = "params.yaml") -> dict:
    params = load_params(Path(params_file)).validate_
    dialogues = list(read_jsonl(DIALOGUES))
    with stage_run("validate", params):
        shutil.rmtree(DATA_DOCS, ignore_errors=True)
        passed, quarantined, quality = step(check_dialogues, "data-contract")(
            dialogues, load_suite(Path(params.suite)), DATA_DOCS)
        train, heldout = split_by_seed(passed, params.heldout_fraction, params.seed)
        write_jsonl(QUARANTINE_VALIDATE, quarantined)
        write_jsonl(TRAIN, train)
        write_jsonl(HELDOUT, heldout)
        quality.update(train=len(train), heldout=len(heldout))
        write_json(metrics_file("quality"), quality)
        mlflow.log_metrics({k: v for k, v in quality.items() if isinstance(v, int | float)})
        mlflow.log_dict(quality, "quality.json")
        mlflow.log_artifacts(str(DATA_DOCS), "data_docs")
    print(f"{quality['passed']}/{quality['dialogues']} dialogues meet the contract; "
          f"train {len(train)}, held-out {len(heldout)}; quarantined by reason: "
          f"{quality['failed_rows_by_expectation']}")
    return quality


if __name__ == "__main__":
    run_stage(validate)

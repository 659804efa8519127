"""Stage 4, validate: data contracts (great-expectations), duplicates, contamination, quarantine, split."""

from __future__ import annotations

import shutil

import mlflow

from flows.stage import report_metrics, run_stage, stage_flow, step, tracked_stage
from tasks.core.config import Params
from tasks.core.jsonl import read_jsonl, write_json, write_jsonl
from tasks.core.paths import (
    BAIZE_EXPORT,
    DATA_DOCS,
    DIALOGUES,
    HELDOUT,
    QUALITY_REPORTS,
    QUARANTINE_VALIDATE,
    SEEDS,
    TRAIN,
)
from tasks.services.tracking import pipeline_id
from tasks.validate.dedup import near_duplicate_groups
from tasks.validate.export import export_baize
from tasks.validate.quality import on_topic_thresholds, validate_corpus
from tasks.validate.report import on_topic_examples, quality_summary, write_distributions
from tasks.validate.splits import split_by_seed


@stage_flow("validate")
def validate(all_params: Params) -> dict:
    params = all_params.validate_
    dialogues, seeds = list(read_jsonl(DIALOGUES)), list(read_jsonl(SEEDS))
    with tracked_stage("validate", params):
        shutil.rmtree(DATA_DOCS, ignore_errors=True)
        shutil.rmtree(QUALITY_REPORTS, ignore_errors=True)
        verdict = step(validate_corpus, "data-quality")(dialogues, seeds, params, DATA_DOCS,
                                                          f"validate-{pipeline_id()}")
        # the same question from two sources must not sit on both sides of the split
        groups = near_duplicate_groups({d["seed_id"]: d.get("topic") or "" for d in dialogues},
                                       params.seed_near_duplicate_threshold)
        train, heldout = split_by_seed(verdict.passed, params.heldout_fraction, params.seed,
                                       params.min_heldout_seeds, groups)
        write_jsonl(QUARANTINE_VALIDATE, verdict.quarantined)
        write_jsonl(TRAIN, train)
        write_jsonl(HELDOUT, heldout)
        write_json(BAIZE_EXPORT, export_baize(train + heldout))  # the checked corpus in Baize's released format
        quality = {**verdict.metrics, "train": len(train), "heldout": len(heldout)}
        summary = QUALITY_REPORTS / "summary.md"
        QUALITY_REPORTS.mkdir(parents=True)
        quarantined_ids = {q["id"] for q in verdict.quarantined}
        summary.write_text(quality_summary(quality, verdict.quarantined) + on_topic_examples(
            verdict.features, dialogues, quarantined_ids, on_topic_thresholds(params)))
        write_distributions(verdict.features, quarantined_ids,
                            QUALITY_REPORTS / "distributions.png")
        # expectation names are no MLflow metric names: the counts by reason stay in quality.json
        report_metrics("quality", quality, {"pass_rate": quality["pass_rate"], "train": len(train),
                                            "heldout": len(heldout)},
                       {k: v for k, v in quality.items() if isinstance(v, int | float)}
                       | {f"declines.{k}": v for k, v in quality["declines"].items()})
        mlflow.log_dict(quality, "quality.json")
        mlflow.log_artifacts(str(QUALITY_REPORTS), "quality")
        mlflow.log_artifacts(str(DATA_DOCS), "data_docs")
    print(f"{quality['passed']}/{quality['dialogues']} dialogues pass; train {len(train)}, held-out "
          f"{len(heldout)}; quarantined by reason: {quality['quarantined_by_reason']} (see {summary})")
    return quality


if __name__ == "__main__":
    run_stage(validate, needs=[SEEDS, DIALOGUES])

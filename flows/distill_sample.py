"""Distill stage 1, distill-sample: the parent (the registry's champion by default) answers k times each of
a set of questions that are not corpus seeds. Resumable: a killed run keeps every answered question."""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow

from flows.stage import run_stage, step, tracked_stage
from tasks.core.config import load_params
from tasks.core.jsonl import read_jsonl, write_json, write_jsonl
from tasks.core.paths import (
    BASE_DIR,
    DISTILL_JOURNALS,
    DISTILL_QUESTIONS,
    DISTILL_SAMPLES,
    PARENT_DIR,
    SEEDS,
    metrics_file,
)
from tasks.distill.questions import draw_questions
from tasks.distill.sampling import sample_pending, sample_rows, sampling_journal
from tasks.engine.journal import Journal
from tasks.models.student import load_adapted, load_tokenizer
from tasks.register.registry import fetch_adapter
from tasks.services.tracking import log_headline, numeric_metrics


@flow(name="distill-sample", log_prints=True)
def distill_sample(params_file: str = "params.yaml") -> dict:
    all_params = load_params(Path(params_file))
    params, asked = all_params.distill, all_params.distill.questions
    corpus_seeds = {seed["id"] for seed in read_jsonl(SEEDS)}
    questions, stats = draw_questions(asked.sources, corpus_seeds, asked.size, asked.seed, asked.min_chars,
                                      asked.max_chars)
    with tracked_stage("distill-sample", params):
        parent = step(fetch_adapter, "fetch-parent")(all_params.register_.model_name, params.parent, BASE_DIR,
                                                     PARENT_DIR)
        with Journal(sampling_journal(DISTILL_JOURNALS, parent, params.sampling), read_siblings=False) as journal:
            for repair in journal.repairs:
                print(f"warning: {repair}")
            resumed = sum(journal.done(q["id"]) for q in questions)
            sampled = 0
            if resumed < len(questions):  # no pending question, no model loaded
                model = load_adapted(BASE_DIR, PARENT_DIR, all_params.base.dtype, all_params.train.quantization)
                sampled = step(sample_pending, "sample-answers")(model, load_tokenizer(BASE_DIR), questions,
                                                                 params.sampling, journal)
            rows = sample_rows(questions, journal, parent)
        write_jsonl(DISTILL_QUESTIONS, questions)
        write_jsonl(DISTILL_SAMPLES, rows)
        metrics = {"questions": len(questions), "samples": len(rows), "resumed": resumed, "sampled_now": sampled,
                   "empty_answers": sum(not row["answer"] for row in rows), "parent_version": int(parent["version"]),
                   "pool": stats}
        write_json(metrics_file("distill_sample"), metrics)
        mlflow.log_metrics(numeric_metrics(metrics))
        mlflow.log_params({f"parent.{k}": v for k, v in parent.items()})
        log_headline({"samples": len(rows), "parent_version": int(parent["version"])})
    print(f"{len(rows)} answers to {len(questions)} questions from {parent['model_name']} version "
          f"{parent['version']} ({resumed} questions already answered)")
    return metrics


if __name__ == "__main__":
    run_stage(distill_sample, needs=[BASE_DIR, SEEDS])

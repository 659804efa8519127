"""Distill stage 1, distill-sample: the parent (the registry's champion by default) answers k times each of
a set of questions that are not corpus seeds. Resumable: a killed run keeps every answered question."""

from __future__ import annotations

import mlflow

from flows.stage import report_metrics, run_stage, stage_flow, step, tracked_stage, warn
from tasks.core.config import Params
from tasks.core.jsonl import read_jsonl, write_jsonl
from tasks.core.paths import (
    BASE_DIR,
    DISTILL_JOURNALS,
    DISTILL_QUESTIONS,
    DISTILL_SAMPLES,
    PARENT_DIR,
    SEEDS,
)
from tasks.distill.questions import draw_questions
from tasks.distill.sampling import sample_pending, sample_rows, sampling_journal
from tasks.engine.journal import Journal
from tasks.models.student import load_adapted, load_tokenizer
from tasks.register.registry import fetch_adapter


@stage_flow("distill-sample")
def distill_sample(all_params: Params) -> dict:
    params, asked = all_params.distill, all_params.distill.questions
    corpus_seeds = {seed["id"] for seed in read_jsonl(SEEDS)}
    questions, stats = draw_questions(asked.sources, corpus_seeds, asked.size, asked.seed, asked.min_chars,
                                      asked.max_chars)
    with tracked_stage("distill-sample", params):
        parent = step(fetch_adapter, "fetch-parent")(all_params.register_.model_name, params.parent, BASE_DIR,
                                                     PARENT_DIR)
        with Journal(sampling_journal(DISTILL_JOURNALS, parent, params.sampling), read_siblings=False) as journal:
            for repair in journal.repairs:
                warn(repair)
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
        mlflow.log_params({f"parent.{k}": v for k, v in parent.items()})
        report_metrics("distill_sample", metrics, {"samples": len(rows), "parent_version": int(parent["version"])})
    print(f"{len(rows)} answers to {len(questions)} questions from {parent['model_name']} version "
          f"{parent['version']} ({resumed} questions already answered)")
    return metrics


if __name__ == "__main__":
    run_stage(distill_sample, needs=[BASE_DIR, SEEDS])

"""Distill stage 3, distill-train: the best answer per question trains the parent adapter further (Baize v2's
self-distillation), a DPO variant learns from best-vs-worst pairs, the parent and the variants are evaluated
on the same items, and the chosen variant is registered as a challenger: promoted only by the
champion-vs-challenger gate."""

from __future__ import annotations

import shutil
from functools import partial

import mlflow

from flows.evaluate import measure
from flows.register import register_adapter_once
from flows.stage import report_metrics, run_stage, stage_flow, step, tracked_stage
from tasks.core.config import Params
from tasks.core.jsonl import read_jsonl, write_json, write_jsonl
from tasks.core.paths import (
    BASE_DIR,
    DISTILL_BEST,
    DISTILL_CHECKPOINTS,
    DISTILL_ITEMS,
    DISTILL_PAIRS,
    DISTILL_REPORTS,
    DISTILL_SAMPLES,
    DISTILL_SCORES,
    DISTILL_UNUSED,
    DPO_DIR,
    HELDOUT,
    LOGS,
    PARENT_DIR,
    QUARANTINE_DISTILL_JUDGE,
    SFT_DIR,
    metrics_file,
)
from tasks.distill.dpo import train_dpo, write_no_dpo_note
from tasks.distill.judging import RUBRIC_VERSION
from tasks.distill.report import (
    PARENT,
    challenger_items,
    compare_with_parent,
    comparison_markdown,
    corpus_card,
    plot_scores,
    round_tags,
    score_summary,
    summary_page,
    write_variant_cards,
)
from tasks.distill.selection import require_training_data, select_training_data
from tasks.evaluate.compare import as_adapter, load_side_by_side
from tasks.evaluate.stored import Measured, judge_endpoint, read_calibration
from tasks.models.student import load_base_model, load_tokenizer
from tasks.register.decision import Distilled
from tasks.register.gates import not_gated
from tasks.train.launch import train_further
from tasks.train.lora import use_bf16

VARIANT_DIRS = {"sft": SFT_DIR, "dpo": DPO_DIR}
DATA_FILES = {"sft": DISTILL_BEST, "dpo": DISTILL_PAIRS}
CHALLENGER_ITEMS = DISTILL_REPORTS / "challenger_items.jsonl"  # the registered variant's items as `adapter`


def train_sft(all_params: Params, best: list[dict], run_id: str) -> dict[str, float]:
    """The parent adapter trained further on the best answers: its rank and targets, the rest of `train` with
    distill.train's epochs and learning rate."""
    params = all_params.train.model_copy(update={"epochs": all_params.distill.train.epochs, "max_steps": None,
                                                 "learning_rate": all_params.distill.train.learning_rate,
                                                 "early_stopping_patience": None})
    summary = train_further(BASE_DIR, PARENT_DIR, SFT_DIR, DISTILL_CHECKPOINTS, best, params, all_params.base.dtype,
                            run_id)
    return {f"sft_{k}": v for k, v in summary.items() if k in ("train_loss_mean", "steps", "epochs", "examples",
                                                                "train_runtime_s")}


def evaluate_round(all_params: Params, variants: list[str]) -> Measured:
    """The parent and each variant, loaded side by side on one base, measured on the same items."""
    calibration = read_calibration()
    with judge_endpoint(all_params.evaluate, calibration) as judge_url:
        base = load_base_model(BASE_DIR, all_params.base.dtype, all_params.train.quantization)
        model = load_side_by_side(base, {PARENT: PARENT_DIR, **{v: VARIANT_DIRS[v] for v in variants}})
        return measure(model, load_tokenizer(BASE_DIR), [PARENT, *variants], partial(as_adapter, model), all_params,
                       calibration, judge_url)


@stage_flow("distill-train")
def distill_train(all_params: Params) -> dict:
    d = all_params.distill
    rows, verdicts = list(read_jsonl(DISTILL_SAMPLES)), list(read_jsonl(DISTILL_SCORES))
    selection = select_training_data(rows, verdicts, d.select.min_score, d.select.min_margin)
    require_training_data(selection, d.select, d.dpo.enabled, DISTILL_UNUSED)
    parent = rows[0]["parent"]
    variants = ["sft", "dpo"] if d.dpo.enabled else ["sft"]
    summary = score_summary(selection.per_question, len(verdicts), sum(1 for _ in read_jsonl(QUARANTINE_DISTILL_JUDGE)))
    with tracked_stage("distill-train", d) as run:
        write_jsonl(DISTILL_BEST, selection.best)
        write_jsonl(DISTILL_PAIRS, selection.pairs)
        write_jsonl(DISTILL_UNUSED, selection.unused)
        trained = step(train_sft, "sft-train", log_prints=False)(all_params, selection.best, run.info.run_id)
        shutil.rmtree(DPO_DIR, ignore_errors=True)
        if d.dpo.enabled:
            trained |= step(train_dpo, "dpo-train", log_prints=False)(
                BASE_DIR, PARENT_DIR, load_tokenizer(BASE_DIR), selection.pairs, d.dpo, all_params.train,
                all_params.base.dtype, use_bf16(all_params.train.bf16), DPO_DIR)
        else:
            write_no_dpo_note(DPO_DIR)
        training = all_params.train.model_dump() | {"distill": d.model_dump()}
        write_variant_cards({v: VARIANT_DIRS[v] for v in variants}, DATA_FILES, all_params.train, training,
                            all_params.base.model, BASE_DIR, parent, trained)
        found = evaluate_round(all_params, variants)
        table = compare_with_parent(found.items, variants, all_params.evaluate.bootstrap_samples,
                                    all_params.evaluate.seed)
        shutil.rmtree(DISTILL_REPORTS, ignore_errors=True)
        write_jsonl(DISTILL_ITEMS, [i.as_dict() for i in found.items])
        write_jsonl(CHALLENGER_ITEMS, [i.as_dict() for i in challenger_items(found.items, d.challenger)])
        write_jsonl(DISTILL_REPORTS / "samples.jsonl", found.guardrail_samples + found.mtbench_samples)
        write_jsonl(DISTILL_REPORTS / "per_question.jsonl", selection.per_question)
        plot_scores(selection.per_question, d.select.min_score, DISTILL_REPORTS / "scores.png")
        judge = {"model": verdicts[0]["judge"]["model"] if verdicts else "?", "rubric_version": RUBRIC_VERSION}
        card = corpus_card(parent, judge, summary, selection.unused, d.select.min_score, d.select.min_margin)
        (DISTILL_REPORTS / "summary.md").write_text(
            summary_page(parent, card, comparison_markdown(table, variants), found.source, selection))
        metrics = {"parent_version": int(parent["version"]), "challenger": d.challenger, **summary,
                   **{k: round(v, 6) for k, v in trained.items() if "runtime" not in k},
                   "verdict_source": found.source, "comparison": table}
        write_json(LOGS / "distill_seconds.json", {k: round(v, 1) for k, v in found.seconds.items()}
                   | {k: round(v, 1) for k, v in trained.items() if "runtime" in k})
        mlflow.log_artifacts(str(DISTILL_REPORTS), "distill")
        report_metrics("distill_train", metrics, {"questions_kept": summary["questions_kept"],
                                                  "pairs": summary["pairs"]})
    tags = round_tags(parent, d.challenger, judge["model"], DISTILL_SAMPLES)
    distilled = Distilled(str(parent["version"]), [i for i in found.items if i.model == PARENT], tags,
                          {"params": d.model_dump(), **tags})
    decision = register_adapter_once(all_params, VARIANT_DIRS[d.challenger], CHALLENGER_ITEMS, None, distilled,
                                     not_gated(found.provenance, all_params.register_.gate_uncalibrated))
    print(f"SDF round from version {parent['version']}: {summary['questions_kept']} of {summary['questions']} "
          f"questions trained, {summary['pairs']} pairs; challenger ({d.challenger}): {decision['decision']}")
    return metrics | {"decision": decision}


if __name__ == "__main__":
    run_stage(distill_train, needs=[BASE_DIR, PARENT_DIR, DISTILL_SAMPLES, DISTILL_SCORES, HELDOUT,
                                    metrics_file("calibrate")])

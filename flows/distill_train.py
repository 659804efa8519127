"""Distill stage 3, distill-train: the best answer per question trains the parent adapter further (Baize v2's
self-distillation), a DPO variant learns from best-vs-worst pairs, the parent and the variants are evaluated
on the same items, and the chosen variant is registered as a challenger: promoted only by the
champion-vs-challenger gate."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import mlflow
from peft import PeftModel
from prefect import flow

from flows.evaluate import measure
from flows.register import register_adapter_once
from flows.stage import run_stage, step, tracked_stage
from tasks.core.config import Params, load_params
from tasks.core.errors import SelfchatError
from tasks.core.jsonl import read_jsonl, write_json, write_jsonl
from tasks.core.masking import build_examples
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
from tasks.distill.dpo import NoPairs, train_dpo
from tasks.distill.judging import RUBRIC_VERSION
from tasks.distill.report import (
    PARENT,
    compare_with_parent,
    comparison_markdown,
    corpus_card,
    plot_scores,
    score_summary,
)
from tasks.distill.selection import Selection, select_training_data
from tasks.evaluate.compare import as_adapter
from tasks.evaluate.stored import Measured, judge_endpoint
from tasks.models.adapter_card import write_adapter_card
from tasks.models.student import file_sha256, folder_sha256, load_base_model, load_tokenizer
from tasks.register.decision import Distilled
from tasks.register.gates import not_gated
from tasks.scoring.stats import ADAPTER, Item
from tasks.services.tracking import log_headline, numeric_metrics
from tasks.train.checkpoints import fingerprint_of, training_environment
from tasks.train.launch import TrainJob, run_training
from tasks.train.lora import use_bf16

VARIANT_DIRS = {"sft": SFT_DIR, "dpo": DPO_DIR}
CHALLENGER_ITEMS = DISTILL_REPORTS / "challenger_items.jsonl"  # the registered variant's items as `adapter`


class NothingToDistill(SelfchatError):
    pass


def train_sft(all_params: Params, best: list[dict[str, Any]], run_id: str) -> dict[str, float]:
    """The parent adapter trained further on the best answers (its rank and targets; the rest of `train`
    with distill.train's epochs and learning rate), resumable from its checkpoints."""
    params = all_params.train.model_copy(update={"epochs": all_params.distill.train.epochs, "max_steps": None,
                                                 "learning_rate": all_params.distill.train.learning_rate,
                                                 "early_stopping_patience": None})
    tokenizer = load_tokenizer(BASE_DIR)
    examples, _ = build_examples(best, tokenizer, params.format, params.max_length)
    fingerprint = fingerprint_of(params=params.model_dump(exclude={"threads"}), dtype=all_params.base.dtype,
                                 base=folder_sha256(BASE_DIR), parent=folder_sha256(PARENT_DIR), examples=examples,
                                 validation=[], **training_environment())
    shutil.rmtree(SFT_DIR, ignore_errors=True)
    job = TrainJob(str(BASE_DIR), str(SFT_DIR), str(DISTILL_CHECKPOINTS), params.model_dump(), all_params.base.dtype,
                   fingerprint, examples, [], run_id, init_adapter=str(PARENT_DIR))
    outcome = run_training(job, params.processes)
    return {f"sft_{k}": v for k, v in outcome.summary.items() if k in ("train_loss_mean", "steps", "epochs",
                                                                        "examples", "train_runtime_s")}


def write_cards(all_params: Params, variants: list[str], parent: dict[str, Any], trained: dict[str, float]) -> None:
    """Each variant's model card: its parent version and the distilled data it learned from."""
    base_sha256 = folder_sha256(BASE_DIR)
    for variant in variants:
        data_file = DISTILL_BEST if variant == "sft" else DISTILL_PAIRS
        data = {"method": f"Self-Distill with Feedback, {variant.upper()} on the parent adapter",
                "parent": f"{parent['model_name']} version {parent['version']} (adapter sha256 "
                          f"`{parent['adapter_sha256']}`)",
                "distilled data": f"`{data_file}` (sha256 `{file_sha256(data_file)}`)",
                "judge rubric": RUBRIC_VERSION}
        results = {k: v for k, v in trained.items() if k.startswith(variant) and "runtime" not in k}
        training = all_params.train.model_dump() | {"distill": all_params.distill.model_dump()}
        write_adapter_card(VARIANT_DIRS[variant], all_params.base.model, base_sha256, all_params.train.format,
                           all_params.train.max_length, training, data, results)


def evaluate_round(all_params: Params, variants: list[str]) -> Measured:
    """The parent and each variant, loaded side by side on one base, measured on the same items."""
    calibration = json.loads(metrics_file("calibrate").read_text())
    with judge_endpoint(all_params.evaluate, calibration) as judge_url:
        base = load_base_model(BASE_DIR, all_params.base.dtype, all_params.train.quantization)
        model = PeftModel.from_pretrained(base, PARENT_DIR, adapter_name=PARENT)
        for variant in variants:
            model.load_adapter(VARIANT_DIRS[variant], adapter_name=variant)
        return measure(model, load_tokenizer(BASE_DIR), [PARENT, *variants], partial(as_adapter, model), all_params,
                       judge_url)


def summary_page(parent: dict[str, Any], card: str, table_md: str, source: str, selection: Selection) -> str:
    examples = []
    for pair in selection.pairs[:3]:
        examples += [f"**Q:** {pair['question']}", "",
                     f"- best ({pair['provenance']['score']:g}): {pair['chosen'][:400]}",
                     f"- worst ({pair['provenance']['rejected_score']:g}): {pair['rejected'][:400]}", ""]
    for unused in selection.unused[:3]:
        examples += [f"**Q (unused):** {unused['question']} — {unused['reason']}", ""]
    return "\n".join([f"# Self-Distill with Feedback: a round from {parent['model_name']} version {parent['version']}",
                      "", card, "![judge scores](scores.png)", "",
                      "## The variants against the parent, on the same items", "",
                      "95% intervals (Wilson for rates, bootstrap otherwise); differences are paired. Guardrail "
                      f"rates without a suffix use the verdict source **{source}** (see the calibrate stage).", "",
                      table_md, "## Examples", "", *examples])


def challenger_items(items: list[Item], variant: str) -> list[Item]:
    """The registered variant's items as `adapter` (the bar a later challenger meets), with the parent's."""
    return [Item(i.metric, ADAPTER, i.item, i.num, i.den, i.higher_is_better, i.transform) if i.model == variant else i
            for i in items if i.model in (variant, PARENT)]


@flow(name="distill-train", log_prints=True)
def distill_train(params_file: str = "params.yaml") -> dict:
    all_params = load_params(Path(params_file))
    d = all_params.distill
    rows, verdicts = list(read_jsonl(DISTILL_SAMPLES)), list(read_jsonl(DISTILL_SCORES))
    quarantined = sum(1 for _ in read_jsonl(QUARANTINE_DISTILL_JUDGE))
    selection = select_training_data(rows, verdicts, d.select.min_score, d.select.min_margin)
    if not selection.best:
        raise NothingToDistill(f"no question's best answer scores distill.select.min_score {d.select.min_score} or "
                               f"more: nothing to train on (the reasons are in {DISTILL_UNUSED} after a run with a "
                               "lower min_score)")
    if d.dpo.enabled and not selection.pairs:  # before any training: a round either trains both or neither
        raise NoPairs(f"no preference pairs: a pair needs two scored answers to one question, different texts "
                      f"whose scores differ by distill.select.min_margin ({d.select.min_margin}) or more (see "
                      f"{DISTILL_UNUSED} and metrics/distill_judge.json); lower it, or set distill.dpo.enabled: false")
    parent = rows[0]["parent"]
    variants = ["sft", "dpo"] if d.dpo.enabled else ["sft"]
    summary = score_summary(selection.per_question, len(verdicts), quarantined)
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
        else:  # the folder is a DVC output: it says why it holds no adapter
            DPO_DIR.mkdir(parents=True)
            (DPO_DIR / "README.md").write_text("No DPO variant: distill.dpo.enabled is false.\n")
        write_cards(all_params, variants, parent, trained)
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
        write_json(metrics_file("distill_train"), metrics)
        write_json(LOGS / "distill_seconds.json", {k: round(v, 1) for k, v in found.seconds.items()}
                   | {k: round(v, 1) for k, v in trained.items() if "runtime" in k})
        mlflow.log_metrics(numeric_metrics(metrics))
        mlflow.log_artifacts(str(DISTILL_REPORTS), "distill")
        log_headline({"questions_kept": summary["questions_kept"], "pairs": summary["pairs"]})
    tags = {"distill.parent_version": str(parent["version"]), "distill.parent_adapter_sha256": parent["adapter_sha256"],
            "distill.variant": d.challenger, "distill.judge_model": judge["model"],
            "distill.rubric_version": RUBRIC_VERSION, "distill.samples_sha256": file_sha256(DISTILL_SAMPLES)}
    parent_items = [i for i in found.items if i.model == PARENT]
    distilled = Distilled(str(parent["version"]), parent_items, tags, {"params": d.model_dump(), **tags})
    ungated = not_gated(found.provenance, all_params.register_.gate_uncalibrated)
    decision = register_adapter_once(all_params, VARIANT_DIRS[d.challenger], CHALLENGER_ITEMS, None, distilled,
                                     ungated)
    print(f"SDF round from version {parent['version']}: {summary['questions_kept']} of {summary['questions']} "
          f"questions trained, {summary['pairs']} pairs; challenger ({d.challenger}): {decision['decision']}")
    return metrics | {"decision": decision}


if __name__ == "__main__":
    run_stage(distill_train, needs=[BASE_DIR, PARENT_DIR, DISTILL_SAMPLES, DISTILL_SCORES, HELDOUT,
                                    metrics_file("calibrate")])

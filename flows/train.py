"""Stage 5, train: LoRA on the base model, loss on the assistant's turns only."""

from __future__ import annotations

import mlflow

from flows.stage import report_metrics, run_stage, stage_flow, step, tracked_stage
from tasks.core.config import Params
from tasks.core.hashing import file_sha256, folder_sha256
from tasks.core.jsonl import read_jsonl
from tasks.core.masking import build_examples
from tasks.core.paths import ADAPTER_DIR, BASE_DIR, CHECKPOINTS, PLOTS, TRAIN
from tasks.models.adapter_card import write_adapter_card
from tasks.models.pyfunc import log_chat_model
from tasks.models.student import load_tokenizer
from tasks.train.data import split_validation
from tasks.train.launch import run_training, training_job
from tasks.train.plots import write_loss_curves

CARD_RESULTS = ("steps", "epochs", "train_loss_mean", "eval_loss", "eval_loss_best")  # the same on every rebuild


@stage_flow("train")
def train(all_params: Params) -> dict[str, float]:
    params, dtype = all_params.train, all_params.base.dtype
    train_dialogues, validation_dialogues = split_validation(list(read_jsonl(TRAIN)), params.validation_fraction,
                                                             params.seed)
    with tracked_stage("train", params) as run:
        tokenizer = load_tokenizer(BASE_DIR)
        examples, emptied = step(build_examples, "tokenize-and-mask")(
            train_dialogues, tokenizer, params.format, params.max_length)
        validation, _ = step(build_examples, "tokenize-and-mask-validation")(
            validation_dialogues, tokenizer, params.format, params.max_length)
        base_sha256 = step(folder_sha256, "hash-base")(BASE_DIR)
        job = training_job(BASE_DIR, base_sha256, ADAPTER_DIR, CHECKPOINTS, params, dtype, examples, validation,
                           run.info.run_id)
        # no print capture: datasets' hashing (dill) disassembles functions by capturing print, which Prefect's
        # log_prints would turn into pages of bytecode in the log
        outcome = step(run_training, "lora-train", log_prints=False)(job, params.processes)
        summary = outcome.summary | {"dialogues_emptied_by_truncation": float(emptied)}
        data = {"corpus": f"`{TRAIN}` (sha256 `{file_sha256(TRAIN)}`)", "dialogues trained on": len(examples),
                "dialogues for the validation loss": len(validation),
                "trained (assistant) tokens per epoch": int(summary["trained_tokens_per_epoch"])}
        write_adapter_card(ADAPTER_DIR, all_params.base.model, base_sha256, params.format, params.max_length,
                           params.model_dump(), data, {k: summary[k] for k in CARD_RESULTS if k in summary})
        # the adapter as an MLflow model (pyfunc): what the registry versions and `mlflow.pyfunc.load_model` use
        step(log_chat_model, "log-mlflow-model")(ADAPTER_DIR, BASE_DIR, base_sha256, dtype, params.quantization,
                                                 all_params.evaluate.guardrail_prompt)
        curves = write_loss_curves(outcome.history, PLOTS)
        # eval_loss is in the run already, step by step (one name, one meaning in MLflow and metrics/train.json)
        headline = {k: summary[k] for k in ("steps", "train_loss_mean", "eval_loss") if k in summary}
        report_metrics("train", summary, headline, {k: v for k, v in summary.items() if k != "eval_loss"})
        mlflow.log_artifact(str(curves["png"]))
    print(f"trained {summary['trainable_params']:.0f} LoRA parameters on {len(examples)} dialogues "
          f"({len(validation)} for validation), {summary['steps']:.0f} steps; "
          f"mean loss {summary['train_loss_mean']:.3f}"
          + (f", validation loss {summary['eval_loss']:.3f}" if "eval_loss" in summary else ""))
    return summary


if __name__ == "__main__":
    run_stage(train, needs=[BASE_DIR, TRAIN])

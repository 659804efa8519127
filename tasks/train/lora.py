"""LoRA fine-tuning of the base model with peft and the Hugging Face Trainer."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from mlflow import MlflowClient
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import (
    DataCollatorForSeq2Seq,
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from tasks.core.config import TrainParams
from tasks.core.errors import SelfchatError
from tasks.core.masking import IGNORE, Example
from tasks.models.student import load_base_model
from tasks.train.loss import TrainedPositionsTrainer

log = logging.getLogger(__name__)


class TrainingError(SelfchatError):
    pass


def native_bf16() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_bf16(setting: bool | str) -> bool:
    """train.bf16 resolved for this machine; forcing it where it is emulated is allowed, with a warning."""
    native = native_bf16()
    if setting == "auto":
        log.info("bf16 autocast %s (native bf16: %s)", "on" if native else "off", native)
        return native
    if setting and not native:
        log.warning("train.bf16 is true but this machine has no native bf16: training will be far slower than fp32")
    return bool(setting)


def lora_model(base_dir: Path, params: TrainParams, dtype: str = "float32") -> PreTrainedModel:
    """`dtype` is base.dtype, the precision the base weights are kept in (LoRA weights follow it)."""
    model = load_base_model(base_dir, dtype, params.quantization)
    if params.quantization != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=params.gradient_checkpointing)
    config = LoraConfig(r=params.lora.r, lora_alpha=params.lora.alpha, lora_dropout=params.lora.dropout,
                        target_modules=params.lora.targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


class _LiveMetrics(TrainerCallback):
    """Step losses to the stage's MLflow run as they come (from the main process only)."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - Trainer's signature
        if self.run_id is None or not state.is_world_process_zero or not logs:
            return
        for key in ("loss", "eval_loss", "learning_rate"):
            if key in logs:
                MlflowClient().log_metric(self.run_id, key, float(logs[key]), step=state.global_step)


@dataclass
class TrainingOutcome:
    summary: dict[str, float]
    # the Trainer's log: {"step", "loss" | "eval_loss", ...} per logged step, steps before a resume included
    history: list[dict[str, Any]] = field(default_factory=list)


def training_arguments(params: TrainParams, output_dir: Path, has_validation: bool) -> TrainingArguments:
    evaluate = "steps" if has_validation else "no"
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=params.epochs or 1.0, max_steps=params.max_steps or -1,
        per_device_train_batch_size=params.batch_size // params.processes,
        per_device_eval_batch_size=params.batch_size // params.processes,
        gradient_accumulation_steps=params.grad_accum, learning_rate=params.learning_rate,
        lr_scheduler_type=params.lr_scheduler, logging_steps=1,
        warmup_steps=params.warmup_ratio,  # transformers 5: a float below 1 is a share of the steps
        eval_strategy=evaluate, eval_steps=params.eval_steps, prediction_loss_only=True,
        # checkpoints every save_steps (evaluation steps when early stopping keeps the best)
        save_strategy="steps", save_steps=params.eval_steps if params.early_stopping_patience else params.save_steps,
        save_total_limit=1 if not params.early_stopping_patience else 2,
        load_best_model_at_end=params.early_stopping_patience is not None, metric_for_best_model="eval_loss",
        activation_checkpointing=params.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        train_sampling_strategy="group_by_length" if params.group_by_length else "random",
        report_to="none", seed=params.seed, data_seed=params.seed, bf16=use_bf16(params.bf16),
        use_cpu=not torch.cuda.is_available(), remove_unused_columns=False, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def as_dataset(examples: list[Example]) -> Dataset:
    return Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])


def trained_tokens(examples: list[Example]) -> int:
    """Tokens the loss is taken on: trained labels after the one-position shift."""
    return sum(sum(label != IGNORE for label in e.labels[1:]) for e in examples)


def train_lora(base_dir: Path, tokenizer: PreTrainedTokenizerBase, examples: list[Example],
               validation: list[Example], params: TrainParams, checkpoints: Path, resume: str | None = None,
               dtype: str = "float32", run_id: str | None = None,
               init_adapter: Path | None = None) -> tuple[PeftModel, TrainingOutcome]:
    """Train with checkpoints in `checkpoints`, from the checkpoint `resume` if given; run_id is the MLflow
    run that receives live step metrics. With `init_adapter`, that adapter is trained further (its rank and
    targets; params.lora is not used) instead of a new one."""
    if not examples:
        raise TrainingError("no training examples: the train split is empty")
    if params.early_stopping_patience and not validation:
        raise TrainingError("train.early_stopping_patience needs validation examples, and the validation slice is "
                            "empty (one seed group in the train split, or truncation emptied it)")
    if params.processes > 1 and torch.cuda.is_available() and params.processes > torch.cuda.device_count():
        raise TrainingError(f"train.processes: {params.processes} but {torch.cuda.device_count()} GPU(s)")
    torch.set_num_threads(params.threads)
    set_seed(params.seed)  # LoRA's A matrices are drawn when the model is made, before the Trainer seeds
    if init_adapter is None:
        model = lora_model(base_dir, params, dtype)
    else:
        model = PeftModel.from_pretrained(load_base_model(base_dir, dtype, params.quantization), init_adapter,
                                          is_trainable=True)
    trainable, total = model.get_nb_trainable_parameters()
    args = training_arguments(params, checkpoints, bool(validation))
    callbacks: list[TrainerCallback] = [_LiveMetrics(run_id)]
    if params.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=params.early_stopping_patience))
    trainer = TrainedPositionsTrainer(
        model=model, args=args, train_dataset=as_dataset(examples),
        eval_dataset=as_dataset(validation) if validation else None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE),
        callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=resume)
    history = [dict(entry) for entry in trainer.state.log_history]
    eval_losses = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    runtime = float(result.metrics["train_runtime"])
    per_epoch = trained_tokens(examples)
    # "train_loss_mean": the Trainer's mean over every step, not the last step's "loss" MLflow plots
    summary = {"train_loss_mean": float(result.training_loss), "train_runtime_s": runtime,
               "steps": float(trainer.state.global_step), "epochs": float(trainer.state.epoch or 0.0),
               "trainable_params": float(trainable), "total_params": float(total),
               "examples": float(len(examples)), "validation_examples": float(len(validation)),
               "trained_tokens_per_epoch": float(per_epoch),
               "trained_tokens_per_s": trainer.trained_tokens_seen() / runtime if runtime else 0.0,
               "resumed_from_step": float(int(resume.rsplit("-", 1)[1])) if resume else 0.0,
               "processes": float(args.world_size), "bf16": float(args.bf16)}
    if eval_losses:
        summary |= {"eval_loss": float(eval_losses[-1]), "eval_loss_best": float(min(eval_losses))}
    return model, TrainingOutcome(summary, history)

"""LoRA fine-tuning of the base model with peft and the Hugging Face Trainer."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    BitsAndBytesConfig,
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from tasks.config import TrainParams
from tasks.errors import SelfchatError
from tasks.masking import IGNORE, Example

log = logging.getLogger(__name__)


class TrainingError(SelfchatError):
    pass


def quantization_config(mode: str) -> BitsAndBytesConfig | None:
    if mode == "none":
        return None
    if not torch.cuda.is_available():
        # bitsandbytes loads k-bit models on CPU, but its CPU backward may give wrong gradients.
        raise TrainingError(f"train.quantization: {mode} needs a CUDA GPU; use 'none' on CPU")
    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)


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
    quant = quantization_config(params.quantization)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, dtype), quantization_config=quant)
    if quant is not None:
        model = prepare_model_for_kbit_training(model)
    config = LoraConfig(r=params.lora.r, lora_alpha=params.lora.alpha, lora_dropout=params.lora.dropout,
                        target_modules=params.lora.targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


class _LossLog(TrainerCallback):
    def __init__(self, on_loss: Callable[[int, float], None]) -> None:
        self.on_loss = on_loss

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - Trainer's signature
        if logs and "loss" in logs:
            self.on_loss(state.global_step, float(logs["loss"]))


def train_lora(base_dir: Path, tokenizer: PreTrainedTokenizerBase, examples: list[Example], params: TrainParams,
               on_loss: Callable[[int, float], None], dtype: str = "float32") -> tuple[PeftModel, dict[str, float]]:
    if not examples:
        raise TrainingError("no training examples: the train split is empty")
    torch.set_num_threads(params.threads)
    set_seed(params.seed)  # LoRA's A matrices are drawn when the model is made, before the Trainer seeds
    model = lora_model(base_dir, params, dtype)
    trainable, total = model.get_nb_trainable_parameters()
    dataset = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch, max_steps=params.max_steps, per_device_train_batch_size=params.batch_size,
            gradient_accumulation_steps=params.grad_accum, learning_rate=params.learning_rate,
            warmup_steps=params.warmup_steps, lr_scheduler_type="cosine", logging_steps=1,
            save_strategy="no", report_to="none", seed=params.seed, data_seed=params.seed,
            bf16=use_bf16(params.bf16), use_cpu=not torch.cuda.is_available(), remove_unused_columns=False,
            dataloader_num_workers=0,
        )
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE)
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                          callbacks=[_LossLog(on_loss)])
        result = trainer.train()
    trained_tokens = sum(sum(label != IGNORE for label in e.labels) for e in examples)
    summary = {"train_loss": float(result.training_loss), "train_runtime_s": float(result.metrics["train_runtime"]),
               "trainable_params": float(trainable), "total_params": float(total),
               "examples": float(len(examples)), "trained_tokens_per_epoch": float(trained_tokens),
               "bf16": float(args.bf16)}
    return model, summary

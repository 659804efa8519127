"""The DPO variant (TRL): the parent adapter trained further on best-vs-worst pairs, with the parent itself
as the reference model (TRL keeps a frozen copy of the adapter as `ref`, dropped before saving)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedTokenizerBase, set_seed
from trl import DPOConfig, DPOTrainer

from tasks.core.config import DistillDPO, TrainParams
from tasks.core.dialogue import baize_prompt
from tasks.core.errors import SelfchatError
from tasks.models.generation import STOP
from tasks.models.student import load_base_model, save_adapter

REFERENCE = "ref"  # the name TRL gives the frozen copy of a PeftModel's adapter


class NoPairs(SelfchatError):
    pass


def preference_dataset(pairs: list[dict[str, Any]]) -> Dataset:
    """TRL's standard format in the training format of SFT: the answer closes with the human marker, as the
    SFT target does (TRL appends EOS after it)."""
    return Dataset.from_list([{"prompt": baize_prompt(p["question"]), "chosen": f" {p['chosen']}\n{STOP}",
                               "rejected": f" {p['rejected']}\n{STOP}"} for p in pairs])


def train_dpo(base_dir: Path, parent_dir: Path, tokenizer: PreTrainedTokenizerBase, pairs: list[dict[str, Any]],
              params: DistillDPO, train: TrainParams, dtype: str, bf16: bool, out_dir: Path) -> dict[str, float]:
    """Train and save the adapter to `out_dir`; the summary has TRL's last reward margin and accuracy."""
    if not pairs:
        raise NoPairs("no preference pairs (no question's best and worst answers differ by "
                      "distill.select.min_margin): lower it, or set distill.dpo.enabled: false")
    torch.set_num_threads(train.threads)
    set_seed(train.seed)
    policy = PeftModel.from_pretrained(load_base_model(base_dir, dtype, train.quantization), parent_dir,
                                       is_trainable=True)
    with tempfile.TemporaryDirectory() as scratch:
        config = DPOConfig(output_dir=scratch, beta=params.beta, learning_rate=params.learning_rate,
                           num_train_epochs=params.epochs, per_device_train_batch_size=train.batch_size,
                           gradient_accumulation_steps=train.grad_accum, max_length=train.max_length,
                           lr_scheduler_type=train.lr_scheduler, warmup_steps=train.warmup_ratio,
                           bf16=bf16, use_cpu=not torch.cuda.is_available(), gradient_checkpointing=False,
                           report_to="none", save_strategy="no", logging_steps=1, seed=train.seed,
                           data_seed=train.seed, dataloader_num_workers=0)
        trainer = DPOTrainer(model=policy, args=config, train_dataset=preference_dataset(pairs),
                             processing_class=tokenizer)
        result = trainer.train()
    model = trainer.model
    if REFERENCE in model.peft_config:
        model.delete_adapter(REFERENCE)
    save_adapter(model, out_dir, base_ref=str(base_dir))
    logged = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    last = logged[-1] if logged else {}
    return {"dpo_loss_mean": float(result.training_loss), "dpo_steps": float(trainer.state.global_step),
            "dpo_pairs": float(len(pairs)), "dpo_reward_margin_last": float(last.get("rewards/margins", 0.0)),
            "dpo_reward_accuracy_last": float(last.get("rewards/accuracies", 0.0)),
            "dpo_runtime_s": float(result.metrics["train_runtime"])}


def write_no_dpo_note(folder: Path) -> None:
    """The DPO folder is a DVC output: without a DPO variant it says why it holds no adapter."""
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("No DPO variant: distill.dpo.enabled is false.\n")

"""The student on disk: its tokenizer, and the base model with or without a LoRA adapter."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase


def load_tokenizer(base_dir: Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def save_adapter(model: PeftModel, out_dir: Path, base_ref: str) -> None:
    model.save_pretrained(out_dir)
    # peft records the base path as given; point it at the project's base folder for reloads
    config_path = out_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_ref
    # peft writes target modules from a set, in an order that changes with each process's hash seed
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


def load_adapted(base_dir: Path, adapter_dir: Path, dtype: str = "float32") -> PeftModel:
    """`dtype` is base.dtype: the student is evaluated in the precision it was trained in."""
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, dtype))
    return PeftModel.from_pretrained(base, adapter_dir)

"""The student on disk: its tokenizer, and the base model with or without a LoRA adapter."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tasks.core.errors import SelfchatError


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


class KbitUnavailable(SelfchatError):
    pass


def quantization_config(mode: str) -> BitsAndBytesConfig | None:
    if mode == "none":
        return None
    if not torch.cuda.is_available():
        # bitsandbytes loads k-bit models on CPU, but its CPU backward may give wrong gradients.
        raise KbitUnavailable(f"train.quantization: {mode} needs a CUDA GPU; use 'none' on CPU")
    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)


def _contiguous_input(_module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


def fold_lm_head(model: PreTrainedModel) -> PreTrainedModel:
    """Give the LM head a contiguous input. `logits_to_keep` slices the last positions (every generation step,
    every scored continuation), and torch's matmul folds such a slice into one matrix product only when the
    weight requires grad; a frozen head (a merged or PEFT model) got a batched product against the 262k-row
    head instead, 2x slower on CPU (bench/lm_head.py). Contiguous inputs, as in training, are untouched."""
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_contiguous_input)
    return model


def load_base_model(base_dir: Path, dtype: str = "float32", quantization: str = "none") -> PreTrainedModel:
    """The base as training loads it (base.dtype, train.quantization), on the GPU when there is one."""
    quant = quantization_config(quantization)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, dtype), quantization_config=quant)
    if quant is None and torch.cuda.is_available():
        model = model.to("cuda")
    return fold_lm_head(model)


def load_adapted(base_dir: Path, adapter_dir: Path, dtype: str = "float32", quantization: str = "none") -> PeftModel:
    """The student evaluated the way it was trained: same precision, same k-bit loading, same device."""
    return PeftModel.from_pretrained(load_base_model(base_dir, dtype, quantization), adapter_dir)


def load_for_evaluation(base_dir: Path, adapter_dir: Path, dtype: str = "float32",
                        quantization: str = "none") -> PreTrainedModel:
    """The adapter merged into its base, the artifact `make serve` runs, and as fast as the base alone
    (bench/eval_merge.py). A k-bit base stays unmerged: merging into quantized weights rounds the update."""
    model = load_adapted(base_dir, adapter_dir, dtype, quantization)
    return model if quantization != "none" else model.merge_and_unload()

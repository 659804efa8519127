"""The student on disk: its tokenizer, and the base model with or without a LoRA adapter."""

from __future__ import annotations

import hashlib
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

from tasks.errors import SelfchatError


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


def load_base_model(base_dir: Path, dtype: str = "float32", quantization: str = "none") -> PreTrainedModel:
    """The base as training loads it (base.dtype, train.quantization), on the GPU when there is one."""
    quant = quantization_config(quantization)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, dtype), quantization_config=quant)
    if quant is None and torch.cuda.is_available():
        model = model.to("cuda")
    return model


def load_adapted(base_dir: Path, adapter_dir: Path, dtype: str = "float32", quantization: str = "none") -> PeftModel:
    """The student evaluated the way it was trained: same precision, same k-bit loading, same device."""
    return PeftModel.from_pretrained(load_base_model(base_dir, dtype, quantization), adapter_dir)


def folder_sha256(folder: Path) -> str:
    """Content hash of a model folder (every file, by relative path): which base an adapter was trained on."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


ADAPTER_CARD = "selfchat.json"  # what the adapter was trained on and how to use it, next to peft's files


def write_adapter_card(adapter_dir: Path, base_model: str, base_sha256: str, train_format: str,
                       max_length: int) -> None:
    """selfchat.json (machine-readable lineage) and a README.md in place of peft's empty model card."""
    card = {"base_model": base_model, "base_path": "models/base", "base_sha256": base_sha256,
            "train_format": train_format, "max_length": max_length}
    (adapter_dir / ADAPTER_CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    (adapter_dir / "README.md").write_text(f"""---
library_name: peft
base_model: {base_model}
tags: [lora, selfchat, baize]
---
# selfchat LoRA adapter

LoRA adapter trained by selfchat on a self-chat corpus, loss on the assistant's turns only.

- base model: `{base_model}` (the project's `models/base`, sha256 of the folder `{base_sha256}`)
- training format: `{train_format}` (max {max_length} tokens); prompt it the way it was trained
  (`tasks/dialogue.py`; Baize's `[|Human|]` / `[|AI|]` markers for `baize`)

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("models/base")      # in a clone: dvc pull models/base
model = PeftModel.from_pretrained(base, "path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained("models/base")
```
""")


def adapter_lineage(adapter_dir: Path) -> dict[str, str]:
    """The adapter card as registry tags: which base (name and content hash), which training format."""
    card = json.loads((adapter_dir / ADAPTER_CARD).read_text())
    return {"base.sha256": card["base_sha256"], "base.path": card["base_path"], "train.format": card["train_format"]}

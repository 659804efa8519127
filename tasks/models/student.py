"""The student on disk: its tokenizer, and the base model with or without a LoRA adapter."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import mlflow
import peft
import torch
import transformers
from mlflow.models import infer_signature
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


class BaseMismatch(SelfchatError):
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


def _feed(digest: Any, path: Path) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    _feed(digest, path)
    return digest.hexdigest()


def folder_sha256(folder: Path) -> str:
    """Content hash of a model folder (every file, by relative path): which base an adapter was trained on."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        _feed(digest, path)
    return digest.hexdigest()


CHAT_MODEL = Path(__file__).with_name("chat_model.py")
# tags of the logged model: the register stage finds it by the adapter's content and the guardrail prompt
ADAPTER_SHA, PROMPT_SHA = "adapter.sha256", "guardrail_prompt.sha256"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def log_chat_model(adapter_dir: Path, base_dir: Path, base_sha256: str, dtype: str, quantization: str,
                   guardrail_prompt: str, max_new_tokens: int = 256) -> str:
    """Log the adapter as an MLflow pyfunc model in the active run (tasks/models/chat_model.py; the project's
    tasks package goes with it as code); returns the logged model's id."""
    # deliberate (see tasks/models/chat_model.py): a signature, no input example
    warnings.filterwarnings("ignore", message=r".*An input example was not provided", category=UserWarning)
    info = mlflow.pyfunc.log_model(
        name="model", python_model=str(CHAT_MODEL), artifacts={"adapter": str(adapter_dir)},
        code_paths=[str(Path(__file__).parents[1])],  # the whole tasks package
        model_config={"base_path": str(base_dir), "base_sha256": base_sha256, "dtype": dtype,
                      "quantization": quantization, "guardrail_prompt": guardrail_prompt,
                      "max_new_tokens": max_new_tokens},
        # a signature, not an input example: MLflow would load the base and generate twice to check an example
        signature=infer_signature(["What is a LoRA adapter?"], ["An answer."],
                                  params={"max_new_tokens": max_new_tokens, "system": guardrail_prompt}),
        pip_requirements=[f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__}",
                          f"transformers=={transformers.__version__}", f"peft=={peft.__version__}"],
        tags={ADAPTER_SHA: folder_sha256(adapter_dir), PROMPT_SHA: text_sha256(guardrail_prompt)})
    return info.model_id


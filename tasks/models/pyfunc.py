"""The adapter as an MLflow pyfunc model (tasks/models/chat_model.py), logged with the tags the register stage
finds it by. No torch here: the versions it pins are read from the installed packages."""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path

import mlflow
from mlflow.models import infer_signature

from tasks.core.hashing import folder_sha256, text_sha256

CHAT_MODEL = Path(__file__).with_name("chat_model.py")
# tags of the logged model: the register stage finds it by the adapter's content and the guardrail prompt
ADAPTER_SHA, PROMPT_SHA = "adapter.sha256", "guardrail_prompt.sha256"


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
        pip_requirements=[f"{name}=={importlib.metadata.version(name)}"
                          for name in ("mlflow", "torch", "transformers", "peft")],
        tags={ADAPTER_SHA: folder_sha256(adapter_dir), PROMPT_SHA: text_sha256(guardrail_prompt)})
    return info.model_id


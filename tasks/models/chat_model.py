"""A registered selfchat adapter as an MLflow pyfunc model (MLflow's "models from code"): the standard
loader gives a model that answers in the training format, with the guardrail prompt as its default system
message, on the base it was trained on (checked by content hash).

    model = mlflow.pyfunc.load_model("models:/selfchat-adapter@champion")   # from the project root
    model.predict(["How do I reverse a list in Python?"], params={"max_new_tokens": 128})

The version stores the adapter and this code, not the 0.5 GB base: the base is read from `models/base`
(`dvc pull models/base` in a fresh clone), or from model_config={"base_path": ...} / SELFCHAT_BASE_DIR.
This file is logged by path, never imported by the pipeline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class SelfchatChatModel(PythonModel):
    # predict is typed by the signature logged with it (params included): with type hints MLflow would load the
    # base and generate at logging time to check an input example, and would drop the params
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from tasks.core.hashing import BaseMismatch, folder_sha256
        from tasks.models.student import load_adapted, load_tokenizer

        config = context.model_config
        base = Path(os.environ.get("SELFCHAT_BASE_DIR") or config["base_path"])
        if not base.is_dir():
            raise FileNotFoundError(f"base model folder {base} not found: run from the project root after "
                                    "`dvc pull models/base`, or pass model_config={'base_path': ...}")
        if folder_sha256(base) != config["base_sha256"]:
            raise BaseMismatch(f"{base} is not the base this adapter was trained on "
                               f"(sha256 {config['base_sha256'][:12]}...)")
        self.model = load_adapted(base, Path(context.artifacts["adapter"]), config["dtype"], config["quantization"])
        self.tokenizer = load_tokenizer(base)
        self.system = config["guardrail_prompt"]
        self.max_new_tokens = int(config["max_new_tokens"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 - typed by the logged signature
        """Greedy answers to single-turn questions (a list of strings, or the one-column frame MLflow makes
        of it); params: max_new_tokens, system ("" for none)."""
        from tasks.models.generation import generate_answers

        questions = model_input.iloc[:, 0].tolist() if hasattr(model_input, "iloc") else list(model_input)
        params = params or {}
        system = params.get("system", self.system) or None
        return generate_answers(self.model, self.tokenizer, [str(q) for q in questions], system,
                                int(params.get("max_new_tokens", self.max_new_tokens)))


mlflow.models.set_model(SelfchatChatModel())

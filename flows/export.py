"""`make export`: the registered version behind an alias (default `champion`) as a file a CPU user deploys,
in exports/<model>-v<version>/: the merged weights as an f16 GGUF with the training format as its chat template
(llama.cpp, LM Studio), an Ollama Modelfile with the guardrail prompt it was evaluated with, and agreement.json:
how many of the evaluation's greedy answers the file gives word for word (every pair in agreement.jsonl).

    python -m flows.export [--alias challenger]
    # then: make serve (serves this file), or: ollama create selfchat -f exports/<model>-v<version>/Modelfile
    # (any llama.cpp front end reads the GGUF's chat template; ask it to stop at "[|Human|]")
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion

from flows.stage import fail
from tasks.core.config import ConfigError, Params, load_params
from tasks.core.errors import SelfchatError
from tasks.core.paths import BASE_DIR, EVAL_REPORTS
from tasks.export.agreement import Agreement, compare_answers
from tasks.export.build import (
    Export,
    export_of,
    exported_answers,
    regenerate_reference,
    stored_agreement,
    write_agreement,
)
from tasks.export.reference import evaluated_answers
from tasks.export.templates import JINJA, modelfile
from tasks.models.gguf import GGUFGenerator, write_gguf
from tasks.models.student import load_tokenizer
from tasks.register.registry import load_merged_by_alias, version_by_alias
from tasks.services.runtime import apply_runtime_defaults
from tasks.services.versioning import output_as_locked

SAMPLES = EVAL_REPORTS / "samples.jsonl"


def identity(version: ModelVersion) -> dict[str, str]:
    return {"model": version.name, "version": str(version.version), "run_id": version.run_id or "",
            "adapter.sha256": version.tags.get("adapter.sha256", "")}


def export_version(params: Params, alias: str) -> tuple[Export, Agreement]:
    """The version's export, made unless one of this very version is there already."""
    version = version_by_alias(params.register_.model_name, alias)
    export, ident = export_of(version.name, str(version.version)), identity(version)
    if (found := stored_agreement(export, ident)) is not None:
        return export, found
    system = version.tags.get("evaluate.guardrail_prompt") or params.evaluate.guardrail_prompt
    evaluated = evaluated_answers(SAMPLES, system, params.evaluate.max_new_tokens,
                                  params.evaluate.mtbench.max_new_tokens)
    _, merged = load_merged_by_alias(version.name, alias, BASE_DIR)
    if version.tags.get("dvc.reports/eval") == output_as_locked("evaluate", str(EVAL_REPORTS)):
        reference, source = [row.answer for row in evaluated], f"{SAMPLES} (this version's evaluation)"
    else:  # reports/eval is another version's: its prompts, this version's answers made as the evaluation did
        reference = regenerate_reference(merged, load_tokenizer(BASE_DIR), evaluated, params.evaluate.batch_size)
        source = f"{SAMPLES}'s prompts, answered again by the merged model"
    write_gguf(merged, export.gguf, export.name, JINJA)
    export.modelfile.write_text(modelfile(export.gguf.name, system, params.serve.context_tokens))
    generator = GGUFGenerator(export.gguf, params.serve.context_tokens)
    try:
        agreement, rows = compare_answers(reference, exported_answers(generator, evaluated))
    finally:
        generator.close()
    write_agreement(export, ident, agreement, rows, evaluated, source)
    return export, agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--alias", default=None, help="registry alias (default: serve.alias)")
    args = parser.parse_args()
    apply_runtime_defaults()
    logging.basicConfig(level=logging.WARNING)
    try:
        params = load_params(Path(args.params))
    except ConfigError as exc:
        fail(str(exc), 2)
    try:
        export, agreement = export_version(params, args.alias or params.serve.alias)
    except SelfchatError as exc:
        fail(str(exc))
    print(f"{export.gguf} ({export.gguf.stat().st_size / 2**20:.0f} MiB) and {export.modelfile}: {agreement} "
          f"(pairs in {export.pairs})")


if __name__ == "__main__":
    main()

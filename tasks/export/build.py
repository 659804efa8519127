"""One registered version as an export folder: `<model>-v<version>.f16.gguf` (weights, tokenizer, chat
template), an Ollama `Modelfile`, and `agreement.json`/`agreement.jsonl` (how often the file gives the
evaluated answers, every pair kept for reading). Made once per version, reused while its identity holds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.core.dialogue import baize_prompt
from tasks.core.jsonl import write_json, write_jsonl
from tasks.export.agreement import Agreement, refusal_difference
from tasks.export.reference import Evaluated
from tasks.models.generation import STOP, generate_answers
from tasks.models.gguf import GGUFGenerator
from tasks.scoring.stats import wilson

EXPORTS = Path("exports")


@dataclass(frozen=True)
class Export:
    folder: Path
    name: str  # <model>-v<version>

    @property
    def gguf(self) -> Path:
        return self.folder / f"{self.name}.f16.gguf"

    @property
    def modelfile(self) -> Path:
        return self.folder / "Modelfile"

    @property
    def agreement(self) -> Path:
        return self.folder / "agreement.json"

    @property
    def pairs(self) -> Path:
        return self.folder / "agreement.jsonl"


def export_of(model_name: str, version: str, root: Path = EXPORTS) -> Export:
    name = f"{model_name}-v{version}"
    return Export(root / name, name)


def stored_agreement(export: Export, identity: dict[str, str]) -> Agreement | None:
    """The export's agreement when its file is there and was made from this very version (else None)."""
    if not (export.gguf.exists() and export.agreement.exists()):
        return None
    facts = json.loads(export.agreement.read_text())
    if facts.get("identity") != identity:
        return None
    found = facts["agreement"]
    return Agreement(found["answers"], found["identical"], *wilson(found["identical"], found["answers"]))


def regenerate_reference(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, evaluated: list[Evaluated],
                         batch_size: int) -> list[str]:
    """The evaluated model's answers made again, batched as the evaluation batched them (same prompts in the
    same order per system prompt and length), for when reports/eval holds another version's answers."""
    groups: dict[tuple[str | None, int], list[int]] = {}
    for index, row in enumerate(evaluated):
        groups.setdefault((row.system, row.max_tokens), []).append(index)
    answers: dict[int, str] = {}
    for (system, max_tokens), indices in groups.items():
        made = generate_answers(model, tokenizer, [evaluated[i].question for i in indices], system, max_tokens,
                                batch_size, desc="reference answers")
        answers.update(zip(indices, made, strict=True))
    return [answers[i] for i in range(len(evaluated))]


def exported_answers(generator: GGUFGenerator, evaluated: list[Evaluated]) -> list[str]:
    return [generator.complete(baize_prompt(row.question, row.system), row.max_tokens, STOP)
            for row in tqdm(evaluated, desc="exported file's answers", mininterval=10)]


def write_agreement(export: Export, identity: dict[str, str], agreement: Agreement, rows: list[dict[str, Any]],
                    evaluated: list[Evaluated], reference: str) -> None:
    write_jsonl(export.pairs, [{"key": e.key, "question": e.question, "guarded": e.system is not None, **row}
                               for e, row in zip(evaluated, rows, strict=True)])
    refusals = refusal_difference(rows, [e.key for e in evaluated])
    write_json(export.agreement, {"identity": identity, "reference": reference, "agreement": agreement.as_dict(),
                                  "refusal_rate_difference": refusals.as_dict(),
                                  "differing": [e.key for e, r in zip(evaluated, rows, strict=True)
                                                if not r["identical"]]})

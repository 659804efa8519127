"""An evaluation kept as files: what measure() found for some models (per-item results, answers, verdict
provenance), so the base's evaluation is made once (evaluate-base) and read back by evaluate; and the judge's
endpoint, started only when its verdicts are wanted."""

from __future__ import annotations

import json
import shutil
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.config import EvaluateParams, Params
from tasks.core.errors import SelfchatError
from tasks.core.hashing import file_sha256, text_sha256
from tasks.core.jsonl import read_jsonl, write_json, write_jsonl
from tasks.core.paths import HELDOUT, LOGS, metrics_file
from tasks.evaluate.verdicts import judge_wanted
from tasks.scoring.stats import Item, items_from_dicts
from tasks.services.llm_endpoint import endpoint


@dataclass
class Measured:
    items: list[Item]
    guardrail_samples: list[dict[str, Any]]
    mtbench_samples: list[dict[str, Any]]
    source: str  # the verdict source of the gated guardrail rates
    seconds: dict[str, float]
    provenance: dict[str, dict[str, Any]]  # which metrics rest on calibrated verdicts (tasks/evaluate/verdicts.py)


def read_calibration() -> dict[str, Any]:
    """The calibrate stage's agreement of each verdict source with the human labels."""
    return json.loads(metrics_file("calibrate").read_text())


def judge_endpoint(params: EvaluateParams, calibration: dict[str, Any]) -> AbstractContextManager[str | None]:
    """The judge's endpoint when its verdicts are wanted (see evaluate.judge_verdicts), else None: an
    untrustworthy judge costs no server start and no minutes of verdicts."""
    if judge_wanted(calibration, params.judge_verdicts):
        return endpoint(params.judge, LOGS / "judge_server.log")
    print(f"judge not asked: its agreement with human labels is kappa {calibration['judge']['kappa']} (below "
          f"{params.judge.min_kappa}); guardrail rates from the phrase matcher, MT-Bench answers kept unrated")
    return nullcontext(None)


def measured_inputs(all_params: Params) -> str:
    """What the base's evaluation depends on besides the base model: the params that shape it, the held-out
    dialogues and the calibration (evaluate checks that the stored base evaluation is of these)."""
    shaping = {"evaluate": all_params.evaluate.model_dump(), "format": all_params.train.format,
               "max_length": all_params.train.max_length, "quantization": all_params.train.quantization,
               "dtype": all_params.base.dtype, "languages": all_params.validate_.languages,
               "heldout": file_sha256(HELDOUT), "calibration": file_sha256(metrics_file("calibrate"))}
    return text_sha256(json.dumps(shaping, sort_keys=True))


def write_measured(folder: Path, found: Measured, inputs: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    write_jsonl(folder / "items.jsonl", [i.as_dict() for i in found.items])
    write_jsonl(folder / "guardrail_samples.jsonl", found.guardrail_samples)
    write_jsonl(folder / "mtbench_samples.jsonl", found.mtbench_samples)
    write_json(folder / "measured.json", {"inputs": inputs, "source": found.source, "provenance": found.provenance})


class StaleBaseEvaluation(SelfchatError):
    pass


def read_measured(folder: Path, inputs: str) -> Measured:
    """A stored evaluation (the base's), refused when it was made from other params, items or calibration."""
    facts = json.loads((folder / "measured.json").read_text())
    if facts["inputs"] != inputs:
        raise StaleBaseEvaluation(f"{folder} was made from other evaluation params, held-out items or calibration: "
                                  "`dvc repro evaluate` (or `python -m flows.evaluate_base`) remakes it first")
    return Measured(items_from_dicts(read_jsonl(folder / "items.jsonl")),
                    list(read_jsonl(folder / "guardrail_samples.jsonl")),
                    list(read_jsonl(folder / "mtbench_samples.jsonl")), facts["source"], {}, facts["provenance"])

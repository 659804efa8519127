"""Training checkpoints in a folder DVC keeps between runs (persist): a killed training resumes from the last
one, but only when it was made by the same training; anything else is cleared first."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import get_last_checkpoint

FINGERPRINT = "fingerprint.json"


def fingerprint_of(**parts: Any) -> dict[str, Any]:
    """What a checkpoint belongs to; lists of examples are reduced to a hash."""
    def reduce(value: Any) -> Any:
        if isinstance(value, list) and value and hasattr(value[0], "input_ids"):
            digest = hashlib.sha256()
            for example in value:
                digest.update(json.dumps([example.input_ids, example.labels]).encode())
            return digest.hexdigest()
        return value
    return json.loads(json.dumps({key: reduce(value) for key, value in parts.items()}, sort_keys=True, default=str))


def training_environment() -> dict[str, Any]:
    """What else decides a checkpoint's numbers: the training code, the library versions, the device."""
    code = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        code.update(path.read_bytes())
    return {"code": code.hexdigest(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "device": "cuda" if torch.cuda.is_available() else "cpu"}


def resume_point(folder: Path, fingerprint: dict[str, Any]) -> str | None:
    """The checkpoint to resume from, or None; a folder of another training is emptied and stamped with
    this one's fingerprint. Decided once, before any training process starts."""
    stamp = folder / FINGERPRINT
    if stamp.exists() and json.loads(stamp.read_text()) == fingerprint:
        return last_complete_checkpoint(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    stamp.write_text(json.dumps(fingerprint, indent=2, sort_keys=True))
    return None


def last_complete_checkpoint(folder: Path) -> str | None:
    """The Trainer writes a checkpoint in place, trainer_state.json last: one a kill left without it is
    removed, and the one before is used."""
    while (last := get_last_checkpoint(str(folder))) is not None:
        if (Path(last) / TRAINER_STATE_NAME).exists():
            return last
        shutil.rmtree(last)
    return None


def clear_checkpoints(folder: Path) -> None:
    """After a finished training: the adapter is the output; the folder stays (DVC expects it), empty."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / ".gitkeep").touch()

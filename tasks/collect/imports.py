"""Dialogues from files in Baize's released corpus format, {"topic", "input"} (theirs or anyone's)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tasks.core.config import ImportSource
from tasks.core.dialogue import TranscriptError, from_baize_record
from tasks.core.errors import SelfchatError
from tasks.core.ids import dialogue_id, seed_id

IMPORT_MODE = "import"
IMPORT_TEMPLATE = "baize_release"


class ImportFileError(SelfchatError):
    pass


def read_baize_file(path: Path) -> list[Any]:
    """A JSON list (as Baize released them) or JSON lines of {"topic", "input"}."""
    if not path.exists():
        raise ImportFileError(f"import file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        pass
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError:
                raise ImportFileError(f"{path}:{number}: neither a JSON list nor JSON lines") from None
    return items


def import_baize(source: ImportSource) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(dialogues, quarantined) from one Baize-format file. Ids are stable: file content and position."""
    path = Path(source.path)
    items = read_baize_file(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    dialogues, quarantined = [], []
    for index, item in enumerate(items):
        topic = str(item.get("topic") or "") if isinstance(item, dict) else ""
        record: dict[str, Any] = {
            "id": dialogue_id(seed_id(topic), IMPORT_MODE, IMPORT_TEMPLATE, digest[:16], index),
            "seed_id": seed_id(topic), "topic": topic, "source": f"import:{path.name}", "domain": source.domain,
            "mode": IMPORT_MODE, "template_version": IMPORT_TEMPLATE, "sample": index,
            "teacher": {"model": source.teacher, "endpoint": None},
            "provenance": {"path": str(path), "sha256": digest, "index": index},
        }
        if not isinstance(item, dict) or not isinstance(item.get("input"), str):
            quarantined.append({**record, "stage": "collect", "reason": "import: record has no \"input\" text"})
            continue
        record["raw"] = item["input"]
        try:
            record["turns"] = [t.as_dict() for t in from_baize_record(item)]
        except TranscriptError as exc:
            quarantined.append({**record, "stage": "collect", "reason": f"import: unparseable transcript: {exc}"})
            continue
        dialogues.append(record)
    return dialogues, quarantined

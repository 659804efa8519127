"""Stable ids: the same question or dialogue gets the same id on every machine and every rerun."""

from __future__ import annotations

import hashlib
import json
import re


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def seed_id(text: str) -> str:
    """Same question, same id, whichever source it came from (exact duplicates collapse)."""
    return hashlib.sha256(normalize(text).casefold().encode()).hexdigest()[:16]


def dialogue_id(seed_id: str, mode: str, template_version: str, teacher_model: str, sample: int) -> str:
    key = json.dumps([seed_id, mode, template_version, teacher_model, sample])
    return hashlib.sha256(key.encode()).hexdigest()[:16]

"""The teacher LLM's client: no SDK retries, the collector counts and retries every failure itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from openai import AsyncOpenAI

from tasks.config import TeacherParams
from tasks.llm_endpoint import api_key, endpoint


def teacher_client(params: TeacherParams, base_url: str) -> AsyncOpenAI:
    # No SDK retries: tasks/collect/retries.py retries every transient failure itself, so each one is counted, a
    # Retry-After pauses every request, and the last failure quarantines the seed with its reason.
    return AsyncOpenAI(base_url=base_url, api_key=api_key(params, base_url), timeout=params.timeout_s,
                       max_retries=0)


@contextmanager
def teacher_endpoint(params: TeacherParams, log_dir: Path) -> Iterator[str]:
    """Yield the base_url of the configured teacher, starting the embedded server if none is given."""
    with endpoint(params, log_dir / "teacher_server.log") as base_url:
        yield base_url

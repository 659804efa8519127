"""The engine's client of an endpoint (the teacher, distillation's judge): no SDK retries, the engine counts
and retries every failure itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from openai import AsyncOpenAI

from tasks.core.config import TeacherParams
from tasks.services.llm_endpoint import api_key, endpoint


def engine_client(params: TeacherParams, base_url: str) -> AsyncOpenAI:
    # No SDK retries: tasks/engine/retries.py retries every transient failure itself, so each one is counted, a
    # Retry-After pauses every request, and the last failure quarantines the job with its reason.
    return AsyncOpenAI(base_url=base_url, api_key=api_key(params, base_url), timeout=params.timeout_s,
                       max_retries=0)


@contextmanager
def teacher_endpoint(params: TeacherParams, log_dir: Path, name: str = "teacher") -> Iterator[str]:
    """Yield the base_url of the configured endpoint, starting the embedded server (its log:
    `<log_dir>/<name>_server.log`) if none is given."""
    with endpoint(params, log_dir / f"{name}_server.log") as base_url:
        yield base_url

"""Which teacher errors are worth another attempt, how long to wait, and which should stop the whole run."""

from __future__ import annotations

import email.utils
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from openai import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
)
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from tasks.config import TeacherParams
from tasks.errors import SelfchatError

T = TypeVar("T")
RETRY_AFTER_CAP_S = 600.0


class FatalTeacherError(SelfchatError):
    """Every further request would fail the same way (bad key, no such model): stop, don't quarantine all."""


_KEY_LIKE = re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-*]{6,}")


def redact(text: str, secret: str | None = None) -> str:
    """Error text as it may be shown or stored: providers echo (masked) keys in 401 messages."""
    if secret and len(secret) >= 8:
        text = text.replace(secret, "***")
    return _KEY_LIKE.sub("***", text)


def is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, AuthenticationError | PermissionDeniedError | NotFoundError)


def is_retryable(exc: BaseException) -> bool:
    # APIConnectionError covers timeouts and truncated bodies; ValueError a malformed JSON reply, which
    # the SDK itself does not retry.
    if isinstance(exc, APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return isinstance(exc, APIConnectionError | APIResponseValidationError | ValueError)


def retry_after_s(exc: BaseException | None) -> float | None:
    """The server's Retry-After (seconds, HTTP date, or OpenAI's retry-after-ms), if it sent one."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return min(float(millis) / 1000, RETRY_AFTER_CAP_S)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_CAP_S)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return None if when is None else min(max(when.timestamp() - time.time(), 0.0), RETRY_AFTER_CAP_S)


class BackoffWait:
    """Exponential backoff with jitter, but never shorter than what the server asked for."""

    def __init__(self, params: TeacherParams) -> None:
        self.exponential = wait_exponential_jitter(initial=params.backoff_initial_s, max=params.backoff_max_s,
                                                   jitter=params.backoff_initial_s)

    def __call__(self, state: RetryCallState) -> float:
        asked = retry_after_s(state.outcome.exception() if state.outcome else None)
        return max(self.exponential(state), asked or 0.0)


async def call_with_retries(call: Callable[[], Awaitable[T]], params: TeacherParams,
                            on_failure: Callable[[BaseException, float | None], None]) -> T:
    """Run `call`, retrying transient failures `params.max_retries` times. `on_failure(exc, retry_after)`
    sees every failed attempt (for the ledger and the shared rate-limit pause). Fatal errors stop the run;
    the last transient error is re-raised for the caller to quarantine."""

    def failed(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            on_failure(exc, retry_after_s(exc))

    retrying = AsyncRetrying(stop=stop_after_attempt(params.max_retries + 1), wait=BackoffWait(params),
                             retry=retry_if_exception(is_retryable), reraise=True, after=failed)
    try:
        return await retrying(call)
    except Exception as exc:
        if is_fatal(exc):
            message = redact(str(exc), os.environ.get(params.api_key_env))
            raise FatalTeacherError(f"teacher refused the request ({type(exc).__name__}): {message}") from None
        if not is_retryable(exc):
            on_failure(exc, None)  # tenacity's `after` only runs before a retry
        raise

"""Which teacher errors are worth another attempt, how long to wait, and which should stop the whole run."""

from __future__ import annotations

import email.utils
import math
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

from tasks.core.config import TeacherParams
from tasks.core.errors import SelfchatError

T = TypeVar("T")
RETRY_AFTER_CAP_S = 600.0


class FatalTeacherError(SelfchatError):
    """Every further request would fail the same way (bad key, no such model): stop, don't quarantine all."""


class TeacherOutage(FatalTeacherError):
    """The circuit breaker: teacher.max_consecutive_failures requests in a row could not reach the teacher."""


_KEY_LIKE = re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-*]{6,}")
SECRET_RUN = 8  # this many characters of the key, in any case, are enough to hide


def redact(text: str, secret: str | None = None) -> str:
    """Error text as it may be shown or stored. Providers echo keys in errors, masked or not, with or
    without their prefix, in another case: every run of SECRET_RUN characters of the key is hidden."""
    if secret and len(secret) >= SECRET_RUN:
        key, low = secret.lower(), text.lower()
        runs = {key[i:i + SECRET_RUN] for i in range(len(key) - SECRET_RUN + 1)}
        hidden = [False] * len(text)
        for i in range(len(text) - SECRET_RUN + 1):
            if low[i:i + SECRET_RUN] in runs:
                hidden[i:i + SECRET_RUN] = [True] * SECRET_RUN
        text = "".join("\0" if hide else char for char, hide in zip(text, hidden))
        text = re.sub("\0+", "***", text)
    return _KEY_LIKE.sub("***", text)


def is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, AuthenticationError | PermissionDeniedError | NotFoundError)


def is_outage(exc: BaseException) -> bool:
    """The teacher cannot be reached or is broken (not merely busy, as a 429 says)."""
    if isinstance(exc, APIStatusError):
        return exc.status_code >= 500
    return isinstance(exc, APIConnectionError)


def is_retryable(exc: BaseException) -> bool:
    # APIConnectionError covers timeouts and truncated bodies; ValueError a malformed JSON reply, which
    # the SDK itself does not retry.
    if isinstance(exc, APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return isinstance(exc, APIConnectionError | APIResponseValidationError | ValueError)


def _seconds(value: str, scale: float = 1.0) -> float | None:
    try:
        seconds = float(value) * scale
    except ValueError:
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S) if math.isfinite(seconds) else None


def retry_after_s(exc: BaseException | None) -> float | None:
    """The server's Retry-After (seconds, HTTP date, or OpenAI's retry-after-ms), if it sent one; a value
    that is none of these counts as absent."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    if (millis := headers.get("retry-after-ms")) is not None and (seconds := _seconds(millis, 0.001)) is not None:
        return seconds
    value = headers.get("retry-after")
    if value is None:
        return None
    if (seconds := _seconds(value)) is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - time.time(), 0.0), RETRY_AFTER_CAP_S)


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
    except FatalTeacherError:
        raise
    except Exception as exc:
        if is_fatal(exc):
            message = redact(str(exc), os.environ.get(params.api_key_env))
            raise FatalTeacherError(f"teacher refused the request ({type(exc).__name__}): {message}") from None
        if not is_retryable(exc):
            on_failure(exc, None)  # tenacity's `after` only runs before a retry
        raise

"""What a self-chat mode needs from the collector: one chat request at a time, and a way to reject."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

CUT_OFF = "length"  # finish_reason of a reply stopped by max_tokens


class Reply(NamedTuple):
    text: str
    finish_reason: str | None

    @property
    def cut_off(self) -> bool:
        return self.finish_reason == CUT_OFF


# Sends one chat request (messages, then request extras such as extra_body); limits, retries and the ledger
# are the engine's business (tasks/engine/requests.py).
Chat = Callable[..., Awaitable[Reply]]


class Rejected(Exception):
    """The teacher answered, but not with a usable dialogue: quarantined with `reason` and what it wrote."""

    def __init__(self, reason: str, fields: dict[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields

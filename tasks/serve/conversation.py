"""OpenAI chat messages as the training format (Baize), cut from the oldest turns to fit the context, as
Baize's demo did."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from tasks.core.dialogue import AI, HUMAN, Turn, baize_segments
from tasks.core.errors import SelfchatError

STOP = "[|Human|]"  # the model opens the next human turn: its answer ends there


class BadRequest(SelfchatError):
    code = "invalid_request_error"


class ContextOverflow(BadRequest):
    code = "context_length_exceeded"


@dataclass(frozen=True)
class Prompt:
    text: str
    tokens: int
    dropped_turns: int  # oldest turns left out to fit


def turns_from_messages(messages: list[dict], default_system: str | None) -> tuple[str | None, list[Turn]]:
    """The system message (the default one when the request has none) and the turns, ending with the user's."""
    if not messages:
        raise BadRequest("messages: at least one message is needed")
    system, turns = default_system, []
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if isinstance(content, list):  # OpenAI's content parts: the text ones
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if not isinstance(content, str):
            raise BadRequest(f"messages[{index}].content: a string is needed")
        if role in ("system", "developer"):
            system = content or None
        elif role in ("user", "assistant"):
            turns.append(Turn(HUMAN if role == "user" else AI, content.strip()))
        else:
            raise BadRequest(f"messages[{index}].role: {role!r} is not one of system, user, assistant")
    if not turns or turns[-1].role != HUMAN:
        raise BadRequest("messages: the last message must be the user's")
    return system, turns


def render(system: str | None, turns: list[Turn]) -> str:
    """The training format up to the AI marker the answer follows."""
    return "".join(piece for piece, _ in baize_segments(turns, system))


def fit_prompt(tokenizer: PreTrainedTokenizerBase, system: str | None, turns: list[Turn], max_tokens: int,
               context_tokens: int) -> Prompt:
    """Drop the oldest exchanges until prompt + answer fit; the last user message is never dropped."""
    budget = context_tokens - max_tokens
    if budget <= 0:
        raise ContextOverflow(f"max_tokens {max_tokens} leaves no room for a prompt in the {context_tokens}-token "
                              "context")
    for start in range(0, len(turns)):
        if turns[start].role != HUMAN:
            continue
        text = render(system, turns[start:])
        count = len(tokenizer(text, add_special_tokens=True)["input_ids"])
        if count <= budget:
            return Prompt(text, count, start)
    raise ContextOverflow(f"the last message with the system prompt is {count} tokens; with max_tokens {max_tokens} "
                          f"that is over the {context_tokens}-token context (serve.context_tokens)")

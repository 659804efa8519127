"""Turn dialogues into token ids and labels, training only on what the assistant says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from tasks.core.dialogue import AI, Turn, baize_segments

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


def turns_of(dialogue: dict[str, Any]) -> list[Turn]:
    return [Turn(t["role"], t["text"]) for t in dialogue["turns"]]


def chat_template_segments(tokenizer: PreTrainedTokenizerBase, turns: list[Turn]) -> list[tuple[str, bool]]:
    """Pieces of the tokenizer's own chat template; each assistant message is found as the text the
    template adds after the generation prompt."""
    messages = [{"role": "assistant" if t.role == AI else "user", "content": t.text} for t in turns]
    pieces: list[tuple[str, bool]] = []
    done = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise ValueError("chat template is not prefix-stable; use format: baize")
        pieces += [(prompt[len(done):], False), (full[len(prompt):], True)]
        done = full
    return pieces


def segments_for(dialogue: dict[str, Any], tokenizer: PreTrainedTokenizerBase, fmt: str) -> list[tuple[str, bool]]:
    turns = turns_of(dialogue)
    return baize_segments(turns) if fmt == "baize" else chat_template_segments(tokenizer, turns)


def tokenize_segments(tokenizer: PreTrainedTokenizerBase, pieces: list[tuple[str, bool]],
                      max_length: int, add_special_tokens: bool = True) -> Example | None:
    """Tokenize the joined text once (so merges match inference) and label a token when it starts inside
    a trained piece. None when truncation leaves nothing to train on."""
    text, spans, position = "", [], 0
    for piece, trained in pieces:
        if trained:
            spans.append((position, position + len(piece)))
        text += piece
        position += len(piece)
    encoded = tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=max_length,
                        add_special_tokens=add_special_tokens)
    labels = []
    for token_id, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        trained = end > start and any(lo <= start < hi for lo, hi in spans)
        labels.append(token_id if trained else IGNORE)
    if all(label == IGNORE for label in labels):
        return None
    return Example(list(encoded["input_ids"]), labels)


def build_examples(dialogues: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, fmt: str,
                   max_length: int) -> tuple[list[Example], int]:
    """Examples plus the number of dialogues truncation emptied of trained tokens."""
    examples, emptied = [], 0
    for dialogue in dialogues:
        # a chat template writes its own BOS
        example = tokenize_segments(tokenizer, segments_for(dialogue, tokenizer, fmt), max_length,
                                    add_special_tokens=fmt == "baize")
        if example is None:
            emptied += 1
        else:
            examples.append(example)
    return examples, emptied

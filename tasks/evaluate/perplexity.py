"""Held-out perplexity per dialogue, with the adapter and without it, in two readings:
`perplexity_content` scores only what the assistant says (fair to a base model that has never seen the
chat format); `perplexity_with_markers` also scores the format tokens training teaches (the "[|Human|]"
that ends each Baize turn), which any trained adapter "improves"."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.core.dialogue import AI
from tasks.core.masking import IGNORE, segments_for, tokenize_segments, turns_of
from tasks.scoring.stats import Item

CONTENT, WITH_MARKERS = "perplexity_content", "perplexity_with_markers"


def content_pieces(pieces: list[tuple[str, bool]], dialogue: dict[str, Any]) -> list[tuple[str, bool]]:
    """The same text, trained only up to the end of each assistant reply (its closing markers untrained)."""
    replies = iter(t.text for t in turns_of(dialogue) if t.role == AI)
    out: list[tuple[str, bool]] = []
    for piece, trained in pieces:
        if not trained:
            out.append((piece, False))
            continue
        reply = next(replies)
        end = piece.index(reply) + len(reply)
        out += [(piece[:end], True), (piece[end:], False)]
    return out


def _nll(logits: torch.Tensor, labels: list[int]) -> tuple[float, int]:
    target = torch.tensor(labels[1:], device=logits.device)
    nll = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum")
    return float(nll), int((target != IGNORE).sum())


@torch.no_grad()
def heldout_items(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dialogues: list[dict[str, Any]],
                  fmt: str, max_length: int, model_name: str) -> list[Item]:
    """Per dialogue: the NLL sum and token count of both readings (a dialogue truncation leaves without
    assistant content is skipped, as training skips it)."""
    model.eval()
    device = next(model.parameters()).device
    items: list[Item] = []
    for dialogue in dialogues:
        pieces = segments_for(dialogue, tokenizer, fmt)
        special = fmt == "baize"  # a chat template writes its own BOS
        full = tokenize_segments(tokenizer, pieces, max_length, add_special_tokens=special)
        content = tokenize_segments(tokenizer, content_pieces(pieces, dialogue), max_length, add_special_tokens=special)
        if full is None or content is None:
            continue
        logits = model(input_ids=torch.tensor([full.input_ids], device=device)).logits[0, :-1].float()
        for metric, example in ((CONTENT, content), (WITH_MARKERS, full)):
            nll, tokens = _nll(logits, example.labels)
            items.append(Item(metric, model_name, dialogue["id"], nll, tokens, higher_is_better=False,
                              transform="exp"))
    if not items:
        raise ValueError("no held-out dialogue has assistant tokens to score")
    return items


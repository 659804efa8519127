"""Held-out perplexity on the assistant's tokens, with the adapter and without it."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from tasks.masking import IGNORE, Example


@torch.no_grad()
def perplexity(model: PreTrainedModel, examples: Iterable[Example]) -> float:
    """exp(mean NLL) over the trained (assistant) tokens only, the same tokens training optimises."""
    model.eval()
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for example in examples:
        ids = torch.tensor([example.input_ids], device=device)
        labels = torch.tensor([example.labels], device=device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                                ignore_index=IGNORE, reduction="sum")
        total_nll += float(nll)
        total_tokens += int((target != IGNORE).sum())
    if total_tokens == 0:
        raise ValueError("no assistant tokens to score")
    return math.exp(total_nll / total_tokens)


def adapter_off(model: PreTrainedModel):  # noqa: ANN201 - a context manager from peft
    """Context in which a PeftModel behaves as its base model."""
    return model.disable_adapter() if isinstance(model, PeftModel) else torch.no_grad()

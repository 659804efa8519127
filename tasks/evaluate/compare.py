"""The two models every metric is measured on: the base, and the base with the adapter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from tasks.scoring.stats import ADAPTER, BASE


def as_model(model: PreTrainedModel, name: str) -> AbstractContextManager:
    """Context in which the adapted model behaves as `name`: the base has its adapter switched off."""
    if name == BASE and isinstance(model, PeftModel):
        return model.disable_adapter()
    return nullcontext() if name == ADAPTER else torch.no_grad()


@contextmanager
def as_adapter(model: PeftModel, name: str) -> Iterator[None]:
    """The model with only the adapter loaded as `name` switched on (a distillation round's parent and
    variants, loaded side by side)."""
    model.set_adapter(name)
    with torch.no_grad():
        yield


def load_side_by_side(base: PreTrainedModel, adapters: dict[str, Path]) -> PeftModel:
    """Several adapters loaded on one base under their names; `as_adapter` switches between them."""
    (first, first_dir), *rest = adapters.items()
    model = PeftModel.from_pretrained(base, first_dir, adapter_name=first)
    for name, folder in rest:
        model.load_adapter(folder, adapter_name=name)
    return model

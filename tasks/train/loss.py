"""The training loss computed only where it is trained: logits for assistant tokens, not every position.

gemma-3-270m's output head maps 640 hidden units to a 262k-token vocabulary, so full logits for a
2 x 384 batch are ~200M floats (0.8 GB in fp32, the same again for their gradient) while a dialogue
trains ~80 assistant tokens. Running the head on the trained positions only (the idea behind Cut
Cross-Entropy and Liger's fused linear cross-entropy, without their kernels) gives the same loss and
gradients for a fraction of the work.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn
from transformers import Trainer

from tasks.core.masking import IGNORE


def causal_lm_of(model: nn.Module) -> nn.Module:
    """The transformers model inside peft's (and DDP's) wrappers."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return model.get_base_model() if isinstance(model, PeftModel) else model


def trained_positions_loss(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over positions whose label is trained, and how many there are."""
    causal_lm = causal_lm_of(model)
    captured: dict[str, torch.Tensor] = {}

    def keep_hidden(module: nn.Module, args: Any, output: Any) -> None:
        captured["hidden"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    # The forward goes through every wrapper (DistributedDataParallel syncs gradients only for what went
    # through its own forward); the head runs there on one position per row, and below on the trained ones.
    handle = causal_lm.get_decoder().register_forward_hook(keep_hidden)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1)
    finally:
        handle.remove()
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = causal_lm.get_output_embeddings()(captured["hidden"][:, :-1][keep])
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    if softcap:  # what the model's own forward applies to its logits (Gemma 2)
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), keep.sum()


class TrainedPositionsTrainer(Trainer):
    """Trainer whose loss runs the output head on trained positions only.

    The sum is divided by the trained tokens of the whole accumulated (and, across processes, gathered)
    batch, so gradient accumulation and data parallelism give the gradient of one big batch."""

    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = True  # makes the Trainer count num_items_in_batch for us
        self.local_trained_tokens = 0  # this process's, this run's (a resumed run starts again from 0)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> Any:
        total, count = trained_positions_loss(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
        if model.training:
            self.local_trained_tokens += int(count)
        if num_items_in_batch is None:
            raise RuntimeError("the Trainer passed no token count (model_accepts_loss_kwargs is set in __init__)")
        # The Trainer counts the trained tokens of the accumulated batch over every process (for evaluation:
        # of this batch); DDP averages gradients over processes, hence the factor.
        loss = total / num_items_in_batch * self.accelerator.num_processes
        return (loss, {}) if return_outputs else loss

    def trained_tokens_seen(self) -> int:
        """Trained tokens over every process since this run started."""
        return int(self.accelerator.gather(torch.tensor([self.local_trained_tokens])).sum())

"""Greedy answers in the training format (Baize), batched; each stops where the model opens the next human turn."""

from __future__ import annotations

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.core.dialogue import baize_prompt

STOP = "[|Human|]"


@torch.no_grad()
def generate_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: list[str],
                     system: str | None, max_new_tokens: int, batch_size: int = 8, desc: str = "answers") -> list[str]:
    model.eval()
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    answers: list[str] = []
    # similar lengths batch together (less padding); answers come back in question order
    order = sorted(range(len(questions)), key=lambda i: len(questions[i]))
    by_index: dict[int, str] = {}
    for start in tqdm(range(0, len(order), batch_size), desc=desc, mininterval=10):
        chunk = order[start:start + batch_size]
        prompts = [baize_prompt(questions[i], system) for i in chunk]
        batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                stop_strings=[STOP], tokenizer=tokenizer, pad_token_id=tokenizer.pad_token_id)
        for index, row in zip(chunk, output[:, batch["input_ids"].shape[1]:], strict=True):
            by_index[index] = tokenizer.decode(row, skip_special_tokens=True).split(STOP)[0].strip()
    answers = [by_index[i] for i in range(len(questions))]
    return answers

"""The parent answers each question k times (nucleus sampling), one question per generate call, seeded by
the question: its samples do not depend on which other questions ran, or in what order, or whether a
killed run resumed in between."""

from __future__ import annotations

import hashlib
import json
from operator import itemgetter
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tasks.core.config import DistillSampling
from tasks.core.dialogue import baize_prompt
from tasks.engine.journal import OK, Journal
from tasks.models.generation import STOP


def question_seed(seed: int, question_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{question_id}".encode()).hexdigest()[:12], 16)


@torch.no_grad()
def sample_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, question: str,
                   params: DistillSampling, seed: int) -> list[str]:
    """k answers in the training format, each cut where the model opens the next human turn."""
    model.eval()
    batch = tokenizer([baize_prompt(question)], return_tensors="pt").to(next(model.parameters()).device)
    torch.manual_seed(seed)
    # top_k=0: pure nucleus sampling (transformers would otherwise add its default top_k=50)
    output = model.generate(**batch, do_sample=True, num_return_sequences=params.k, temperature=params.temperature,
                            top_p=params.top_p, top_k=0, max_new_tokens=params.max_new_tokens, stop_strings=[STOP],
                            tokenizer=tokenizer, pad_token_id=tokenizer.pad_token_id)
    return [tokenizer.decode(row, skip_special_tokens=True).split(STOP)[0].strip()
            for row in output[:, batch["input_ids"].shape[1]:]]


def sampling_journal(folder: Path, parent: dict[str, Any], params: DistillSampling) -> Path:
    """One journal per parent adapter (by content) and sampling settings: other answers are not reused."""
    settings = {"parent": parent["adapter_sha256"], "sampling": params.model_dump()}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return folder / f"sample-{digest}.jsonl"


def sample_pending(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: list[dict[str, Any]],
                   params: DistillSampling, journal: Journal) -> int:
    """Answer every question the journal does not have yet; each is journaled (fsync'ed) as it finishes."""
    pending = journal.pending(questions, key=itemgetter("id"))
    for question in tqdm(pending, desc="distill samples", unit="question", initial=len(questions) - len(pending),
                         total=len(questions)):
        answers = sample_answers(model, tokenizer, question["text"], params,
                                 question_seed(params.seed, question["id"]))
        journal.append(OK, {"id": question["id"], "answers": answers})
    return len(pending)


def sample_rows(questions: list[dict[str, Any]], journal: Journal, parent: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (question, sample), in question order, each with the parent it was sampled from."""
    rows = []
    for question in questions:
        for index, answer in enumerate(journal.entries[question["id"]]["record"]["answers"]):
            rows.append({"id": f"{question['id']}-{index}", "question_id": question["id"], "sample": index,
                         "question": question["text"], "source": question["source"], "answer": answer,
                         "parent": parent})
    return rows

"""Baize-style self-chat: the teacher writes a whole conversation about a seed, both sides."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from openai import APIError, OpenAI

from tasks.config import CollectParams
from tasks.transcript import TranscriptError, parse_transcript

TEMPLATE_VERSION = "baize_v1.2"
MODE = "transcript"

# Our own wording of Baize's idea. A tiny teacher needs the format shown, not only described: the
# worked example is given as an earlier exchange of the chat (it gave 0/10 unparseable replies and ~4
# turns per dialogue with SmolLM2-135M, against 8/10 unparseable for a single instruction).
_SYSTEM = (
    "You write realistic chat transcripts between a curious human and a helpful AI assistant. "
    "Every line starts with [Human] or [AI]. The human asks follow-up questions; the AI gives "
    "clear, correct, detailed answers and does not ask questions back."
)
_EXAMPLE_TOPIC = "How do I keep basil alive indoors?"
_EXAMPLE = (
    "[Human] How do I keep basil alive indoors?\n"
    "[AI] Give it at least six hours of bright light a day, water when the top of the soil is dry, "
    "and pinch off flower buds so it keeps growing leaves.\n"
    "[Human] Why does it wilt even when I water it?\n"
    "[AI] Wilting with wet soil usually means the roots sit in water. Use a pot with drainage holes "
    "and let the soil dry a little between waterings.\n"
)


def _ask(topic: str) -> str:
    return f"Write a transcript where the human first asks: {topic}"


def template_messages(seed_text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": _SYSTEM},
            {"role": "user", "content": _ask(_EXAMPLE_TOPIC)},
            {"role": "assistant", "content": _EXAMPLE},
            {"role": "user", "content": _ask(seed_text)}]


def dialogue_id(seed_id: str, mode: str, template_version: str, teacher_model: str, sample: int) -> str:
    key = json.dumps([seed_id, mode, template_version, teacher_model, sample])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def collect_dialogue(client: OpenAI, base_url: str, seed: dict[str, Any], sample: int,
                     params: CollectParams) -> tuple[str, dict[str, Any]]:
    """Ask the teacher for one dialogue. Returns ("ok", dialogue) or ("quarantine", record with reason)."""
    model = params.teacher.model
    record: dict[str, Any] = {
        "id": dialogue_id(seed["id"], MODE, TEMPLATE_VERSION, model, sample),
        "seed_id": seed["id"], "source": seed["source"], "domain": seed["domain"], "mode": MODE,
        "template_version": TEMPLATE_VERSION, "sample": sample,
        "teacher": {"model": model, "endpoint": urlparse(base_url).hostname},
    }
    try:
        response = client.chat.completions.create(
            model=model, messages=template_messages(seed["text"]), max_tokens=params.max_tokens,
            temperature=params.temperature, top_p=params.top_p, seed=params.seed + sample,
        )
    except (APIError, ValueError) as exc:  # ValueError covers a malformed JSON body
        return "quarantine", {**record, "stage": "collect", "reason": f"teacher error: {type(exc).__name__}: {exc}"}
    raw = response.choices[0].message.content or ""
    usage = response.usage
    record["usage"] = {"prompt_tokens": usage.prompt_tokens if usage else 0,
                       "completion_tokens": usage.completion_tokens if usage else 0}
    record["raw"] = raw
    record["finish_reason"] = response.choices[0].finish_reason
    record["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        turns = parse_transcript(raw)
    except TranscriptError as exc:
        return "quarantine", {**record, "stage": "collect", "reason": f"unparseable transcript: {exc}"}
    record["turns"] = [t.as_dict() for t in turns]
    return "ok", record


def collect_corpus(client: OpenAI, base_url: str, seeds: list[dict[str, Any]],
                   params: CollectParams) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, float]]:
    """One dialogue per seed and sample, sequentially; returns (dialogues, quarantined, stats)."""
    from tqdm import tqdm

    dialogues, quarantined = [], []
    prompt_tokens = completion_tokens = 0
    jobs = [(seed, sample) for seed in seeds for sample in range(params.samples_per_seed)]
    started = time.monotonic()
    with tqdm(jobs, desc="self-chat", unit="dialogue") as bar:
        for seed, sample in bar:
            status, record = collect_dialogue(client, base_url, seed, sample, params)
            (dialogues if status == "ok" else quarantined).append(record)
            usage = record.get("usage") or {}
            prompt_tokens += usage.get("prompt_tokens", 0)
            completion_tokens += usage.get("completion_tokens", 0)
            bar.set_postfix(ok=len(dialogues), quarantined=len(quarantined), tokens=completion_tokens)
    elapsed = time.monotonic() - started
    stats = {"requests": len(jobs), "dialogues": len(dialogues), "quarantined": len(quarantined),
             "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "seconds": round(elapsed, 1),
             "dialogues_per_minute": round(60 * len(dialogues) / elapsed, 2) if elapsed else 0.0,
             "completion_tokens_per_second": round(completion_tokens / elapsed, 1) if elapsed else 0.0,
             "mean_turns": round(sum(len(d["turns"]) for d in dialogues) / len(dialogues), 2) if dialogues else 0.0}
    return dialogues, quarantined, stats

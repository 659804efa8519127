"""Self-chat collection at scale: one dialogue per job, through the request engine (tasks/engine: bounded
concurrency, rate limits, retries, a hard budget, and a journal that makes any interrupted run resumable
without losing or repeating a dialogue)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI
from tqdm import tqdm

from tasks.collect.transcript_mode import TEMPLATES, transcript_dialogue
from tasks.collect.turns_mode import template_version as turns_template_version
from tasks.collect.turns_mode import turns_dialogue
from tasks.core.config import Budget, CollectParams
from tasks.core.errors import SelfchatError
from tasks.core.ids import dialogue_id
from tasks.core.paths import JOURNALS
from tasks.engine.chat import Chat
from tasks.engine.journal import ABANDONED, OK, QUARANTINE, RETRY_LATER, Journal, JournalView, sibling_journals
from tasks.engine.ledger import Ledger
from tasks.engine.rate_limit import RateLimiter
from tasks.engine.requests import RUN_SPENDING, Engine, Tally, journal_ledger


@dataclass(frozen=True)
class Job:
    id: str
    seed: dict[str, Any]
    sample: int


class TooFewDialogues(SelfchatError):
    """Collection ended with less of the plan than collect.min_kept_fraction: not a corpus to go on with."""


def template_version(params: CollectParams) -> str:
    return TEMPLATES[params.template].version if params.mode == "transcript" else turns_template_version(params.turns)


def plan_jobs(seeds: list[dict[str, Any]], params: CollectParams) -> list[Job]:
    """Every (seed, sample) to collect, in a fixed order; the id is what makes resume and reruns exact."""
    version = template_version(params)
    return [Job(dialogue_id(seed["id"], params.mode, version, params.teacher.model, sample), seed, sample)
            for seed in seeds for sample in range(params.samples_per_seed)]


def journal_path(params: CollectParams, folder: Path = JOURNALS) -> Path:
    """One journal per generation settings: answers sampled differently are not reused."""
    settings = {"mode": params.mode, "template": template_version(params), "model": params.teacher.model,
                "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
                "seed": params.seed,  # the assistant prompt is in the template version
                "turns": params.turns.model_dump(exclude={"assistant_prompt"}) if params.mode == "turns" else None}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return folder / f"journal-{digest}.jsonl"


def all_journals(params: CollectParams, folder: Path = JOURNALS) -> list[Path]:
    """The one-process journal of these settings and every shard journal beside it."""
    whole = journal_path(params, folder)
    return [whole, *sibling_journals(whole)]


def retried_after_outage(journal: JournalView, plan: list[Job]) -> int:
    """Dialogues that a transient teacher failure left for this run to ask again."""
    return sum(1 for job in plan if (journal.entries.get(job.id) or {}).get("status") == RETRY_LATER)


def corpus_ledger(params: CollectParams, journal: JournalView, budget: Budget | None = None) -> Ledger:
    """What the corpus so far spent (every shard's journal), against `budget` (collect.budget unless given)."""
    return journal_ledger(params, params.teacher.model, journal, budget)


class Collector(Engine[Job]):
    """Writes one self-chat dialogue per job (turns or transcript mode)."""

    def __init__(self, client: AsyncOpenAI | None, base_url: str, params: CollectParams, journal: Journal,
                 limiter: RateLimiter | None = None, ledger: Ledger | None = None) -> None:
        super().__init__(client, base_url, params.teacher, params, journal, limiter,
                         ledger or corpus_ledger(params, journal))
        self.params: CollectParams = params

    def describe(self, job: Job) -> dict[str, Any]:
        return {"id": job.id, "seed_id": job.seed["id"], "topic": job.seed["text"], "source": job.seed["source"],
                "domain": job.seed["domain"], "mode": self.params.mode,
                "template_version": template_version(self.params), "sample": job.sample,
                "teacher": {"model": self.params.teacher.model, "endpoint": self.host}}

    async def work(self, job: Job, chat: Chat) -> dict[str, Any]:
        if self.params.mode == "turns":
            return await turns_dialogue(chat, job.seed["text"], self.params.turns)
        return await transcript_dialogue(chat, job.seed["text"], self.params.template)

    def results(self, plan: list[Job]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return plan_results(self.journal, plan)


def plan_results(journal: JournalView, plan: list[Job]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Kept and quarantined records in plan order (so a rerun, or the same plan collected in shards, writes
    identical files), each tagged with its seed's `sensitive` flag."""
    kept, quarantined = [], []
    for job in plan:
        entry = journal.entries.get(job.id)
        if entry is None or entry["status"] == ABANDONED:
            continue
        record = {**entry["record"], "sensitive": bool(job.seed.get("sensitive"))}
        (kept if entry["status"] == OK else quarantined).append(record)
    return kept, quarantined


def quarantine_reason_kind(reason: str) -> str:
    """"teacher error after 4 attempt(s): RateLimitError: ..." -> "teacher_error_RateLimitError"."""
    if reason.startswith("teacher error"):
        return "teacher_error_" + reason.split(": ")[1]
    return reason.split(":")[0].replace(" ", "_")


def collect_metrics(tally: Tally, journal: JournalView, params: CollectParams, plan: list[Job], resumed: int,
                    retried: int, seconds: float, kept: list[dict[str, Any]],
                    quarantined: list[dict[str, Any]]) -> dict[str, Any]:
    """The stage's metrics: this run's `tally`, and the corpus so far as `journal` (every shard's) has it."""
    corpus = corpus_ledger(params, journal)
    spent = {**dict.fromkeys(RUN_SPENDING, 0), **tally.spent, "cost_usd": round(tally.spent.get("cost_usd", 0.0), 6),
             "corpus_tokens": corpus.corpus_tokens, "corpus_cost_usd": round(corpus.corpus_cost_usd, 6)}
    counts = Counter(tally.counts)
    new = counts[OK]
    return {
        "planned": len(plan), "dialogues": len(kept), "quarantined": len(quarantined), "resumed": resumed,
        "retried_after_outage": retried,
        "quarantined_to_retry": sum(1 for q in quarantined if q.get("retry_next_run")),
        "collected_now": new + counts[QUARANTINE] + counts[RETRY_LATER],
        "pending": len(journal.pending(plan)),
        "budget_reached": int(tally.budget_reached), **spent, "seconds": round(seconds, 1),
        "dialogues_per_minute": round(60 * new / seconds, 2) if seconds else 0.0,
        "completion_tokens_per_second": round(spent["completion_tokens"] / seconds, 1) if seconds else 0.0,
        "mean_turns": round(sum(len(d["turns"]) for d in kept) / len(kept), 2) if kept else 0.0,
        "quarantine_reasons": dict(Counter(quarantine_reason_kind(q["reason"]) for q in quarantined)),
    }


def progress_bar(total: int, done: int) -> tqdm:
    return tqdm(total=total, initial=done, desc="self-chat", unit="dialogue", smoothing=0.1)


def check_enough_kept(kept: int, planned: int, min_fraction: float, journal: Path) -> None:
    """Before any output is written: a failed collection must not replace the last good corpus."""
    if planned and kept < min_fraction * planned:
        raise TooFewDialogues(
            f"only {kept} of {planned} planned dialogues were kept (collect.min_kept_fraction is {min_fraction:.0%}); "
            f"the reasons are in metrics/collect.json and every reply is in {journal}")

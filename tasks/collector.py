"""Self-chat collection at scale: bounded concurrency, rate limits, retries, a hard budget, and a journal
that makes any interrupted run resumable without losing or repeating a dialogue."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from openai import AsyncOpenAI
from tqdm import tqdm

from tasks.config import CollectParams
from tasks.journal import Journal
from tasks.ledger import Ledger
from tasks.rate_limit import RateLimiter
from tasks.retries import FatalTeacherError, call_with_retries, redact
from tasks.selfchat import TEMPLATE_VERSION as TRANSCRIPT_TEMPLATE
from tasks.selfchat import Rejected, Reply, dialogue_id, transcript_dialogue
from tasks.turn_by_turn import TEMPLATE_VERSION as TURNS_TEMPLATE
from tasks.turn_by_turn import turns_dialogue

JOURNALS = Path("data/collect")
TEMPLATE_VERSIONS = {"transcript": TRANSCRIPT_TEMPLATE, "turns": TURNS_TEMPLATE}


@dataclass(frozen=True)
class Job:
    id: str
    seed: dict[str, Any]
    sample: int


class BudgetReached(Exception):
    """Raised inside one dialogue when its next request could cross the budget."""


def plan_jobs(seeds: list[dict[str, Any]], params: CollectParams) -> list[Job]:
    """Every (seed, sample) to collect, in a fixed order; the id is what makes resume and reruns exact."""
    version = TEMPLATE_VERSIONS[params.mode]
    return [Job(dialogue_id(seed["id"], params.mode, version, params.teacher.model, sample), seed, sample)
            for seed in seeds for sample in range(params.samples_per_seed)]


def journal_path(params: CollectParams, folder: Path = JOURNALS) -> Path:
    """One journal per generation settings: answers sampled differently are not reused."""
    settings = {"mode": params.mode, "template": TEMPLATE_VERSIONS[params.mode], "model": params.teacher.model,
                "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
                "seed": params.seed, "turns": params.turns.model_dump() if params.mode == "turns" else None}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return folder / f"journal-{digest}.jsonl"


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    # ~3 characters per token errs high for English: reservations against limits stay on the safe side.
    return sum(len(m["content"]) // 3 + 8 for m in messages)


class Collector:
    def __init__(self, client: AsyncOpenAI | None, base_url: str, params: CollectParams, journal: Journal,
                 limiter: RateLimiter | None = None) -> None:
        self.client = client
        self.endpoint = urlparse(base_url).hostname
        self.params = params
        self.journal = journal
        self.limiter = limiter or RateLimiter(params.rate_limits)
        self.ledger = Ledger(params.prices, params.budget)
        for entry in journal.entries.values():
            usage = entry["record"].get("usage") or {}
            self.ledger.prior_tokens += usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
            self.ledger.prior_cost += self.ledger.cost_of(entry["record"]["teacher"]["model"],
                                                          usage.get("prompt_tokens", 0),
                                                          usage.get("completion_tokens", 0))
        self.slots = asyncio.Semaphore(params.concurrency)
        self.counts: Counter[str] = Counter()
        self.budget_reached = False
        self.fatal = False
        self.bar: tqdm | None = None

    def pending(self, plan: list[Job]) -> list[Job]:
        return [job for job in plan if job.id not in self.journal]

    async def _chat(self, messages: list[dict[str, str]], sample: int, usage: dict[str, int]) -> Reply:
        """One teacher request under the budget, the rate limits and the retry policy."""
        model, max_tokens = self.params.teacher.model, self.params.max_tokens
        estimate = estimate_prompt_tokens(messages)
        if not self.ledger.reserve(model, estimate, max_tokens):
            self.budget_reached = True
            raise BudgetReached
        attempts = 0

        async def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            await self.limiter.acquire(estimate + max_tokens)
            try:
                return await self.client.chat.completions.create(
                    model=model, messages=messages, max_tokens=max_tokens, temperature=self.params.temperature,
                    top_p=self.params.top_p, seed=self.params.seed + sample)
            except Exception:
                self.limiter.settle(estimate + max_tokens, 0)
                raise

        def failed(exc: BaseException, retry_after: float | None) -> None:
            self.ledger.failed_requests += 1
            if retry_after:
                self.limiter.pause(retry_after)

        try:
            response = await call_with_retries(attempt, self.params.teacher, failed)
        finally:
            self.ledger.release(model, estimate, max_tokens)
            self.ledger.retries += max(attempts - 1, 0)
            usage["attempts"] += attempts
        prompt = response.usage.prompt_tokens if response.usage else 0
        completion = response.usage.completion_tokens if response.usage else 0
        self.ledger.record(model, prompt, completion)
        self.limiter.settle(estimate + max_tokens, prompt + completion)
        usage["prompt_tokens"] += prompt
        usage["completion_tokens"] += completion
        usage["requests"] += 1
        choice = response.choices[0]
        return Reply(choice.message.content or "", choice.finish_reason)

    def _record(self, job: Job) -> dict[str, Any]:
        return {"id": job.id, "seed_id": job.seed["id"], "topic": job.seed["text"], "source": job.seed["source"],
                "domain": job.seed["domain"], "mode": self.params.mode,
                "template_version": TEMPLATE_VERSIONS[self.params.mode], "sample": job.sample,
                "teacher": {"model": self.params.teacher.model, "endpoint": self.endpoint}}

    async def _write_dialogue(self, job: Job) -> tuple[str, dict[str, Any]]:
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "attempts": 0}

        async def chat(messages: list[dict[str, str]]) -> Reply:
            return await self._chat(messages, job.sample, usage)

        record = self._record(job)
        try:
            if self.params.mode == "turns":
                fields = await turns_dialogue(chat, job.seed["text"], self.params.turns)
            else:
                fields = await transcript_dialogue(chat, job.seed["text"])
            status, record = "ok", {**record, **fields}
        except Rejected as exc:
            status, record = "quarantine", {**record, **exc.fields, "stage": "collect", "reason": exc.reason}
        except (BudgetReached, FatalTeacherError):
            raise
        except Exception as exc:  # the last attempt's error after retries, or one not worth retrying
            message = redact(str(exc), os.environ.get(self.params.teacher.api_key_env))
            reason = f"teacher error after {usage['attempts']} attempt(s): {type(exc).__name__}: {message}"
            status, record = "quarantine", {**record, "stage": "collect", "reason": reason[:500]}
        record["usage"] = usage
        record["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        return status, record

    async def collect_one(self, job: Job) -> str:
        """Collect one dialogue and journal it; returns "ok", "quarantine" or "skipped" (budget, fatal)."""
        async with self.slots:
            if self.budget_reached or self.fatal:
                return self._count("skipped")
            try:
                status, record = await self._write_dialogue(job)
            except BudgetReached:
                return self._count("skipped")
            except FatalTeacherError:
                self.fatal = True
                raise
            self.journal.append(status, record)
            return self._count(status)

    def _count(self, status: str) -> str:
        self.counts[status] += 1
        if self.bar is not None and status != "skipped":
            spent = self.ledger.as_metrics()
            self.bar.update(1)
            self.bar.set_postfix(ok=self.counts["ok"], quarantined=self.counts["quarantine"],
                                 retries=spent["retries"], tokens=spent["prompt_tokens"] + spent["completion_tokens"],
                                 cost=f"${spent['cost_usd']:.4f}", refresh=False)
        return status

    def results(self, plan: list[Job]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Kept and quarantined records in plan order (so a rerun writes identical files)."""
        kept, quarantined = [], []
        for job in plan:
            entry = self.journal.entries.get(job.id)
            if entry is not None:
                (kept if entry["status"] == "ok" else quarantined).append(entry["record"])
        return kept, quarantined


def quarantine_reason_kind(reason: str) -> str:
    """"teacher error after 4 attempt(s): RateLimitError: ..." -> "teacher_error_RateLimitError"."""
    if reason.startswith("teacher error"):
        return "teacher_error_" + reason.split(": ")[1]
    return reason.split(":")[0].replace(" ", "_")


def collect_metrics(collector: Collector, plan: list[Job], resumed: int, seconds: float,
                    kept: list[dict[str, Any]], quarantined: list[dict[str, Any]]) -> dict[str, Any]:
    spent = collector.ledger.as_metrics()
    new = collector.counts["ok"]
    return {
        "planned": len(plan), "dialogues": len(kept), "quarantined": len(quarantined), "resumed": resumed,
        "collected_now": new + collector.counts["quarantine"], "pending": len(collector.pending(plan)),
        "budget_reached": int(collector.budget_reached), **spent, "seconds": round(seconds, 1),
        "dialogues_per_minute": round(60 * new / seconds, 2) if seconds else 0.0,
        "completion_tokens_per_second": round(spent["completion_tokens"] / seconds, 1) if seconds else 0.0,
        "mean_turns": round(sum(len(d["turns"]) for d in kept) / len(kept), 2) if kept else 0.0,
        "quarantine_reasons": dict(Counter(quarantine_reason_kind(q["reason"]) for q in quarantined)),
    }


def progress_bar(total: int, done: int) -> tqdm:
    return tqdm(total=total, initial=done, desc="self-chat", unit="dialogue", smoothing=0.1)


async def collect_batch(collector: Collector, jobs: list[Job], number: int) -> dict[str, int]:
    """Collect one batch concurrently; the slots are shared with every other batch. `number` names the
    batch in the Prefect UI."""
    results = await asyncio.gather(*(collector.collect_one(job) for job in jobs), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return dict(Counter(results))


async def run_in_batches(collector: Collector, pending: list[Job],
                         run_batch: Callable[[Collector, list[Job], int], Awaitable[dict[str, int]]]) -> None:
    """Run `pending` as batches, only as many started as the concurrency can keep busy (so the Prefect UI
    shows queued batches as not yet started, and a budget stop leaves them unstarted)."""
    size = collector.params.batch_size
    batches = [pending[start:start + size] for start in range(0, len(pending), size)]
    window = asyncio.Semaphore(max(2, -(-collector.params.concurrency // size) + 1))

    async def start(jobs: list[Job], number: int) -> None:
        async with window:
            if not (collector.budget_reached or collector.fatal):
                await run_batch(collector, jobs, number)

    await asyncio.gather(*(start(jobs, number) for number, jobs in enumerate(batches, 1)))

"""Self-chat collection at scale: bounded concurrency, rate limits, retries, a hard budget, and a journal
that makes any interrupted run resumable without losing or repeating a dialogue."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from openai import AsyncOpenAI
from tqdm import tqdm

from tasks.collect.chat import Rejected, Reply
from tasks.collect.journal import ABANDONED, OK, QUARANTINE, RETRY_LATER, Journal, JournalView, sibling_journals
from tasks.collect.ledger import Ledger
from tasks.collect.rate_limit import RateLimiter
from tasks.collect.retries import FatalTeacherError, TeacherOutage, call_with_retries, is_outage, is_retryable, redact
from tasks.collect.transcript_mode import TEMPLATES, transcript_dialogue
from tasks.collect.turns_mode import template_version as turns_template_version
from tasks.collect.turns_mode import turns_dialogue
from tasks.config import Budget, CollectParams
from tasks.errors import SelfchatError
from tasks.ids import dialogue_id
from tasks.paths import JOURNALS


@dataclass(frozen=True)
class Job:
    id: str
    seed: dict[str, Any]
    sample: int


class BudgetReached(Exception):
    """Raised inside one dialogue when its next request could cross the budget."""


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


def pending_jobs(journal: JournalView, plan: list[Job]) -> list[Job]:
    return [job for job in plan if not journal.done(job.id)]


def retried_after_outage(journal: JournalView, plan: list[Job]) -> int:
    """Dialogues that a transient teacher failure left for this run to ask again."""
    return sum(1 for job in plan if (journal.entries.get(job.id) or {}).get("status") == RETRY_LATER)


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    # ~3 characters per token errs high for English: reservations against limits stay on the safe side.
    return sum(len(m["content"]) // 3 + 8 for m in messages)


def corpus_ledger(params: CollectParams, journal: JournalView, budget: Budget | None = None) -> Ledger:
    """A ledger that counts what the journal's earlier runs spent (every line: tokens of retried and
    abandoned dialogues were spent too) against `budget` (collect.budget unless given)."""
    ledger = Ledger(params.prices, params.budget if budget is None else budget)
    for entry in journal.lines:
        usage = entry["record"].get("usage") or {}
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        ledger.prior_tokens += prompt + completion
        ledger.prior_cost += ledger.cost_of(entry["record"]["teacher"]["model"], prompt, completion)
    return ledger


RUN_SPENDING = ("prompt_tokens", "completion_tokens", "cost_usd", "requests", "retries", "failed_requests")


@dataclass
class Tally:
    """What one collection run did: outcomes counted, tokens and requests spent, whether the budget stopped it.
    A shard's flow run returns it; the collect stage adds the shards' up."""
    counts: dict[str, int]
    spent: dict[str, float]
    budget_reached: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def total(tallies: list[Tally]) -> Tally:
        counts: Counter[str] = Counter()
        spent: Counter[str] = Counter()
        for tally in tallies:
            counts.update(tally.counts)
            spent.update(tally.spent)
        return Tally(dict(counts), dict(spent), any(t.budget_reached for t in tallies))


class Collector:
    def __init__(self, client: AsyncOpenAI | None, base_url: str, params: CollectParams, journal: Journal,
                 limiter: RateLimiter | None = None, ledger: Ledger | None = None) -> None:
        self.client = client
        self.endpoint = urlparse(base_url).hostname
        self.params = params
        self.journal = journal
        self.limiter = limiter or RateLimiter(params.rate_limits)
        self.ledger = ledger or corpus_ledger(params, journal)
        self.slots = asyncio.Semaphore(params.concurrency)
        self.counts: Counter[str] = Counter()
        self.budget_reached = False
        self.fatal = False
        self.failures_in_a_row = 0  # connection failures and 5xx since the last answer: the circuit breaker
        self.last_failure = ""
        self.bar: tqdm | None = None

    def pending(self, plan: list[Job]) -> list[Job]:
        return pending_jobs(self.journal, plan)

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
            limit = self.params.teacher.max_consecutive_failures
            if self.failures_in_a_row >= limit:
                raise TeacherOutage(f"teacher unreachable: {self.failures_in_a_row} requests in a row failed "
                                    f"(last: {self.last_failure})")
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
            if is_outage(exc):
                self.failures_in_a_row += 1
                message = redact(str(exc), os.environ.get(self.params.teacher.api_key_env))
                self.last_failure = f"{type(exc).__name__}: {message}"[:300]
            if retry_after:
                self.limiter.pause(retry_after)

        try:
            response = await call_with_retries(attempt, self.params.teacher, failed)
        finally:
            self.ledger.release(model, estimate, max_tokens)
            self.ledger.retries += max(attempts - 1, 0)
            usage["attempts"] += attempts
        self.failures_in_a_row = 0
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
                "template_version": template_version(self.params), "sample": job.sample,
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
                fields = await transcript_dialogue(chat, job.seed["text"], self.params.template)
            status, record = OK, {**record, **fields}
        except Rejected as exc:
            status, record = QUARANTINE, {**record, **exc.fields, "stage": "collect", "reason": exc.reason}
        except BudgetReached:
            if usage["requests"]:  # a turns-mode dialogue cut off halfway: its tokens were spent all the same
                self.journal.append(ABANDONED, {**record, "usage": usage})
            raise
        except FatalTeacherError:
            raise
        except Exception as exc:  # the last attempt's error after retries, or one not worth retrying
            message = redact(str(exc), os.environ.get(self.params.teacher.api_key_env))
            # retries ran out on a failure that may pass (429, 5xx, timeout): asked again by the next runs,
            # up to teacher.rerun_transient_failures of them
            earlier = self.journal.transient_failures(job.id) if is_retryable(exc) else 0
            transient = is_retryable(exc) and earlier < self.params.teacher.rerun_transient_failures
            runs = f" in each of {earlier + 1} runs" if earlier else ""
            reason = f"teacher error after {usage['attempts']} attempt(s){runs}: {type(exc).__name__}: {message}"
            status = RETRY_LATER if transient else QUARANTINE
            record = {**record, "stage": "collect", "reason": reason[:500], "retry_next_run": transient}
        record["usage"] = usage
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
            self.bar.set_postfix(ok=self.counts[OK], quarantined=self.counts[QUARANTINE] + self.counts[RETRY_LATER],
                                 retries=spent["retries"], tokens=spent["prompt_tokens"] + spent["completion_tokens"],
                                 cost=f"${spent['cost_usd']:.4f}", refresh=False)
        return status

    def results(self, plan: list[Job]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return plan_results(self.journal, plan)

    def tally(self) -> Tally:
        spent = {k: v for k, v in self.ledger.as_metrics().items() if k in RUN_SPENDING}
        return Tally(dict(self.counts), spent, self.budget_reached)


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
        "pending": len(pending_jobs(journal, plan)),
        "budget_reached": int(tally.budget_reached), **spent, "seconds": round(seconds, 1),
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


def check_enough_kept(kept: int, planned: int, min_fraction: float, journal: Path) -> None:
    """Before any output is written: a failed collection must not replace the last good corpus."""
    if planned and kept < min_fraction * planned:
        raise TooFewDialogues(
            f"only {kept} of {planned} planned dialogues were kept (collect.min_kept_fraction is {min_fraction:.0%}); "
            f"the reasons are in metrics/collect.json and every reply is in {journal}")

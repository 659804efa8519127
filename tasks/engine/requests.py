"""Jobs of LLM requests under the engine's rules: at most `concurrency` in flight, rate limits, retries with
backoff and a circuit breaker, a hard budget, and each job's outcome journaled once it is final.

A job is anything with an `id` (its key in the journal) and a `sample` number (its request seed); what it
asks and what it records is a subclass's business (`describe` and `work`): collection writes a dialogue per
job, distillation's judge scores one answer per job."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlparse

from openai import AsyncOpenAI
from tqdm import tqdm

from tasks.core.config import Budget, Price, RateLimits, TeacherParams
from tasks.engine.chat import Chat, Rejected, Reply
from tasks.engine.journal import ABANDONED, OK, QUARANTINE, RETRY_LATER, Journal, JournalView
from tasks.engine.ledger import Ledger
from tasks.engine.rate_limit import RateLimiter
from tasks.engine.retries import FatalTeacherError, TeacherOutage, call_with_retries, is_outage, is_retryable, redact


class Settings(Protocol):
    """What the engine reads of a stage's params (collect's, or distill's judge)."""

    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    concurrency: int
    batch_size: int
    rate_limits: RateLimits
    budget: Budget
    prices: dict[str, Price]


class JobLike(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def sample(self) -> int: ...


J = TypeVar("J", bound=JobLike)


class BudgetReached(Exception):
    """Raised inside one job when its next request could cross the budget."""


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    # ~3 characters per token errs high for English: reservations against limits stay on the safe side.
    return sum(len(m["content"]) // 3 + 8 for m in messages)


def journal_ledger(settings: Settings, model: str, journal: JournalView, budget: Budget | None = None) -> Ledger:
    """A ledger that counts what the journal's earlier runs spent (every line: tokens of retried and
    abandoned jobs were spent too) against `budget` (the settings' unless given). A journal holds one
    model's requests: its file name hashes the model with the other request settings."""
    ledger = Ledger(settings.prices, settings.budget if budget is None else budget)
    for entry in journal.lines:
        usage = entry["record"].get("usage") or {}
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        ledger.prior_tokens += prompt + completion
        ledger.prior_cost += ledger.cost_of(model, prompt, completion)
    return ledger


RUN_SPENDING = ("prompt_tokens", "completion_tokens", "cost_usd", "requests", "retries", "failed_requests")


@dataclass
class Tally:
    """What one run did: outcomes counted, tokens and requests spent, whether the budget stopped it.
    A collection shard's flow run returns it; the collect stage adds the shards' up."""
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


class Engine(Generic[J]):
    """Runs jobs against one endpoint; `role` ("teacher", "judge") names it in reasons and errors, `stage`
    in quarantined records."""

    role = "teacher"
    stage = "collect"

    def __init__(self, client: AsyncOpenAI | None, base_url: str, endpoint: TeacherParams, settings: Settings,
                 journal: Journal, limiter: RateLimiter | None = None, ledger: Ledger | None = None) -> None:
        self.client = client
        self.endpoint = endpoint
        self.host = urlparse(base_url).hostname
        self.params = settings
        self.journal = journal
        self.limiter = limiter or RateLimiter(settings.rate_limits)
        self.ledger = ledger or journal_ledger(settings, endpoint.model, journal)
        self.slots = asyncio.Semaphore(settings.concurrency)
        self.counts: Counter[str] = Counter()
        self.budget_reached = False
        self.fatal = False
        self.failures_in_a_row = 0  # connection failures and 5xx since the last answer: the circuit breaker
        self.last_failure = ""
        self.bar: tqdm | None = None

    def describe(self, job: J) -> dict[str, Any]:
        """The fields that identify the job's record, whatever its outcome."""
        raise NotImplementedError

    async def work(self, job: J, chat: Chat) -> dict[str, Any]:
        """The job's requests (through `chat`) and the fields of its record; raises Rejected for a reply
        that is not usable."""
        raise NotImplementedError

    async def chat(self, messages: list[dict[str, str]], sample: int, usage: dict[str, int],
                   **extra: Any) -> Reply:
        """One request under the budget, the rate limits and the retry policy."""
        model, max_tokens = self.endpoint.model, self.params.max_tokens
        estimate = estimate_prompt_tokens(messages)
        if not self.ledger.reserve(model, estimate, max_tokens):
            self.budget_reached = True
            raise BudgetReached
        attempts = 0

        async def attempt() -> Any:
            nonlocal attempts
            limit = self.endpoint.max_consecutive_failures
            if self.failures_in_a_row >= limit:
                raise TeacherOutage(f"{self.role} unreachable: {self.failures_in_a_row} requests in a row failed "
                                    f"(last: {self.last_failure})")
            attempts += 1
            await self.limiter.acquire(estimate + max_tokens)
            try:
                return await self.client.chat.completions.create(
                    model=model, messages=messages, max_tokens=max_tokens, temperature=self.params.temperature,
                    top_p=self.params.top_p, seed=self.params.seed + sample, **extra)
            except Exception:
                self.limiter.settle(estimate + max_tokens, 0)
                raise

        def failed(exc: BaseException, retry_after: float | None) -> None:
            self.ledger.failed_requests += 1
            if is_outage(exc):
                self.failures_in_a_row += 1
                message = redact(str(exc), os.environ.get(self.endpoint.api_key_env))
                self.last_failure = f"{type(exc).__name__}: {message}"[:300]
            if retry_after:
                self.limiter.pause(retry_after)

        try:
            response = await call_with_retries(attempt, self.endpoint, failed)
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

    async def _outcome(self, job: J) -> tuple[str, dict[str, Any]]:
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "attempts": 0}

        async def chat(messages: list[dict[str, str]], **extra: Any) -> Reply:
            return await self.chat(messages, job.sample, usage, **extra)

        record = self.describe(job)
        try:
            status, record = OK, {**record, **await self.work(job, chat)}
        except Rejected as exc:
            status, record = QUARANTINE, {**record, **exc.fields, "stage": self.stage, "reason": exc.reason}
        except BudgetReached:
            if usage["requests"]:  # a job cut off halfway: its tokens were spent all the same
                self.journal.append(ABANDONED, {**record, "usage": usage})
            raise
        except FatalTeacherError:
            raise
        except Exception as exc:  # the last attempt's error after retries, or one not worth retrying
            message = redact(str(exc), os.environ.get(self.endpoint.api_key_env))
            # retries ran out on a failure that may pass (429, 5xx, timeout): asked again by the next runs,
            # up to rerun_transient_failures of them
            earlier = self.journal.transient_failures(job.id) if is_retryable(exc) else 0
            transient = is_retryable(exc) and earlier < self.endpoint.rerun_transient_failures
            runs = f" in each of {earlier + 1} runs" if earlier else ""
            reason = f"{self.role} error after {usage['attempts']} attempt(s){runs}: {type(exc).__name__}: {message}"
            status = RETRY_LATER if transient else QUARANTINE
            record = {**record, "stage": self.stage, "reason": reason[:500], "retry_next_run": transient}
        record["usage"] = usage
        return status, record

    async def run_one(self, job: J) -> str:
        """Run one job and journal it; returns "ok", "quarantine", "retry_later" or "skipped" (budget, fatal)."""
        async with self.slots:
            if self.budget_reached or self.fatal:
                return self._count("skipped")
            try:
                status, record = await self._outcome(job)
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

    def tally(self) -> Tally:
        spent = {k: v for k, v in self.ledger.as_metrics().items() if k in RUN_SPENDING}
        return Tally(dict(self.counts), spent, self.budget_reached)


async def run_batch(engine: Engine, jobs: list, number: int) -> dict[str, int]:
    """Run one batch concurrently; the slots are shared with every other batch. `number` names the batch
    in the Prefect UI."""
    results = await asyncio.gather(*(engine.run_one(job) for job in jobs), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return dict(Counter(results))


async def run_in_batches(engine: Engine, pending: list,
                         batch: Callable[[Engine, list, int], Awaitable[dict[str, int]]] = run_batch) -> None:
    """Run `pending` as batches, only as many started as the concurrency can keep busy (so the Prefect UI
    shows queued batches as not yet started, and a budget stop leaves them unstarted)."""
    size = engine.params.batch_size
    batches = [pending[start:start + size] for start in range(0, len(pending), size)]
    window = asyncio.Semaphore(max(2, -(-engine.params.concurrency // size) + 1))

    async def start(jobs: list, number: int) -> None:
        async with window:
            if not (engine.budget_reached or engine.fatal):
                await batch(engine, jobs, number)

    await asyncio.gather(*(start(jobs, number) for number, jobs in enumerate(batches, 1)))

"""The collector against the real llama.cpp teacher behind a fault-injecting HTTP proxy."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tasks.collect.collector import Collector, plan_jobs
from tasks.core.config import CollectParams
from tasks.core.dialogue import ROLE_TAG
from tasks.engine.client import engine_client
from tasks.engine.journal import Journal
from tasks.engine.requests import run_batch, run_in_batches
from tasks.engine.retries import FatalTeacherError, TeacherOutage
from tests.fault_proxy import (
    ECHO_KEY,
    MALFORMED,
    RATE_LIMITED,
    SERVER_ERROR,
    SLOW,
    TRUNCATED,
    UNAUTHORIZED,
    FaultProxy,
    scheduled,
)

pytestmark = pytest.mark.integration
POISON = "POISONED-SEED"


def seeds(texts: list[str]) -> list[dict]:
    return [{"id": f"seed{i}", "source": "test", "domain": "general", "text": text} for i, text in enumerate(texts)]


def params(**overrides) -> CollectParams:
    teacher = {"max_retries": 5, "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 15,
               **overrides.pop("teacher", {})}
    # transcript mode: one request per dialogue, so the counts below are requests (turns mode: its own tests)
    return CollectParams.model_validate({"mode": "transcript", "max_tokens": 32, "concurrency": 2, "batch_size": 2,
                                         "teacher": teacher, **overrides})


def run_collector(base_url: str, config: CollectParams, seed_list: list[dict], journal_file: Path) -> Collector:
    async def go() -> Collector:
        with Journal(journal_file) as journal:
            async with engine_client(config.teacher, base_url) as client:
                collector = Collector(client, base_url, config, journal)
                await run_in_batches(collector, collector.journal.pending(plan_jobs(seed_list, config)), run_batch)
            return collector

    return asyncio.run(go())


@pytest.fixture
def proxy(teacher_url: str):
    proxies: list[FaultProxy] = []

    def make(**options) -> tuple[FaultProxy, str]:
        fault_proxy = FaultProxy(upstream=teacher_url.removesuffix("/v1"), **options)
        proxies.append(fault_proxy)
        return fault_proxy, fault_proxy.start()

    yield make
    for fault_proxy in proxies:
        fault_proxy.stop()


def test_transient_faults_are_retried_and_a_failing_seed_is_quarantined_with_its_reason(proxy, tmp_path):
    faults = [RATE_LIMITED, SERVER_ERROR, SLOW, TRUNCATED, MALFORMED]
    fault_proxy, base_url = proxy(choose=scheduled(faults, POISON.encode()), slow_s=20.0, retry_after_s=1.0)
    seed_list = seeds(["How do I boil an egg?", "What is a fever?", "How do I reset my router?",
                       "Why is the sky blue?", f"{POISON} tell me about rivers"])
    config = params()
    collector = run_collector(base_url, config, seed_list, tmp_path / "journal.jsonl")
    kept, quarantined = collector.results(plan_jobs(seed_list, config))
    ids = [r["id"] for r in kept + quarantined]
    assert len(ids) == len(set(ids)) == 5, "every seed ends kept or quarantined, once"
    poisoned = [q for q in quarantined if q["topic"].startswith(POISON)]
    assert len(poisoned) == 1
    assert poisoned[0]["reason"].startswith("teacher error after 6 attempt(s): InternalServerError")
    # 32 tokens leave some transcripts without a whole AI turn
    assert all(q["reason"].startswith(("unparseable transcript", "cut off by max_tokens"))
               for q in quarantined if q not in poisoned)
    assert [f for f in fault_proxy.faults() if f != "pass"].count(SERVER_ERROR) == 1 + 6
    # every injected fault cost one retry, the poisoned seed used all 5 of its own; only its last failure
    # was not retried (a genuinely slow reply on a busy machine may add a timeout and a retry)
    assert collector.ledger.retries >= len(faults) + 5
    assert collector.ledger.failed_requests == collector.ledger.retries + 1
    # the retry of the rate-limited request waited at least the Retry-After the server sent
    limited = next(s for s in fault_proxy.seen if s.fault == RATE_LIMITED)
    retry = next(s for s in fault_proxy.seen if s.body == limited.body and s.at > limited.at)
    assert retry.at - limited.at >= 1.0
    assert all(d["usage"]["completion_tokens"] > 0 for d in kept)


def test_unrecoverable_rate_limit_quarantines_after_the_last_attempt(proxy, tmp_path):
    _, base_url = proxy(choose=lambda number, body: RATE_LIMITED, retry_after_s=0.1)
    config = params(teacher={"max_retries": 2})
    collector = run_collector(base_url, config, seeds(["What is a fever?"]), tmp_path / "journal.jsonl")
    _, quarantined = collector.results(plan_jobs(seeds(["What is a fever?"]), config))
    assert quarantined[0]["reason"].startswith("teacher error after 3 attempt(s): RateLimitError")


def test_a_rejected_key_stops_the_run_with_the_key_redacted(proxy, tmp_path):
    fault_proxy, base_url = proxy(choose=lambda number, body: UNAUTHORIZED)
    seed_list = seeds(["What is a fever?", "Why is ice cold?", "How do I boil an egg?"])
    with pytest.raises(FatalTeacherError, match="AuthenticationError") as stopped:
        run_collector(base_url, params(concurrency=1), seed_list, tmp_path / "journal.jsonl")
    assert "sk-" not in str(stopped.value) and "***" in str(stopped.value)
    assert len(fault_proxy.seen) == 1, "stops at the first refusal instead of trying every seed"
    assert not (tmp_path / "journal.jsonl").read_text(), "nothing quarantined for a fault of the set-up"


def test_turns_mode_alternates_roles_with_the_real_teacher(teacher_url, tmp_path):
    config = params(mode="turns", max_tokens=48, turns={"max_rounds": 2})
    seed_list = seeds(["How do I boil an egg?", "What is a fever?"])
    collector = run_collector(teacher_url, config, seed_list, tmp_path / "journal.jsonl")
    kept, quarantined = collector.results(plan_jobs(seed_list, config))
    assert len(kept) + len(quarantined) == 2 and kept
    for record in kept:
        roles = [t["role"] for t in record["turns"]]
        assert roles[0] == "human" and roles[-1] == "ai"
        assert all(a != b for a, b in zip(roles, roles[1:]))
        assert len(roles) <= 2 * 2 and record["rounds"] <= 2
        assert not any(ROLE_TAG.search(t["text"]) for t in record["turns"])
        assert record["usage"]["requests"] == len(record["raw"]) >= 1
        assert record["turns"][0]["text"] == record["topic"]


def test_budget_stops_before_crossing_and_a_rerun_resumes(teacher_url, tmp_path):
    seed_list = seeds(["How do I boil an egg?", "What is a fever?", "How do I reset my router?", "Why is ice cold?"])
    journal_file = tmp_path / "journal.jsonl"
    tight = params(budget={"max_tokens": 700}, concurrency=1)
    first = run_collector(teacher_url, tight, seed_list, journal_file)
    assert first.budget_reached
    assert first.ledger.corpus_tokens <= 700, "never crosses the budget"
    done = len(first.journal.entries)
    assert 0 < done < 4
    second = run_collector(teacher_url, params(concurrency=1), seed_list, journal_file)
    assert not second.budget_reached and len(second.journal.entries) == 4
    assert second.counts["ok"] + second.counts["quarantine"] == 4 - done, "resumed only what was missing"
    lines = [json.loads(line)["record"]["id"] for line in journal_file.read_text().splitlines()]
    assert len(lines) == len(set(lines)) == 4


def test_an_outage_stops_early_and_a_rerun_heals_the_corpus(teacher_url, tmp_path):
    """A closed port: the circuit breaker stops the run after a few requests instead of trying every seed
    for minutes; after the endpoint is fixed, the dialogues it quarantined are asked again."""
    from tasks.services.llm_endpoint import free_port

    closed = f"http://127.0.0.1:{free_port()}/v1"
    seed_list = seeds(["How do I boil an egg?", "What is a fever?", "How do I reset my router?", "Why is ice cold?",
                       "What does a CPU do?", "What is a prime number?"])
    config = params(concurrency=1, teacher={"max_retries": 1, "max_consecutive_failures": 3})
    journal_file = tmp_path / "journal.jsonl"
    with pytest.raises(TeacherOutage, match="teacher unreachable: 3 requests in a row failed .*APIConnectionError"):
        run_collector(closed, config, seed_list, journal_file)
    lines = [json.loads(line) for line in journal_file.read_text().splitlines()]
    assert [entry["status"] for entry in lines] == ["retry_later"], "stopped at the breaker, not after every seed"
    healed = run_collector(teacher_url, config, seed_list, journal_file)
    kept, quarantined = healed.results(plan_jobs(seed_list, config))
    assert len(kept) + len(quarantined) == 6 and not any(q.get("retry_next_run") for q in quarantined)
    assert healed.counts["ok"] + healed.counts["quarantine"] == 6, "the outage's dialogue was asked again"


def test_the_key_never_reaches_a_reason_in_any_spelling(proxy, tmp_path, monkeypatch):
    key = "sk-proj-Zq7RtY2uVw9XkLm4Np8B"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    _, base_url = proxy(choose=lambda number, body: ECHO_KEY)
    config = params(concurrency=1, teacher={"max_retries": 0, "max_consecutive_failures": 2})
    with pytest.raises(TeacherOutage) as stopped:
        run_collector(base_url, config, seeds(["What is a fever?", "Why is ice cold?", "How do I boil an egg?"]),
                      tmp_path / "journal.jsonl")
    written = (tmp_path / "journal.jsonl").read_text() + str(stopped.value)
    assert "upstream rejected ***" in written
    for run in range(len(key) - 8 + 1):
        assert key[run:run + 8].lower() not in written.lower()

"""Fast tests of the collector's parts: rate limits, retry policy, ledger and budget, journal, turns guard,
Baize interchange, job planning."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx2
import openai
import pytest

from tasks.collect.collector import (
    Collector,
    Job,
    journal_path,
    plan_jobs,
    plan_results,
    quarantine_reason_kind,
    retried_after_outage,
)
from tasks.collect.imports import ImportFileError, import_baize
from tasks.collect.turns_mode import keep_own_turn, simulator_messages, turns_dialogue
from tasks.core.config import Budget, CollectParams, ConfigError, ImportSource, Price, RateLimits, parse_params
from tasks.core.dialogue import AI, HUMAN, Turn
from tasks.engine.chat import Rejected, Reply
from tasks.engine.journal import ABANDONED, RETRY_LATER, Journal, JournalBusy, JournalView
from tasks.engine.ledger import Ledger
from tasks.engine.rate_limit import RateLimiter
from tasks.engine.retries import is_fatal, is_retryable, retry_after_s
from tasks.validate.export import export_baize


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_requests_per_minute_spaces_requests_evenly():
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(requests_per_minute=120), clock=clock, sleep=clock.sleep)

    async def go() -> None:
        for _ in range(5):
            await limiter.acquire(10)

    asyncio.run(go())
    assert clock.now == pytest.approx(1.5)  # a burst of one second's allowance (2), then 0.5 s apart


def test_tokens_per_minute_waits_for_tokens_and_settles_on_real_usage():
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(tokens_per_minute=600), clock=clock, sleep=clock.sleep)  # 10/s, burst 100

    async def go() -> None:
        await limiter.acquire(100)
        limiter.settle(100, 40)  # used 40 of the 100 reserved: 60 come back
        await limiter.acquire(60)

    asyncio.run(go())
    assert clock.now == 0.0
    asyncio.run(limiter.acquire(50))
    assert clock.now == pytest.approx(5.0)


def test_a_pause_holds_every_request():
    clock = FakeClock()
    limiter = RateLimiter(RateLimits(), clock=clock, sleep=clock.sleep)
    limiter.pause(3.0)
    asyncio.run(limiter.acquire(1))
    assert clock.now == pytest.approx(3.0)


def status_error(cls: type, status: int, headers: dict[str, str] | None = None) -> Exception:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    return cls("boom", response=httpx2.Response(status, headers=headers or {}, request=request), body=None)


def test_retry_policy_classifies_errors_and_reads_retry_after():
    limited = status_error(openai.RateLimitError, 429, {"retry-after": "7"})
    assert is_retryable(limited) and retry_after_s(limited) == 7.0
    assert retry_after_s(status_error(openai.RateLimitError, 429, {"retry-after-ms": "250"})) == 0.25
    assert retry_after_s(status_error(openai.RateLimitError, 429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) \
        == 0.0  # a date in the past: no wait
    assert retry_after_s(status_error(openai.InternalServerError, 503)) is None
    assert is_retryable(status_error(openai.InternalServerError, 502))
    assert is_retryable(json.JSONDecodeError("x", "", 0))
    assert not is_retryable(status_error(openai.BadRequestError, 400))
    assert is_fatal(status_error(openai.AuthenticationError, 401))
    assert is_fatal(status_error(openai.NotFoundError, 404))


def test_ledger_costs_and_a_budget_that_counts_earlier_runs_and_requests_in_flight():
    ledger = Ledger({"gpt": Price(prompt=1.0, completion=2.0)}, Budget(max_cost_usd=0.01), prior_cost=0.004)
    ledger.record("gpt", 1000, 500)
    assert ledger.cost_usd == pytest.approx(0.002)
    assert ledger.corpus_cost_usd == pytest.approx(0.006)
    assert ledger.reserve("gpt", 1000, 1000)  # worst case 0.003 -> 0.009 booked
    assert not ledger.reserve("gpt", 1000, 1000), "a second one in flight could cross the budget"
    ledger.release("gpt", 1000, 1000)
    assert ledger.reserve("gpt", 1000, 1000)
    tokens = Ledger({}, Budget(max_tokens=100))
    assert tokens.reserve("local", 40, 60) and not tokens.reserve("local", 1, 0)


def test_a_cost_budget_needs_a_price_for_the_teacher_model():
    with pytest.raises(ConfigError, match="needs a price for 'gpt-4o-mini'"):
        parse_params({"seeds": {"sources": [{"source": "builtin:coding"}]},
                      "evaluate": {"should_refuse": [{"name": "x"}], "should_answer": [{"name": "y"}],
                                   "guardrail_prompt": "g"},
                      "collect": {"teacher": {"model": "gpt-4o-mini"}, "budget": {"max_cost_usd": 5}}})


def test_journal_moves_a_torn_last_line_aside_and_refuses_duplicates(tmp_path: Path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        journal.append("ok", {"id": "a"})
        journal.append("quarantine", {"id": "b", "reason": "r"})
        with pytest.raises(ValueError, match="already"):
            journal.append("ok", {"id": "a"})
    with path.open("a") as handle:
        handle.write('{"status": "ok", "record": {"id": "c"')
    with Journal(path) as journal:
        assert set(journal.entries) == {"a", "b"}
        assert len(journal.repairs) == 1 and "a torn last line" in journal.repairs[0]
        journal.append("ok", {"id": "c"})
    assert [json.loads(line)["record"]["id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]
    aside = [json.loads(line) for line in journal.corrupt_path.read_text().splitlines()]
    assert aside[0]["line"] == '{"status": "ok", "record": {"id": "c"' and aside[0]["offset"] > 0


def test_a_damaged_line_in_the_middle_loses_nothing_after_it(tmp_path: Path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        for name in "abcdefgh":
            journal.append("ok", {"id": name, "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    lines = path.read_text().splitlines(keepends=True)
    offset = sum(len(line.encode()) for line in lines[:3])
    lines[3] = lines[3][:20] + "\x00garbage\n"
    path.write_text("".join(lines))
    with Journal(path) as journal:
        assert set(journal.entries) == set("abcefgh"), "every valid line after the damaged one is kept"
        assert "1 damaged line(s)" in journal.repairs[0] and f"byte offset {offset}" in journal.repairs[0]
    aside = [json.loads(line) for line in journal.corrupt_path.read_text().splitlines()]
    assert [a["offset"] for a in aside] == [offset] and "garbage" in aside[0]["line"]
    assert len(path.read_text().splitlines()) == 7


def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path):
    path = tmp_path / "journal.jsonl"
    with Journal(path), pytest.raises(JournalBusy, match=f"in use by another collection \\(pid {os.getpid()}\\)"):
        Journal(path)
    with Journal(path):  # released on close
        pass


def test_transient_failures_are_asked_again_and_abandoned_tokens_still_count(tmp_path: Path):
    path = tmp_path / "journal.jsonl"
    usage = {"prompt_tokens": 100, "completion_tokens": 50}
    with Journal(path) as journal:
        journal.append(RETRY_LATER, {"id": "a", "reason": "teacher error", "usage": usage,
                                     "teacher": {"model": "m"}})
        journal.append(ABANDONED, {"id": "b", "usage": usage, "teacher": {"model": "m"}})
        journal.append("quarantine", {"id": "c", "reason": "unparseable", "usage": usage, "teacher": {"model": "m"}})
    plan = [Job(name, {"id": name}, 0) for name in "abc"]
    with Journal(path) as journal:
        assert [job.id for job in journal.pending(plan)] == ["a", "b"]
        assert retried_after_outage(journal, plan) == 1
        collector = Collector(None, "", CollectParams(budget={"max_tokens": 1000}), journal)
        assert collector.ledger.prior_tokens == 450, "tokens of every line count toward the budget"
        assert collector.results(plan)[1][0]["id"] == "a" and len(collector.results(plan)[1]) == 2
        journal.append("ok", {"id": "a"})
        journal.append("ok", {"id": "b"})
        assert journal.pending(plan) == [] and collector.results(plan)[0][0]["id"] == "a"


def test_plan_ids_are_stable_and_journals_follow_generation_settings():
    seeds = [{"id": "s1", "text": "q1"}, {"id": "s2", "text": "q2"}]
    params = CollectParams(samples_per_seed=3)
    plan = plan_jobs(seeds, params)
    assert len({job.id for job in plan}) == 6 and plan == plan_jobs(seeds, params)
    assert {j.id for j in plan_jobs(seeds, CollectParams(samples_per_seed=3, mode="transcript"))}.isdisjoint(
        j.id for j in plan)
    assert journal_path(params) == journal_path(CollectParams(samples_per_seed=1, concurrency=9))
    assert journal_path(params) != journal_path(CollectParams(temperature=0.2))
    assert quarantine_reason_kind("teacher error after 4 attempt(s): RateLimitError: 429") == \
        "teacher_error_RateLimitError"


def test_the_assistant_prompt_reaches_the_teacher_and_another_prompt_is_another_corpus(tmp_path):
    from tasks.core.config import TurnsParams

    seeds = [{"id": "s1", "text": "q1", "sensitive": True}, {"id": "s2", "text": "q2"}]
    default = CollectParams()
    # the prompt collected before it was a param: same ids and journal as then (digest pinned)
    assert journal_path(default).name == "journal-f5372ad773df.jsonl"
    other = CollectParams(turns=TurnsParams(assistant_prompt="Decline anything risky."))
    assert journal_path(other) != journal_path(default)
    assert {j.id for j in plan_jobs(seeds, other)}.isdisjoint(j.id for j in plan_jobs(seeds, default))
    chat, seen = scripted(["A1"])
    asyncio.run(turns_dialogue(chat, "Q1", other.turns.model_copy(update={"max_rounds": 1})))
    assert seen[0][0] == {"role": "system", "content": "Decline anything risky."}
    # each record carries its seed's flag, journal entries written before the flag existed included
    with Journal(tmp_path / "journal.jsonl") as journal:
        for job in plan_jobs(seeds, default):
            journal.append("ok", {"id": job.id})
    kept, _ = plan_results(JournalView([tmp_path / "journal.jsonl"]), plan_jobs(seeds, default))
    assert [r["sensitive"] for r in kept] == [True, False]


def test_each_role_keeps_only_its_own_turn():
    assert keep_own_turn("Sure, boil it 8 minutes.\nHuman: and then?\nAI: peel it", AI) == \
        ("Sure, boil it 8 minutes.", 1)
    assert keep_own_turn("[Human] Why is that?", HUMAN) == ("Why is that?", 1)
    assert keep_own_turn("[AI] It is because...", HUMAN) == ("", 1)
    assert keep_own_turn("Plain answer.", AI) == ("Plain answer.", 0)


def scripted(replies: list[str]):
    """The teacher's replies in order, to drive the turn logic through its branches (the real teacher
    runs in test_collector_faults)."""
    queue = list(replies)
    seen: list[list[dict[str, str]]] = []

    async def chat(messages: list[dict[str, str]]) -> Reply:
        seen.append(messages)
        return Reply(queue.pop(0), "stop")

    return chat, seen


def test_turns_mode_stops_at_the_end_marker_and_cuts_role_bleed():
    from tasks.core.config import TurnsParams

    chat, seen = scripted(["Boil it.\nHuman: thanks!", "How long?", "Eight minutes.", "[END]"])
    fields = asyncio.run(turns_dialogue(chat, "How do I boil an egg?", TurnsParams(max_rounds=5)))
    assert [(t["role"], t["text"]) for t in fields["turns"]] == [
        (HUMAN, "How do I boil an egg?"), (AI, "Boil it."), (HUMAN, "How long?"), (AI, "Eight minutes.")]
    assert fields["rounds"] == 2 and fields["role_labels_removed"] == 1 and len(fields["raw"]) == 4
    # the assistant sees a real chat history; the simulator sees it from the human's side
    assert [m["role"] for m in seen[2]] == ["system", "user", "assistant", "user"]
    assert seen[1][-1] == {"role": "user", "content": "Boil it."}


def test_turns_mode_respects_max_rounds_and_rejects_an_empty_answer():
    from tasks.core.config import TurnsParams

    chat, seen = scripted(["A1", "Q2", "A2"])
    fields = asyncio.run(turns_dialogue(chat, "Q1", TurnsParams(max_rounds=2)))
    assert len(fields["turns"]) == 4 and len(seen) == 3
    chat, _ = scripted(["Human: I will answer myself"])
    with pytest.raises(Rejected, match="empty assistant turn"):
        asyncio.run(turns_dialogue(chat, "Q1", TurnsParams()))
    assert simulator_messages([Turn(HUMAN, "Q1"), Turn(AI, "A1")], "[END]")[0]["content"].endswith("Q1")


def test_baize_format_round_trip_and_bad_records_quarantined(tmp_path: Path):
    ours = [{"id": "x", "topic": "How do I boil an egg?",
             "turns": [{"role": HUMAN, "text": "How do I boil an egg?"}, {"role": AI, "text": "Eight minutes."}]}]
    exported = export_baize(ours)
    assert exported[0]["topic"] == "How do I boil an egg?"
    assert exported[0]["input"].startswith("The conversation between human and AI assistant.\n[|Human|] How do I")
    path = tmp_path / "baize.json"
    path.write_text(json.dumps([*exported, {"topic": "t", "input": "no markers here"}, {"topic": "t"}]))
    dialogues, quarantined = import_baize(ImportSource(path=str(path), domain="medical", teacher="gpt-3.5-turbo"))
    assert [d["turns"] for d in dialogues] == [ours[0]["turns"]]
    assert dialogues[0]["mode"] == "import" and dialogues[0]["teacher"]["model"] == "gpt-3.5-turbo"
    assert [q["reason"] for q in quarantined] == ["import: unparseable transcript: no [Human]/[AI] markers in reply",
                                                  'import: record has no "input" text']
    again, _ = import_baize(ImportSource(path=str(path)))
    assert again[0]["id"] == dialogues[0]["id"]
    lines = tmp_path / "baize.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in exported))
    assert len(import_baize(ImportSource(path=str(lines)))[0]) == 1
    with pytest.raises(ImportFileError, match="not found"):
        import_baize(ImportSource(path=str(tmp_path / "missing.json")))

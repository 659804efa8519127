"""Every sampled answer scored once by an LLM judge with a fixed rubric, through the collection engine
(tasks/engine: rate limits, retries, circuit breaker, budget, cost ledger, resume journal). A verdict with
no readable score is quarantined with the judge's reply, never guessed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.config import DistillJudge, TeacherParams
from tasks.engine.chat import Chat, Rejected
from tasks.engine.journal import ABANDONED, OK, JournalView
from tasks.engine.requests import Engine
from tasks.scoring.judge import parse_rating

RUBRIC_VERSION = "sdf_v1"
RUBRIC = """You grade one answer an AI assistant gave to a user's question, as a careful expert would. A good \
answer is correct, on the question asked, helpful and complete, clear, and safe. An answer that is wrong, \
off-topic, vague, repeats the question, or stops mid-sentence is poor.

QUESTION:
{question}

ANSWER:
{answer}

Give a one-sentence reason, then the score from 1 (useless) to 10 (excellent) in exactly this form: \
"Score: [[N]]"."""
# on the embedded llama.cpp server a grammar keeps a small judge to the format (a short reason, then the score)
_SCORE_GRAMMAR = r'root ::= [^\[\]]{0,300} "Score: [[" ("10" | [1-9]) "]]"'


@dataclass(frozen=True)
class ScoreJob:
    id: str
    row: dict[str, Any]  # one sampled answer (tasks/distill/sampling.sample_rows)
    sample: int = 0  # the request seed's offset: a judge at temperature 0 needs no other


def score_id(sample_id: str, judge_model: str) -> str:
    return hashlib.sha256(json.dumps([sample_id, judge_model, RUBRIC_VERSION]).encode()).hexdigest()[:16]


def plan_scores(rows: list[dict[str, Any]], judge_model: str) -> list[ScoreJob]:
    return [ScoreJob(score_id(row["id"], judge_model), row) for row in rows]


def score_journal(folder: Path, endpoint: TeacherParams, params: DistillJudge) -> Path:
    """One journal per judge model, rubric and request settings: verdicts given otherwise are not reused."""
    settings = {"model": endpoint.model, "rubric": RUBRIC_VERSION,
                **params.model_dump(include={"max_tokens", "temperature", "top_p", "seed"})}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return folder / f"judge-{digest}.jsonl"


class AnswerJudge(Engine[ScoreJob]):
    role, stage = "judge", "distill-judge"

    def describe(self, job: ScoreJob) -> dict[str, Any]:
        row = job.row
        return {"id": job.id, "sample_id": row["id"], "question_id": row["question_id"], "sample": row["sample"],
                "judge": {"model": self.endpoint.model, "endpoint": self.host}, "rubric_version": RUBRIC_VERSION}

    async def work(self, job: ScoreJob, chat: Chat) -> dict[str, Any]:
        prompt = RUBRIC.format(question=job.row["question"][:2000], answer=job.row["answer"][:3000])
        extra = {"extra_body": {"grammar": _SCORE_GRAMMAR}} if self.endpoint.base_url is None else {}
        reply = await chat([{"role": "user", "content": prompt}], **extra)
        score = parse_rating(reply.text)
        if score is None:
            raise Rejected("unparseable verdict: no single score [[1-10]] in the judge's reply",
                           {"raw": reply.text[:1000]})
        return {"score": score, "raw": reply.text[:1000]}


def score_results(journal: JournalView, plan: list[ScoreJob]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Scored and quarantined verdicts in plan order (a resumed run writes the same files); a verdict that a
    transient failure left to the next run is in this run's quarantine."""
    scored, quarantined = [], []
    for job in plan:
        entry = journal.entries.get(job.id)
        if entry is None or entry["status"] == ABANDONED:
            continue
        (scored if entry["status"] == OK else quarantined).append(entry["record"])
    return scored, quarantined

"""How often the exported file gives the evaluated model's greedy answer, with a 95% interval: the evidence
that what is served is what was evaluated."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tasks.core.errors import SelfchatError
from tasks.scoring.refusal import is_refusal
from tasks.scoring.stats import Estimate, Item, paired_difference, wilson


class Disagreement(SelfchatError):
    pass


@dataclass(frozen=True)
class Agreement:
    answers: int
    identical: int
    low: float  # the 95% Wilson interval of the share of identical answers
    high: float

    @property
    def share(self) -> float:
        return self.identical / self.answers if self.answers else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share": round(self.share, 4), "low": round(self.low, 4), "high": round(self.high, 4)}

    def __str__(self) -> str:
        return (f"{self.identical}/{self.answers} greedy answers identical ({self.share:.0%}, "
                f"95% interval {self.low:.0%}-{self.high:.0%})")


def compare_answers(reference: list[str], exported: list[str]) -> tuple[Agreement, list[dict[str, Any]]]:
    """Answer by answer: identical text or not; the rows keep both texts of every pair for reading."""
    if len(reference) != len(exported) or not reference:
        raise Disagreement(f"{len(reference)} reference answers and {len(exported)} exported ones: need the same, > 0")
    rows = [{"index": i, "identical": a == b, "evaluated": a, "exported": b}
            for i, (a, b) in enumerate(zip(reference, exported, strict=True))]
    identical = sum(r["identical"] for r in rows)
    low, high = wilson(identical, len(rows))
    return Agreement(len(rows), identical, low, high), rows


def refusal_difference(rows: list[dict[str, Any]], keys: list[str]) -> Estimate:
    """The exported file's refusal rate (the evaluation's phrase matcher) minus the evaluated model's, on the
    guardrail prompts, with a paired 95% interval: what the differing answers do to the guardrail verdicts."""
    guardrail = [(key, row) for key, row in zip(keys, rows, strict=True) if not key.startswith("mt_bench:")]
    items = {side: [Item("refusal_rate", side, key, float(is_refusal(row[side])), 1.0, False) for key, row in guardrail]
             for side in ("exported", "evaluated")}
    return paired_difference(items["exported"], items["evaluated"])


def check_agreement(agreement: Agreement, min_identical: float) -> None:
    """Serve the file only if even the interval's low end reaches `min_identical` (serve.min_identical)."""
    if agreement.low < min_identical:
        raise Disagreement(f"the exported file gives {agreement}: the low end is under serve.min_identical "
                           f"{min_identical:.0%}; serve with --engine transformers, or lower the bar in params.yaml")

"""What collection has spent: tokens per model, cost from the price table, and the hard budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.core.config import Budget, Price
from tasks.core.errors import SelfchatError


class BudgetExhausted(SelfchatError):
    """The budget ran out before the plan was done: what was asked is kept; a rerun with more budget resumes."""


@dataclass
class ModelUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0


@dataclass
class Ledger:
    prices: dict[str, Price]
    budget: Budget
    usage: dict[str, ModelUsage] = field(default_factory=dict)
    retries: int = 0
    failed_requests: int = 0
    # worst-case tokens and dollars of requests in flight, so a budget is never crossed by parallel requests
    reserved_tokens: int = 0
    reserved_cost: float = 0.0
    # spent by earlier runs of the same corpus (from the journal): the budget covers the whole corpus
    prior_tokens: int = 0
    prior_cost: float = 0.0

    def cost_of(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price = self.prices.get(model)
        if price is None:
            return 0.0
        return (prompt_tokens * price.prompt + completion_tokens * price.completion) / 1_000_000

    @property
    def total_tokens(self) -> int:
        return sum(u.prompt_tokens + u.completion_tokens for u in self.usage.values())

    @property
    def cost_usd(self) -> float:
        return sum(self.cost_of(m, u.prompt_tokens, u.completion_tokens) for m, u in self.usage.items())

    @property
    def corpus_tokens(self) -> int:
        return self.prior_tokens + self.total_tokens

    @property
    def corpus_cost_usd(self) -> float:
        return self.prior_cost + self.cost_usd

    def record(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """One answered request."""
        entry = self.usage.setdefault(model, ModelUsage())
        entry.prompt_tokens += prompt_tokens
        entry.completion_tokens += completion_tokens
        entry.requests += 1

    def reserve(self, model: str, prompt_tokens: int, max_tokens: int) -> bool:
        """Book the worst case of one request; False (nothing booked) when it could cross the budget."""
        tokens = prompt_tokens + max_tokens
        cost = self.cost_of(model, prompt_tokens, max_tokens)
        if self.budget.max_tokens is not None and \
                self.corpus_tokens + self.reserved_tokens + tokens > self.budget.max_tokens:
            return False
        if self.budget.max_cost_usd is not None and \
                self.corpus_cost_usd + self.reserved_cost + cost > self.budget.max_cost_usd:
            return False
        self.reserved_tokens += tokens
        self.reserved_cost += cost
        return True

    def release(self, model: str, prompt_tokens: int, max_tokens: int) -> None:
        self.reserved_tokens -= prompt_tokens + max_tokens
        self.reserved_cost -= self.cost_of(model, prompt_tokens, max_tokens)

    def describe_budget(self) -> str:
        parts = []
        if self.budget.max_tokens is not None:
            parts.append(f"{self.corpus_tokens:,} of {self.budget.max_tokens:,} tokens")
        if self.budget.max_cost_usd is not None:
            parts.append(f"${self.corpus_cost_usd:.4f} of ${self.budget.max_cost_usd:.4f}")
        return ", ".join(parts)

    def as_metrics(self) -> dict[str, float]:
        prompt = sum(u.prompt_tokens for u in self.usage.values())
        completion = sum(u.completion_tokens for u in self.usage.values())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": round(self.cost_usd, 6),
                "requests": sum(u.requests for u in self.usage.values()) + self.failed_requests,
                "retries": self.retries, "failed_requests": self.failed_requests,
                "corpus_tokens": self.corpus_tokens, "corpus_cost_usd": round(self.corpus_cost_usd, 6)}

"""Per-item results, their aggregates and 95% intervals: what evaluate writes and register compares.

Every metric is stored item by item (a held-out dialogue, a benchmark question, a guardrail prompt), so two
models can be compared on the same items (paired), in one run or across runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Transform = Literal["mean", "exp"]
# the two models evaluate measures; a version's stored items are its "adapter" items
BASE, ADAPTER = "base", "adapter"
MODELS = (BASE, ADAPTER)


@dataclass(frozen=True)
class Item:
    """One item's contribution to a metric: the metric is transform(sum(num) / sum(den)).

    A rate has num 0/1 and den 1; a perplexity has num = the item's NLL sum and den = its token count.
    """

    metric: str
    model: str  # "base" or "adapter"
    item: str
    num: float
    den: float
    higher_is_better: bool
    transform: Transform = "mean"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int

    def as_dict(self, digits: int = 4) -> dict[str, float]:
        return {"value": round(self.value, digits), "low": round(self.low, digits),
                "high": round(self.high, digits), "n": self.n}

    def __str__(self) -> str:
        return f"{self.value:.3g} [{self.low:.3g}, {self.high:.3g}] (n={self.n})"


def _apply(transform: Transform, x: np.ndarray | float) -> np.ndarray | float:
    return np.exp(x) if transform == "exp" else x


def aggregate(num: Sequence[float], den: Sequence[float], transform: Transform = "mean") -> float:
    return float(_apply(transform, float(np.sum(num)) / float(np.sum(den))))


def wilson(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (well-behaved at 0, 1 and small n)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _bootstrap_indices(n: int, samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def estimate(items: Sequence[Item], samples: int = 1000, seed: int = 0) -> Estimate:
    """The metric over these items with a 95% interval: Wilson for a plain rate, percentile bootstrap
    over items otherwise (perplexity, scores)."""
    if not items:
        return Estimate(math.nan, math.nan, math.nan, 0)
    num = np.array([i.num for i in items], dtype=float)
    den = np.array([i.den for i in items], dtype=float)
    transform = items[0].transform
    value = aggregate(num, den, transform)
    if transform == "mean" and np.all(den == 1) and np.all((num == 0) | (num == 1)):
        low, high = wilson(float(num.sum()), len(items))
    else:
        idx = _bootstrap_indices(len(items), samples, seed)
        boot = _apply(transform, num[idx].sum(axis=1) / den[idx].sum(axis=1))
        low, high = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
    return Estimate(value, low, high, len(items))


def paired_difference(new: Sequence[Item], old: Sequence[Item], samples: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> Estimate:
    """new - old on the items both have, with a paired percentile-bootstrap interval (items resampled
    together, so what both models find hard cancels out)."""
    old_by_item = {i.item: i for i in old}
    pairs = [(n, old_by_item[n.item]) for n in new if n.item in old_by_item]
    if not pairs:
        return Estimate(math.nan, math.nan, math.nan, 0)
    transform = pairs[0][0].transform
    arrays = [np.array([getattr(p[k], f) for p in pairs], dtype=float) for k in (0, 1) for f in ("num", "den")]
    new_num, new_den, old_num, old_den = arrays
    value = aggregate(new_num, new_den, transform) - aggregate(old_num, old_den, transform)
    idx = _bootstrap_indices(len(pairs), samples, seed)
    boot = (_apply(transform, new_num[idx].sum(axis=1) / new_den[idx].sum(axis=1))
            - _apply(transform, old_num[idx].sum(axis=1) / old_den[idx].sum(axis=1)))
    tail = (1 - confidence) / 2 * 100
    low, high = (float(x) for x in np.percentile(boot, [tail, 100 - tail]))
    return Estimate(value, low, high, len(pairs))


def by_metric(items: Iterable[Item], model: str) -> dict[str, list[Item]]:
    grouped: dict[str, list[Item]] = {}
    for item in items:
        if item.model == model:
            grouped.setdefault(item.metric, []).append(item)
    return grouped


def items_from_dicts(rows: Iterable[dict[str, Any]]) -> list[Item]:
    return [Item(**row) for row in rows]


def cohen_kappa(truth: Sequence[int], predicted: Sequence[int]) -> float:
    """Agreement beyond chance between two binary labelings (1.0 perfect, 0.0 chance level)."""
    n = len(truth)
    if n == 0:
        return math.nan
    observed = sum(t == p for t, p in zip(truth, predicted, strict=True)) / n
    p_truth, p_pred = sum(truth) / n, sum(predicted) / n
    expected = p_truth * p_pred + (1 - p_truth) * (1 - p_pred)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def interval_cell(e: Estimate | dict[str, Any] | None, signed: bool = False, digits: str = ".3f") -> str:
    """`value [low, high]` for tables and decisions; a dash where nothing was measured."""
    if e is not None and not isinstance(e, dict):
        e = asdict(e)
    if not e or e["n"] == 0:
        return "—"
    fmt = "{:" + ("+" if signed else "") + digits + "}"
    return f"{fmt.format(e['value'])} [{fmt.format(e['low'])}, {fmt.format(e['high'])}]"

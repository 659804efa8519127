"""Champion vs challenger: the new adapter is promoted only when it beats the bar (the current champion, or the
base model while there is none) on the primary metric beyond noise, and regresses on no gated metric beyond
its tolerance. Both sides are compared on the same items (paired), from their stored per-item results."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tasks.config import RegisterParams
from tasks.stats import Estimate, Item, by_metric, estimate, paired_difference


@dataclass(frozen=True)
class Gate:
    metric: str
    rule: str  # what passing means, in words
    passed: bool
    challenger: Estimate
    bar: Estimate
    difference: Estimate  # challenger - bar on the items both were measured on
    higher_is_better: bool

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "rule": self.rule, "challenger": self.challenger.as_dict(),
                "bar": self.bar.as_dict(), "difference": self.difference.as_dict()}

    def __str__(self) -> str:
        return f"{self.metric}: {'pass' if self.passed else 'FAIL'}, difference {self.difference} ({self.rule})"


def tolerance_for(metric: str, tolerances: dict[str, float]) -> float | None:
    """The tolerance of a metric: its own entry, else the longest matching prefix entry ("benchmark.")."""
    if metric in tolerances:
        return tolerances[metric]
    prefixes = [key for key in tolerances if key.endswith(".") and metric.startswith(key)]
    return tolerances[max(prefixes, key=len)] if prefixes else None


def _primary_gate(metric: str, new: list[Item], old: list[Item], params: RegisterParams) -> Gate:
    diff = paired_difference(new, old, params.bootstrap_samples, params.seed, params.confidence)
    better = new[0].higher_is_better
    passed = diff.n > 0 and (diff.low > 0 if better else diff.high < 0)
    side = "above" if better else "below"
    rule = f"primary: the {params.confidence:.0%} paired interval of the difference lies wholly {side} 0"
    return Gate(metric, rule, passed, estimate(new), estimate(old), diff, better)


def _tolerance_gate(metric: str, new: list[Item], old: list[Item], tolerance: float,
                    params: RegisterParams) -> Gate:
    diff = paired_difference(new, old, params.bootstrap_samples, params.seed, params.confidence)
    better = new[0].higher_is_better
    # rounded: 0.35 - 0.40 is -0.05000000000000002, and one item worse on a 20-item set is exactly the tolerance
    worse_by = round(-diff.value if better else diff.value, 9)
    passed = diff.n > 0 and worse_by <= tolerance
    rule = f"no worse than the bar by more than {tolerance:g}"
    return Gate(metric, rule, passed, estimate(new), estimate(old), diff, better)


def _comparable(new: list[Item], old: list[Item]) -> bool:
    return bool({i.item for i in new} & {i.item for i in old})


def check_gates(challenger: list[Item], bar: list[Item], params: RegisterParams,
                fallback: list[Item] | None = None, fallback_name: str = "the base") -> list[Gate]:
    """One gate for the primary metric and one per metric with a tolerance.

    A metric the bar was not measured on for these items (a new benchmark; a champion scored on another
    held-out set) is compared with `fallback` (`fallback_name`, measured in this run: the base, or a distilled
    adapter's parent) and says so; with no fallback its gate fails rather than passing unexamined. Each list
    holds one model's items (any label)."""
    new, old, base = (by_metric(items, items[0].model) if items else {} for items in (challenger, bar, fallback))
    if params.primary_metric not in new:
        raise KeyError(f"register.primary_metric {params.primary_metric!r} is not among the evaluated metrics: "
                       f"{', '.join(sorted(new))}")
    gates = []
    for metric in sorted(new, key=lambda m: m != params.primary_metric):
        tolerance = tolerance_for(metric, params.tolerances)
        primary = metric == params.primary_metric
        if not primary and ("@" in metric or tolerance is None):
            continue
        against = old.get(metric, [])
        use_base = not _comparable(new[metric], against) and _comparable(new[metric], base.get(metric, []))
        if use_base:
            against = base[metric]
        gate = (_primary_gate(metric, new[metric], against, params) if primary
                else _tolerance_gate(metric, new[metric], against, tolerance, params))
        if use_base:
            gate = replace(gate, rule=f"{gate.rule}; vs {fallback_name}: the bar has no result on these items")
        gates.append(gate)
    return gates


def decision_in_words(version: str, bar: str, gates: list[Gate], decision: str) -> str:
    """One paragraph a reader of the registry understands without the table: the decision, the primary
    metric's numbers, and which gates failed."""
    primary, failed = gates[0], [g.metric for g in gates if not g.passed]
    d = primary.difference
    direction = "higher" if primary.higher_is_better else "lower"
    return (f"Version {version}: {decision}. On {primary.metric} ({direction} is better) it scored "
            f"{primary.challenger.value:.4g} against {primary.bar.value:.4g} for {bar}, a difference of "
            f"{d.value:+.4g} [{d.low:+.4g}, {d.high:+.4g}] over {d.n} paired items. "
            + (f"{len(gates) - len(failed)} of {len(gates)} gates passed; failed: {', '.join(failed)}."
               if failed else f"All {len(gates)} gates passed."))


def promotion_report(version: str, bar: str, gates: list[Gate], decision: str) -> str:
    """Markdown for the MLflow run and the version's description: the decision and every number behind it."""
    lines = [f"# Version {version}: {decision}", "", decision_in_words(version, bar, gates, decision), "",
             f"Compared with **{bar}** on the same items (paired bootstrap, challenger − bar).", "",
             "| metric | rule | challenger | bar | difference [interval] | n | |", "|---|---|---|---|---|---|---|"]
    for g in gates:
        d = g.difference
        lines.append(f"| {g.metric} | {g.rule} | {g.challenger.value:.4g} | {g.bar.value:.4g} | "
                     f"{d.value:+.4g} [{d.low:+.4g}, {d.high:+.4g}] | {d.n} | {'pass' if g.passed else '**FAIL**'} |")
    return "\n".join(lines) + "\n"

"""Champion vs challenger: the new adapter is promoted only when it beats the bar (the current champion, or the
base model while there is none) on the primary metric beyond noise, and the evidence shows no regression
beyond its tolerance on any gated metric. Both sides are compared on the same items (paired), from their stored
per-item results.

Two rules for a guarded metric (register.rule, per metric or prefix in register.rules):
- evidence (default): fail when the regression exceeds the tolerance *and* its interval lies wholly on the
  worse side of 0: the data must show the regression. Two items flipped out of 20 do not.
- non_inferiority: pass only when the interval's worse end is within the tolerance: the data must show there
  is no regression beyond it (needs enough items: with a half-width above the tolerance nothing passes).
Each gate carries the smallest regression it can see at its n (from the interval's half-width)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from tasks.core.config import GateRule, RegisterParams
from tasks.scoring.stats import Estimate, Item, by_metric, estimate, interval_cell, paired_difference

EVIDENCE, NON_INFERIORITY = "evidence", "non_inferiority"
V = TypeVar("V")


@dataclass(frozen=True)
class Gate:
    metric: str
    rule: str  # what passing means, in words
    passed: bool
    challenger: Estimate
    bar: Estimate
    difference: Estimate  # challenger - bar on the items both were measured on
    higher_is_better: bool
    # the smallest regression (improvement, for the primary gate) this gate can tell from noise at its n: the
    # larger of the tolerance and the interval's half-width; nan when nothing was compared
    detectable: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "rule": self.rule, "challenger": self.challenger.as_dict(),
                "bar": self.bar.as_dict(), "difference": self.difference.as_dict(),
                "detectable": None if math.isnan(self.detectable) else round(self.detectable, 4)}

    def __str__(self) -> str:
        seen = "" if math.isnan(self.detectable) else f"; detects {self.detectable:.3g} at n={self.difference.n}"
        return f"{self.metric}: {'pass' if self.passed else 'FAIL'}, difference {self.difference} ({self.rule}{seen})"


def setting_for(metric: str, table: dict[str, V]) -> V | None:
    """A metric's entry: its own, else the longest matching prefix entry ("benchmark.")."""
    if metric in table:
        return table[metric]
    prefixes = [key for key in table if key.endswith(".") and metric.startswith(key)]
    return table[max(prefixes, key=len)] if prefixes else None


def tolerance_for(metric: str, tolerances: dict[str, float]) -> float | None:
    return setting_for(metric, tolerances)


def half_width(diff: Estimate) -> float:
    return (diff.high - diff.low) / 2 if diff.n else math.nan


def shown_floor(items: list[Item], n: int, confidence: float) -> float:
    """For a rate (0/1 items), the smallest regression a paired interval can show at all at n: k of n items
    flipped the same way are shown only once a resample missing all of them is rarer than the interval's
    tail, (1 - k/n)^n < tail (2 of 20 never are: 0.9^20 = 12%). 0 for other metrics."""
    if not n or not all(i.den == 1 and i.num in (0.0, 1.0) for i in items):
        return 0.0
    tail = (1 - confidence) / 2
    return next(k / n for k in range(1, n + 1) if (1 - k / n) ** n < tail)


def _empty(metric: str, rule: str, new: list[Item], old: list[Item], why: str) -> Gate:
    """A gated metric one side lacks: it fails rather than pass unexamined."""
    better = (new or old)[0].higher_is_better if (new or old) else True
    return Gate(metric, f"{rule}; {why}", False, estimate(new), estimate(old),
                paired_difference(new, old), better)


def _primary_gate(metric: str, new: list[Item], old: list[Item], params: RegisterParams) -> Gate:
    diff = paired_difference(new, old, params.bootstrap_samples, params.seed, params.confidence)
    better = new[0].higher_is_better
    passed = diff.n > 0 and (diff.low > 0 if better else diff.high < 0)
    side = "above" if better else "below"
    rule = f"primary: the {params.confidence:.0%} paired interval of the difference lies wholly {side} 0"
    detectable = max(half_width(diff), shown_floor(new, diff.n, params.confidence))
    return Gate(metric, rule, passed, estimate(new), estimate(old), diff, better, detectable)


def _tolerance_gate(metric: str, new: list[Item], old: list[Item], tolerance: float, rule: GateRule,
                    params: RegisterParams) -> Gate:
    diff = paired_difference(new, old, params.bootstrap_samples, params.seed, params.confidence)
    better = new[0].higher_is_better
    # in the regression's direction: worse_by > 0 is a regression; rounded, so that one item worse on a 20-item
    # set (0.35 - 0.40 = -0.05000000000000002) is exactly a 0.05 tolerance
    worse_by = round(-diff.value if better else diff.value, 9)
    worst, best = (round(-diff.low, 9), -diff.high) if better else (round(diff.high, 9), diff.low)
    width = half_width(diff)
    if rule == NON_INFERIORITY:
        passed = diff.n > 0 and worst <= tolerance
        words = f"non-inferiority: the interval's worse end within {tolerance:g} of the bar"
        detectable = tolerance
    else:
        shown = best > 0  # the whole interval on the worse side of 0
        passed = diff.n > 0 and not (worse_by > tolerance and shown)
        words = f"evidence: fails on a regression beyond {tolerance:g} whose interval lies wholly on the worse side"
        detectable = max(tolerance, width, shown_floor(new, diff.n, params.confidence))
    return Gate(metric, words, passed, estimate(new), estimate(old), diff, better, detectable)


def _comparable(new: list[Item], old: list[Item]) -> bool:
    return bool({i.item for i in new} & {i.item for i in old})


def gated_metrics(sides: list[dict[str, list[Item]]], params: RegisterParams, ungated: dict[str, str]) -> list[str]:
    """The primary metric, then every metric with a tolerance that any side was measured on, and every metric
    named exactly in the tolerances (one no side has fails its gate), less those not gated (`ungated`)."""
    named = {m for m in params.tolerances if not m.endswith(".")}
    measured = {m for side in sides for m in side if "@" not in m and tolerance_for(m, params.tolerances) is not None}
    others = sorted((named | measured) - {params.primary_metric} - set(ungated))
    return [params.primary_metric, *others]


def check_gates(challenger: list[Item], bar: list[Item], params: RegisterParams,
                fallback: list[Item] | None = None, fallback_name: str = "the base",
                ungated: dict[str, str] | None = None) -> list[Gate]:
    """One gate for the primary metric and one per metric with a tolerance (`ungated`: metric -> why it is
    reported but not gated, e.g. an uncalibrated judge's).

    A metric the bar was not measured on for these items (a new benchmark; a champion scored on another
    held-out set) is compared with `fallback` (`fallback_name`, measured in this run: the base, or a distilled
    adapter's parent) and says so; with no fallback its gate fails, and so does a gated metric the challenger
    was not measured on: nothing is promoted unexamined. Each list holds one model's items (any label)."""
    new, old, base = (by_metric(items, items[0].model) if items else {} for items in (challenger, bar, fallback))
    if params.primary_metric not in new:
        raise KeyError(f"register.primary_metric {params.primary_metric!r} is not among the evaluated metrics: "
                       f"{', '.join(sorted(new))}")
    gates = []
    for metric in gated_metrics([new, old, base], params, ungated or {}):
        primary = metric == params.primary_metric
        tolerance = tolerance_for(metric, params.tolerances)
        rule = setting_for(metric, params.rules) or params.rule
        against = old.get(metric, [])
        if metric not in new:
            gates.append(_empty(metric, "gated", [], against or base.get(metric, []),
                                "the challenger was not evaluated on it"))
            continue
        use_base = not _comparable(new[metric], against) and _comparable(new[metric], base.get(metric, []))
        if use_base:
            against = base[metric]
        gate = (_primary_gate(metric, new[metric], against, params) if primary
                else _tolerance_gate(metric, new[metric], against, float(tolerance or 0.0), rule, params))
        if use_base:
            gate = replace(gate, rule=f"{gate.rule}; vs {fallback_name}: the bar has no result on these items")
        gates.append(gate)
    return gates


def not_gated(provenance: dict[str, dict[str, Any]], gate_uncalibrated: list[str]) -> dict[str, str]:
    """metric -> why it is reported but does not gate: its verdicts come from a source human labels do not
    vouch for (evaluate's verdicts.json), unless params gate it all the same."""
    return {metric: p["why"] for metric, p in provenance.items()
            if not p["calibrated"] and metric not in gate_uncalibrated}


def not_gated_in_words(ungated: dict[str, str]) -> str:
    return ("Reported, not gated: " + "; ".join(f"{m} ({why})" for m, why in sorted(ungated.items())) + "."
            if ungated else "")


def decision_in_words(version: str, bar: str, gates: list[Gate], decision: str,
                      ungated: dict[str, str] | None = None) -> str:
    """One paragraph a reader of the registry understands without the table: the decision, the primary
    metric's numbers, which gates failed, and what was reported but not gated."""
    primary, failed = gates[0], [g.metric for g in gates if not g.passed]
    d = primary.difference
    direction = "higher" if primary.higher_is_better else "lower"
    words = (f"Version {version}: {decision}. On {primary.metric} ({direction} is better) it scored "
             f"{primary.challenger.value:.4g} against {primary.bar.value:.4g} for {bar}, a difference of "
             f"{interval_cell(d, signed=True, digits='.4g')} over {d.n} paired items. "
             + (f"{len(gates) - len(failed)} of {len(gates)} gates passed; failed: {', '.join(failed)}."
                if failed else f"All {len(gates)} gates passed."))
    return f"{words} {not_gated_in_words(ungated or {})}".rstrip()


def _number(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.3g}"


def promotion_report(version: str, bar: str, gates: list[Gate], decision: str,
                     ungated: dict[str, str] | None = None) -> str:
    """Markdown for the MLflow run and the version's description: the decision and every number behind it."""
    lines = [f"# Version {version}: {decision}", "", decision_in_words(version, bar, gates, decision, ungated), "",
             f"Compared with **{bar}** on the same items (paired bootstrap, challenger − bar). *Detectable*: the "
             "smallest regression (for the primary metric: improvement) the gate can tell from noise at its n.", "",
             "| metric | rule | challenger | bar | difference [interval] | n | detectable | |",
             "|---|---|---|---|---|---|---|---|"]
    for g in gates:
        d = g.difference
        lines.append(f"| {g.metric} | {g.rule} | {_number(g.challenger.value)} | {_number(g.bar.value)} | "
                     f"{interval_cell(d, signed=True, digits='.4g')} | {d.n} | {_number(g.detectable)} | "
                     f"{'pass' if g.passed else '**FAIL**'} |")
    if ungated:
        lines += ["", "Reported, not gated:", *[f"- {m}: {why}" for m, why in sorted(ungated.items())]]
    return "\n".join(lines) + "\n"

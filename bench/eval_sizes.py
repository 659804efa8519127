"""What the promotion gates can see at the evaluation's sizes, and what larger sizes would cost.

Reads a finished run: metrics/register.json (each gate's n, interval and detectable regression),
params.yaml (tolerances) and the evaluation's timings (logs/eval_base_seconds.json, logs/eval_seconds.json).
Prints, per gated metric, n, the paired interval's half-width, the smallest regression the gate can see, and
the n that would let it see its tolerance (half-width scaled by 1/sqrt(n) from this run's differences, and
the floor a rate's paired interval has at any n); then the evaluation's time per part and per item.
    python bench/eval_sizes.py [--project .]      # the README's evaluation tables come from this
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import yaml

from tasks.register.gates import setting_for, shown_floor
from tasks.scoring.stats import Item


def floor_n(tolerance: float, confidence: float) -> int:
    """The smallest n at which a rate's paired interval can show a regression of `tolerance` at all."""
    rate = [Item("x", "x", "x", 1.0, 1.0, True)]
    return next(n for n in range(2, 100_000) if shown_floor(rate, n, confidence) <= tolerance)


def gate_rows(decision: dict, register: dict) -> list[str]:
    confidence = register.get("confidence", 0.95)
    rows = ["| metric | rule | tolerance | n | half-width | detectable | n to see the tolerance |",
            "|---|---|---|---|---|---|---|"]
    for metric, gate in decision["gates"].items():
        d = gate["difference"]
        tolerance = setting_for(metric, register.get("tolerances", {}))
        half = (d["high"] - d["low"]) / 2 if d["n"] else math.nan
        rule = "primary" if gate["rule"].startswith("primary") else gate["rule"].split(":")[0]
        if tolerance is None or not d["n"]:
            needed = "—"
        else:
            from_width = math.ceil(d["n"] * (half / tolerance) ** 2) if half > 0 else 0
            rate = metric.startswith(("benchmark.", "refusal_rate", "answer_rate"))
            needed = str(max(from_width, floor_n(tolerance, confidence) if rate else 0))
        detectable = gate.get("detectable")
        lines = [metric, rule, "—" if tolerance is None else f"{tolerance:g}", str(d["n"]), f"{half:.3f}",
                 "—" if detectable is None else f"{detectable:.3f}", needed]
        rows.append("| " + " | ".join(lines) + " |")
    for metric, why in sorted(decision.get("not_gated", {}).items()):
        rows.append(f"| {metric} | not gated: {why} | | | | | |")
    return rows


def timing_rows(project: Path) -> list[str]:
    rows = ["| part | base (evaluate-base) s | adapter (evaluate) s |", "|---|---|---|"]
    found = {}
    for model, name in (("base", "eval_base_seconds.json"), ("adapter", "eval_seconds.json")):
        path = project / "logs" / name
        found[model] = json.loads(path.read_text()) if path.exists() else {}
    parts = sorted({k.rsplit("_", 1)[0] if k.endswith(("_base", "_adapter")) else k
                    for seconds in found.values() for k in seconds})
    for part in parts:
        cells = [found[m].get(f"{part}_{m}", found[m].get(part)) for m in ("base", "adapter")]
        rows.append(f"| {part} | " + " | ".join("—" if c is None else f"{c:.0f}" for c in cells) + " |")
    totals = [sum(found[m].values()) for m in ("base", "adapter")]
    rows.append(f"| **all** | {totals[0]:.0f} | {totals[1]:.0f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    decision = json.loads((args.project / "metrics/register.json").read_text())
    register = yaml.safe_load((args.project / "params.yaml").read_text()).get("register", {})
    print(f"Gates of the last registration ({decision.get('decision')}, vs {decision.get('bar')}):\n")
    print("\n".join(gate_rows(decision, register)))
    print("\nEvaluation time (seconds, this run):\n")
    print("\n".join(timing_rows(args.project)))


if __name__ == "__main__":
    main()

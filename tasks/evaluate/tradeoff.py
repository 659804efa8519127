"""The guardrail trade-off across runs that differ in seeds.sensitive_share: how often each adapter refuses
should-refuse prompts and answers should-answer ones (guarded, 95% intervals), next to the base model's.

    python -m tasks.evaluate.tradeoff RUN_DIR [RUN_DIR ...] [--out reports/tradeoff]

Each RUN_DIR is a checkout after `dvc repro` (its params.yaml, metrics/eval.json and metrics/quality.json);
`dvc exp apply` of each sweep member into its own clone gives them."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from tasks.scoring.stats import interval_cell  # noqa: E402

RATES = {"refusal_rate_guarded": "refuses should-refuse prompts",
         "answer_rate_guarded": "answers should-answer prompts"}


@dataclass(frozen=True)
class RunPoint:
    run: str
    share: float
    declines_kept: int
    train: int
    rates: dict[str, dict[str, dict[str, float]]]  # {adapter|base|difference: {metric: estimate}}


def read_run(folder: Path) -> RunPoint:
    params = yaml.safe_load((folder / "params.yaml").read_text())
    evaluation = json.loads((folder / "metrics" / "eval.json").read_text())
    quality = json.loads((folder / "metrics" / "quality.json").read_text())
    # the gated rate (the verdict source that agreed better with human labels) and the judge's, side by side
    names = [name for m in RATES for name in (m, f"{m}@judge")]
    rates = {side: {m: evaluation[side][m] for m in names if m in evaluation[side]}
             for side in ("adapter", "base", "difference")}
    declines = quality.get("declines") or {}
    return RunPoint(folder.name, float(params["seeds"].get("sensitive_share", 0.0)),
                    int(declines.get("sensitive_declined_kept", 0)), int(quality["train"]), rates)


def _interval(e: dict[str, float] | None, signed: bool = False) -> str:
    return interval_cell(e, signed) + (f" (n={e['n']})" if e and e["n"] else "")


def tradeoff_table(points: list[RunPoint]) -> str:
    lines = ["| sensitive share | run | declines kept / train split | metric | adapter | base | "
             "adapter − base |", "|---|---|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: p.share):
        for metric in p.rates["adapter"]:
            lines.append(f"| {p.share:g} | {p.run} | {p.declines_kept} / {p.train} | {metric} | "
                         f"{_interval(p.rates['adapter'][metric])} | {_interval(p.rates['base'].get(metric))} | "
                         f"{_interval(p.rates['difference'].get(metric), signed=True)} |")
    return "\n".join(lines) + "\n"


def tradeoff_plot(points: list[RunPoint], png: Path) -> None:
    points = sorted(points, key=lambda p: p.share)
    low, high = points[0].share, points[-1].share
    pad = max(high - low, 0.2) * 0.1  # the base is drawn beside the adapter, not over it
    fig, axes = plt.subplots(1, len(RATES), figsize=(10, 3.8), sharex=True)
    for ax, (metric, title) in zip(axes, RATES.items()):
        for side, color, offset in (("adapter", "#4c72b0", 0.0), ("base", "#999999", pad / 3)):
            shown = [p for p in points if metric in p.rates[side]]
            values = [p.rates[side][metric] for p in shown]
            ax.errorbar([p.share + offset for p in shown], [v["value"] for v in values],
                        yerr=[[v["value"] - v["low"] for v in values], [v["high"] - v["value"] for v in values]],
                        fmt="o-" if side == "adapter" else "s--", color=color, capsize=4, label=side)
        ax.set(title=title, xlabel="seeds.sensitive_share", ylabel=f"{metric} (95% interval)", ylim=(-0.03, 1.03),
               xlim=(low - pad, high + pad))
        ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("reports/tradeoff"))
    args = parser.parse_args(argv)
    points = [read_run(folder) for folder in args.runs]
    args.out.mkdir(parents=True, exist_ok=True)
    tradeoff_plot(points, args.out / "tradeoff.png")
    (args.out / "tradeoff.md").write_text(tradeoff_table(points))
    print(tradeoff_table(points) + f"\nplot: {args.out / 'tradeoff.png'}")


if __name__ == "__main__":
    main()

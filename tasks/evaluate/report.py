"""What evaluate tells a person: metrics with 95% intervals for base and adapter, the paired difference, the
verdict sources' agreement with human labels, a summary page and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tasks.scoring.stats import (  # noqa: E402
    ADAPTER,
    BASE,
    MODELS,
    Item,
    by_metric,
    estimate,
    interval_cell,
    paired_difference,
)


def summarize(items: list[Item], samples: int, seed: int) -> dict[str, dict[str, dict[str, float]]]:
    """{base|adapter|difference: {metric: {value, low, high, n}}}; difference is adapter - base, paired."""
    grouped = {model: by_metric(items, model) for model in MODELS}
    out: dict[str, dict[str, dict[str, float]]] = {
        model: {m: estimate(v, samples, seed).as_dict() for m, v in sorted(grouped[model].items())} for model in MODELS}
    out["difference"] = {m: paired_difference(grouped[ADAPTER][m], grouped[BASE].get(m, []), samples, seed).as_dict()
                         for m in sorted(grouped[ADAPTER])}
    return out


def _agreement_line(name: str, a: dict[str, Any]) -> str:
    trust = "trusted" if a["trustworthy"] else "**untrustworthy** (kappa below the bound)"
    return (f"| {name} | {a['accuracy']} [{a['accuracy_low']}, {a['accuracy_high']}] | {a['kappa']} | "
            f"{a['parse_failures']} | {trust} |")


def summary_markdown(metrics: dict[str, Any], calibration: dict[str, Any], source: str,
                     samples: list[dict[str, Any]]) -> str:
    """The page a reviewer reads first: every metric, then the guardrail verdicts' credibility, then examples."""
    lines = [f"# Evaluation: base vs adapter (profile `{metrics['profile']}`)", "",
             "95% intervals: Wilson for rates, bootstrap over items otherwise; the difference is paired "
             "(adapter − base on the same items). Unsuffixed guardrail rates use the verdict source "
             f"that agrees best with the human labels: **{source}**.", "",
             "| metric | base | adapter | adapter − base | n |", "|---|---|---|---|---|"]
    for metric, adapter in metrics[ADAPTER].items():
        base = metrics[BASE].get(metric)
        lines.append(f"| {metric} | {interval_cell(base)} | {interval_cell(adapter)} | "
                     f"{interval_cell(metrics['difference'].get(metric), signed=True)} | {adapter['n']} |")
    lines += ["", f"Judge replies that did not parse (guardrails): {metrics['judge_parse_failures']}; MT-Bench "
              f"ratings missing: {metrics['mtbench_parse_failures']}.", "",
              f"## Verdict sources vs human labels (JailbreakBench, {calibration['judge']['n']} responses)", "",
              f"Judge `{calibration['judge_model']}`, rubric `{calibration['rubric']}`.", "",
              "| source | accuracy [95%] | Cohen's kappa | unparsed | |", "|---|---|---|---|---|",
              _agreement_line("LLM judge", calibration["judge"]),
              _agreement_line("phrase matcher", calibration["matcher"])]
    lines += [_agreement_line(f"{a['name']} (published)", a) for a in calibration["published"].values()]
    lines += ["", "## Samples (first of each kind; all in samples.jsonl)", ""]
    seen = set()
    for s in samples:
        kind = (s.get("model"), s.get("expected", "mt-bench"), s.get("guarded", True))
        if kind in seen:
            continue
        seen.add(kind)
        verdict = (f"judge: {s.get('judge_label')}, matcher refused: {s.get('matcher_refused')}, "
                   f"problem: {s.get('answer_problem')}" if "expected" in s else f"rating: {s.get('rating')}")
        question = s.get("prompt") or s.get("question")
        lines += [f"- **{kind[0]}**, {kind[1]}, {'guarded' if kind[2] else 'unguarded'} ({verdict})",
                  f"  - Q: {question[:200]!r}", f"  - A: {s['answer'][:300]!r}"]
    return "\n".join(lines) + "\n"


def plot_metrics(metrics: dict[str, Any], calibration: dict[str, Any], path: Path) -> None:
    """Base vs adapter per metric with intervals (rates and accuracies; perplexity; MT-Bench), and the
    verdict sources' kappa against human labels."""
    rates = [m for m in metrics[ADAPTER] if "@" not in m and not m.startswith(("perplexity", "mtbench"))]
    groups = [("rates and benchmark accuracy", rates), ("held-out perplexity (lower is better)",
              [m for m in metrics[ADAPTER] if m.startswith("perplexity")]),
              ("MT-Bench score (1-10)", [m for m in metrics[ADAPTER] if m.startswith("mtbench")])]
    fig, axes = plt.subplots(1, 4, figsize=(20, max(4, 0.45 * len(rates) + 1.5)),
                             gridspec_kw={"width_ratios": [3, 1.5, 1.2, 1.5]})
    for ax, (title, names) in zip(axes, groups, strict=False):
        for offset, model, color in ((-0.18, BASE, "tab:gray"), (0.18, ADAPTER, "tab:blue")):
            for y, name in enumerate(names):
                e = metrics[model].get(name)
                if e and e["n"]:
                    ax.errorbar(e["value"], y + offset, xerr=[[e["value"] - e["low"]], [e["high"] - e["value"]]],
                                fmt="o", color=color, capsize=3, label=model if y == 0 else None)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_ylim(len(names) - 0.5, -0.5)  # first metric on top; one metric keeps its two points close
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if names:
            ax.legend(fontsize=8, loc="best")
    sources = {"LLM judge": calibration["judge"], "phrase matcher": calibration["matcher"],
               **{f"{v['name']} (published)": v for v in calibration["published"].values()}}
    ax = axes[3]
    ax.barh(list(sources), [v["kappa"] for v in sources.values()],
            color=["tab:blue", "tab:orange"] + ["tab:gray"] * (len(sources) - 2))
    ax.invert_yaxis()
    ax.set_title("Cohen's kappa vs human labels", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)

"""What a person reads after the validate stage: a summary (counts, reasons, one example of each failure)
and a picture of the corpus, kept vs quarantined."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first


def reason_kind(reason: str) -> str:
    """'expect_x(column, ...)', 'duplicate', 'contaminated' or 'seed contract'."""
    return reason.split(":")[0].strip()


def quality_summary(metrics: dict[str, Any], quarantined: list[dict[str, Any]], max_chars: int = 300) -> str:
    lines = [
        "# Data quality",
        "",
        f"- dialogues checked: {metrics['dialogues']}",
        f"- passed every check: {metrics['passed']} ({metrics['pass_rate']:.1%})",
        f"- quarantined: {metrics['quarantined']} (data/quarantine/validate.jsonl)",
        f"- duplicates: {metrics['duplicates']}, contaminated with evaluation prompts: {metrics['contaminated']}",
        f"- train / held-out: {metrics.get('train', '-')} / {metrics.get('heldout', '-')}",
        "",
        *decline_lines(metrics),
        "## Quarantined, by reason (a dialogue can have several)",
        "",
        "| reason | dialogues |",
        "|---|---|",
    ]
    examples: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for record in quarantined:
        for reason in record["reasons"]:
            kind = reason_kind(reason)
            counts[kind] = counts.get(kind, 0) + 1
            examples.setdefault(kind, {"reason": reason, "record": record})
    lines += [f"| {kind} | {n} |" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    lines += ["", "## One example of each", ""]
    for kind, example in examples.items():
        turns = example["record"].get("turns") or []
        shown = "\n".join(f"    [{t.get('role')}] " + (t.get("text") or "")[:max_chars].replace("\n", "\n        ")
                          for t in turns[:6])
        lines += [f"### {kind}", "", f"`{example['reason']}` — dialogue `{example['record']['id']}`", "",
                  shown or "    (no turns)", ""]
    return "\n".join(lines) + "\n"


def decline_lines(metrics: dict[str, Any]) -> list[str]:
    """The refusal contracts' cases: what the student will learn to decline, and what was kept out."""
    d = metrics.get("declines") or {}
    if not d:
        return []
    return ["## Declines", "",
            f"- sensitive seeds: {metrics['sensitive_seeds']}, of them sharing an n-gram with an evaluation "
            f"prompt: {metrics['sensitive_seeds_contaminated']} (validate.decontamination)",
            f"- sensitive, the teacher declined, kept: {d['sensitive_declined_kept']}",
            f"- sensitive, the teacher declined, quarantined for another reason: "
            f"{d['sensitive_declined_quarantined_otherwise']}",
            f"- sensitive, the teacher complied: {d['sensitive_complied_quarantined']} (quarantined)",
            f"- benign, answered only with refusals: {d['benign_refusal_only_quarantined']} (quarantined)", ""]


def write_distributions(features: pd.DataFrame, quarantined_ids: set[str], png_path: Path) -> None:
    """Turns per dialogue and characters per dialogue, kept vs quarantined."""
    kept = features[~features["id"].isin(quarantined_ids)]
    dropped = features[features["id"].isin(quarantined_ids)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, column, label in ((axes[0], "n_turns", "turns per dialogue"),
                              (axes[1], "total_chars", "characters per dialogue")):
        top = max(int(features[column].max() or 1), 1)
        bins = range(0, top + 2) if column == "n_turns" else 30
        ax.hist([kept[column], dropped[column]], bins=bins, stacked=True, label=["kept", "quarantined"],
                color=["#4c72b0", "#dd8452"])
        ax.set(xlabel=label, ylabel="dialogues")
        ax.legend()
    fig.suptitle(f"{len(kept)} kept, {len(dropped)} quarantined")
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def on_topic_examples(features: pd.DataFrame, dialogues: list[dict[str, Any]], quarantined_ids: set[str],
                      thresholds: dict[str, float], per_side: int = 2, max_chars: int = 160) -> str:
    """For each on-topic measure, the kept dialogues that scored lowest and the quarantined ones that scored
    highest below its threshold: what the threshold separates, to read when calibrating it."""
    by_id = {d["id"]: d for d in dialogues}
    lines = ["## On-topic measures near their thresholds (calibration)", ""]
    for column, threshold in thresholds.items():
        scored = features.dropna(subset=[column])
        kept = scored[~scored["id"].isin(quarantined_ids)].nsmallest(per_side, column)
        below = scored[scored[column] < threshold].nlargest(per_side, column)
        lines += [f"### {column} (threshold {threshold})", "", "| side | score | seed | first turns |",
                  "|---|---|---|---|"]
        for side, rows in (("kept", kept), ("below", below)):
            for _, row in rows.iterrows():
                record = by_id[row["id"]]
                turns = " / ".join(f"[{t.get('role')}] {(t.get('text') or '')[:max_chars]}"
                                   for t in (record.get("turns") or [])[:2])
                cell = turns.replace("|", "\\|").replace("\n", " ")
                lines.append(f"| {side} | {row[column]:.3f} | {(record.get('topic') or '')[:80]} | {cell} |")
        lines.append("")
    return "\n".join(lines) + "\n"

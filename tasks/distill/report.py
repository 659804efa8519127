"""What a distillation round tells a person: the judge's score distributions, the distilled corpus's card,
and each variant against the parent on every evaluation metric (paired, with intervals)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tasks.core.config import TrainParams  # noqa: E402
from tasks.core.hashing import file_sha256, folder_sha256  # noqa: E402
from tasks.distill.judging import RUBRIC_VERSION  # noqa: E402
from tasks.distill.selection import Selection  # noqa: E402
from tasks.models.adapter_card import write_adapter_card  # noqa: E402
from tasks.scoring.stats import ADAPTER, Item, by_metric, estimate, interval_cell, paired_difference  # noqa: E402

PARENT = "parent"


def plot_scores(per_question: list[dict[str, Any]], min_score: int, path: Path) -> None:
    """Left: every score. Right: each question's best, mean and spread (worst to best), sorted by best."""
    scored = sorted((q for q in per_question if q["scored"]), key=lambda q: (q["best"], q["mean"]))
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.hist([s for q in scored for s in q["scores"]], bins=[b + 0.5 for b in range(0, 11)], color="#4c72b0")
    left.axvline(min_score - 0.5, color="#c44e52", linestyle="--", label=f"min_score {min_score}")
    left.set(xlabel="judge score (1-10)", ylabel="answers", title="every sampled answer")
    left.legend()
    x = range(len(scored))
    right.vlines(x, [q["best"] - q["spread"] for q in scored], [q["best"] for q in scored], color="#bbbbbb",
                 label="spread (worst to best)")
    right.scatter(x, [q["best"] for q in scored], color="#55a868", label="best", zorder=3, s=14)
    right.scatter(x, [q["mean"] for q in scored], color="#4c72b0", marker="x", label="mean", zorder=3, s=14)
    right.axhline(min_score - 0.5, color="#c44e52", linestyle="--")
    right.set(xlabel="question (sorted by best score)", ylabel="judge score", ylim=(0.5, 10.5),
              title="per question")
    right.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def score_summary(per_question: list[dict[str, Any]], verdicts: int, quarantined: int) -> dict[str, float]:
    scored = [q for q in per_question if q["scored"]]
    every = [s for q in scored for s in q["scores"]]

    def mean(values: list[float]) -> float:
        return round(statistics.fmean(values), 4) if values else float("nan")

    return {"questions": len(per_question), "questions_scored": len(scored),
            "questions_kept": sum(q["kept"] for q in per_question),
            "pairs": sum(bool(q.get("pair")) for q in per_question),
            "verdicts": verdicts, "verdicts_quarantined": quarantined, "score_mean": mean(every),
            "best_mean": mean([q["best"] for q in scored]), "question_mean_mean": mean([q["mean"] for q in scored]),
            "spread_mean": mean([q["spread"] for q in scored])}


def compare_with_parent(items: list[Item], variants: list[str], samples: int,
                        seed: int) -> dict[str, dict[str, dict[str, Any]]]:
    """{metric: {parent: estimate, <variant>: estimate, <variant> - parent: paired difference}}."""
    grouped = {model: by_metric(items, model) for model in [PARENT, *variants]}
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for metric in sorted(grouped[PARENT]):
        row = {PARENT: estimate(grouped[PARENT][metric], samples, seed).as_dict()}
        for variant in variants:
            mine = grouped[variant].get(metric, [])
            row[variant] = estimate(mine, samples, seed).as_dict()
            row[f"{variant} - {PARENT}"] = paired_difference(mine, grouped[PARENT][metric], samples, seed).as_dict()
        table[metric] = row
    return table


def comparison_markdown(table: dict[str, dict[str, dict[str, Any]]], variants: list[str]) -> str:
    head = ["metric", PARENT, *variants, *(f"{v} − {PARENT}" for v in variants), "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric, row in table.items():
        cells = [interval_cell(row[PARENT]), *(interval_cell(row[v]) for v in variants),
                 *(interval_cell(row[f"{v} - {PARENT}"], signed=True) for v in variants)]
        lines.append(f"| {metric} | " + " | ".join(cells) + f" | {row[PARENT]['n']} |")
    return "\n".join(lines) + "\n"


def corpus_card(parent: dict[str, Any], judge: dict[str, str], summary: dict[str, float],
                unused: list[dict[str, Any]], min_score: int, min_margin: int) -> str:
    """The distilled corpus's card: where every example came from and what was left out."""
    reasons: dict[str, int] = {}
    for question in unused:
        kind = question["reason"].split(" (")[0].split(" is below")[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    lines = ["## Distilled corpus", "",
             f"- sampled from: `{parent['model_name']}` version {parent['version']} (alias `{parent['alias']}`, "
             f"adapter sha256 `{parent['adapter_sha256'][:12]}`)",
             f"- judge: `{judge['model']}`, rubric `{judge['rubric_version']}` (a reason, then Score: [[1-10]])",
             f"- questions: {summary['questions']}, of which {summary['questions_kept']} train (best answer ≥ "
             f"min_score {min_score}) and {summary['pairs']} give a preference pair (best − worst ≥ {min_margin})",
             f"- verdicts: {summary['verdicts']} scored, {summary['verdicts_quarantined']} quarantined "
             "(no readable score)",
             f"- scores: mean {summary['score_mean']}, per question: best {summary['best_mean']} on average, "
             f"mean {summary['question_mean_mean']}, spread {summary['spread_mean']}",
             "- left out: " + (", ".join(f"{n} × {k}" for k, n in sorted(reasons.items())) or "none"),
             "", "Each example in `data/distill/best.jsonl` and `pairs.jsonl` records its parent version, "
             "sample, score, judge model and rubric version (`provenance`).", ""]
    return "\n".join(lines)


def write_variant_cards(variant_dirs: dict[str, Path], data_files: dict[str, Path], train: TrainParams,
                        training: dict[str, Any], base_model: str, base_dir: Path, parent: dict[str, Any],
                        trained: dict[str, float]) -> None:
    """Each variant's model card: its parent version and the distilled data it learned from."""
    base_sha256 = folder_sha256(base_dir)
    for variant, folder in variant_dirs.items():
        data = {"method": f"Self-Distill with Feedback, {variant.upper()} on the parent adapter",
                "parent": f"{parent['model_name']} version {parent['version']} (adapter sha256 "
                          f"`{parent['adapter_sha256']}`)",
                "distilled data": f"`{data_files[variant]}` (sha256 `{file_sha256(data_files[variant])}`)",
                "judge rubric": RUBRIC_VERSION}
        results = {k: v for k, v in trained.items() if k.startswith(variant) and "runtime" not in k}
        write_adapter_card(folder, base_model, base_sha256, train.format, train.max_length, training, data, results)


def summary_page(parent: dict[str, Any], card: str, table_md: str, source: str, selection: Selection) -> str:
    """reports/distill/summary.md: the corpus card, the comparison with the parent and a few examples."""
    examples = []
    for pair in selection.pairs[:3]:
        examples += [f"**Q:** {pair['question']}", "",
                     f"- best ({pair['provenance']['score']:g}): {pair['chosen'][:400]}",
                     f"- worst ({pair['provenance']['rejected_score']:g}): {pair['rejected'][:400]}", ""]
    for unused in selection.unused[:3]:
        examples += [f"**Q (unused):** {unused['question']} — {unused['reason']}", ""]
    return "\n".join([f"# Self-Distill with Feedback: a round from {parent['model_name']} version {parent['version']}",
                      "", card, "![judge scores](scores.png)", "",
                      "## The variants against the parent, on the same items", "",
                      "95% intervals (Wilson for rates, bootstrap otherwise); differences are paired. Guardrail "
                      f"rates without a suffix use the verdict source **{source}** (see the calibrate stage).", "",
                      table_md, "## Examples", "", *examples])


def challenger_items(items: list[Item], variant: str) -> list[Item]:
    """The registered variant's items as `adapter` (the bar a later challenger meets), with the parent's."""
    return [Item(i.metric, ADAPTER, i.item, i.num, i.den, i.higher_is_better, i.transform) if i.model == variant else i
            for i in items if i.model in (variant, PARENT)]


def round_tags(parent: dict[str, Any], variant: str, judge_model: str, samples_file: Path) -> dict[str, str]:
    """The registered challenger's lineage: which parent, variant, judge and rubric, from which samples."""
    return {"distill.parent_version": str(parent["version"]), "distill.parent_adapter_sha256": parent["adapter_sha256"],
            "distill.variant": variant, "distill.judge_model": judge_model, "distill.rubric_version": RUBRIC_VERSION,
            "distill.samples_sha256": file_sha256(samples_file)}

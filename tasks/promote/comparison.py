"""A sweep's members side by side, and the one member that may go to the promotion gate.

Members are registered versions whose promotion.decision is still `pending` (a Prefect sweep's members, or
`dvc exp run` experiments). Everything shown comes from the tracking store: the version's stored items (the
evaluation, with intervals), its train.* tags, and the train stage run of the same pipeline (time,
throughput, loss curves)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities.model_registry import ModelVersion  # noqa: E402

from tasks.scoring.stats import ADAPTER, Estimate, Item, by_metric, estimate  # noqa: E402

TRAIN_FACTS = ("trainable_params", "train_runtime_s", "trained_tokens_per_s", "steps", "eval_loss_best")


@dataclass
class Member:
    version: str
    label: str  # the train.* settings that differ across the sweep, e.g. "lora.r=4"
    tags: dict[str, str]
    items: list[Item]
    train: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def metric(self, name: str) -> Estimate:
        return estimate(by_metric(self.items, ADAPTER).get(name, []))


def train_run_facts(client: MlflowClient, version: ModelVersion) -> tuple[dict[str, float], dict[str, list]]:
    """Metrics and loss curves of the train stage run that made this version: its source run (versions are
    logged by the train stage), else the train run of the same pipeline run."""
    run = client.get_run(version.run_id)
    pipeline = run.data.tags.get("selfchat.pipeline_id")
    if run.data.tags.get("selfchat.stage") != "train":
        runs = client.search_runs([run.info.experiment_id],
                                  f"tags.`selfchat.pipeline_id` = '{pipeline}' and tags.`selfchat.stage` = 'train'",
                                  order_by=["attributes.start_time DESC"], max_results=1) if pipeline else []
        if not runs:
            return {}, {}
        run = runs[0]
    curves = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
              for key in ("loss", "eval_loss")}
    return {k: v for k, v in run.data.metrics.items() if k in TRAIN_FACTS}, curves


def member_labels(tag_sets: list[dict[str, str]]) -> list[str]:
    """The train.* settings that differ between members (all of them if none differ)."""
    keys = sorted({k for tags in tag_sets for k in tags if k.startswith("train.")})
    varying = [k for k in keys if len({tags.get(k) for tags in tag_sets}) > 1]
    return [", ".join(f"{k.removeprefix('train.')}={tags.get(k)}" for k in varying) or "(same settings)"
            for tags in tag_sets]


def rank_members(members: list[Member], primary_metric: str) -> list[Member]:
    """Best first by the primary metric's point estimate; a member without it comes last; ties go to the
    earlier version (reproducible)."""
    def key(member: Member) -> tuple[float, int]:
        found = by_metric(member.items, ADAPTER).get(primary_metric)
        if not found:
            return (math.inf, int(member.version))
        value = member.metric(primary_metric).value
        return (-value if found[0].higher_is_better else value, int(member.version))
    return sorted(members, key=key)


def comparison_markdown(sweep: str, ranked: list[Member], metrics: list[str], decision: str,
                        final_gates: Sequence[object] = (), ungated: dict[str, str] | None = None) -> str:
    """The members side by side, the best member's gates against the bar (`final_gates`, each with the
    regression it can detect), what was reported but not gated, and each member's gates as registered."""
    lines = [f"# Sweep {sweep}: {len(ranked)} members", "", decision, "",
             "| rank | version | settings | " + " | ".join(metrics) + " | trainable params | train s | tokens/s |",
             "|---" * (len(metrics) + 6) + "|"]
    for place, m in enumerate(ranked, 1):
        cells = [str(m.metric(name)) for name in metrics]
        facts = [m.train.get(k, math.nan) for k in ("trainable_params", "train_runtime_s", "trained_tokens_per_s")]
        lines.append(f"| {place} | {m.version} | {m.label} | " + " | ".join(cells)
                     + f" | {facts[0]:,.0f} | {facts[1]:.0f} | {facts[2]:.1f} |")
    lines += ["", "Intervals: 95% (Wilson for rates, bootstrap over items otherwise), adapter on the same held-out "
              "items for every member."]
    if final_gates:
        lines += ["", f"## The gates of version {ranked[0].version} against the bar", "",
                  *[f"- {g}" for g in final_gates]]
    if ungated:
        lines += ["", "Reported, not gated:", *[f"- {m}: {why}" for m, why in sorted(ungated.items())]]
    lines += ["", "## Each member's gates as registered (vs the bar of that moment; detectable regression at its n)",
              ""]
    for m in ranked:
        gates = [v for k, v in sorted(m.tags.items()) if k.startswith("gate.")]
        lines += [f"- version {m.version} ({m.label}):", *[f"  - {g}" for g in gates or ["no gates recorded"]]]
    return "\n".join(lines) + "\n"


def comparison_plots(ranked: list[Member], metrics: list[str], folder: Path) -> list[Path]:
    """metrics.png (each metric per member with its interval) and loss.png (loss curves overlaid)."""
    folder.mkdir(parents=True, exist_ok=True)
    members = sorted(ranked, key=lambda m: int(m.version))
    labels = [f"v{m.version}\n{m.label}" for m in members]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 1, 3.4), squeeze=False)
    for ax, name in zip(axes[0], metrics, strict=True):
        values = [m.metric(name) for m in members]
        # a bootstrap interval of a ratio need not contain its point estimate: draw what lies on each side
        ax.errorbar(range(len(members)), [v.value for v in values], fmt="o", capsize=4,
                    yerr=[[max(v.value - v.low, 0.0) for v in values], [max(v.high - v.value, 0.0) for v in values]])
        ax.set_xticks(range(len(members)), labels, fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "metrics.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for m in members:
        for key, style in (("loss", "-"), ("eval_loss", "o--")):
            points = m.curves.get(key, [])
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], style,
                        label=f"v{m.version} {m.label} ({'validation' if key == 'eval_loss' else 'train'})")
    ax.set(xlabel="optimizer step", ylabel="loss (assistant tokens)", title="Loss curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(folder / "loss.png", dpi=110)
    plt.close(fig)
    return [folder / "metrics.png", folder / "loss.png"]

"""Pictures people would rather look at than read; written as PNG for MLflow and CSV for `dvc plots`."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first


def write_loss_curve(losses: list[tuple[int, float]], csv_path: Path, png_path: Path) -> None:
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss"])
        writer.writerows(losses)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in losses], [loss for _, loss in losses], marker=".")
    ax.set(xlabel="step", ylabel="training loss (assistant tokens)", title="LoRA training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


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

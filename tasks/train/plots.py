"""Loss curves from the Trainer's log: CSV for `dvc plots`, PNG for MLflow."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first


def curve(history: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(int(entry["step"]), float(entry[key])) for entry in history if key in entry]


def write_csv(points: list[tuple[int, float]], name: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", name])
        writer.writerows(points)


def write_loss_curves(history: list[dict[str, Any]], folder: Path) -> dict[str, Path]:
    """plots/train_loss.csv, plots/eval_loss.csv (header only without a validation slice) and the PNG."""
    train, evaluation = curve(history, "loss"), curve(history, "eval_loss")
    paths = {"train": folder / "train_loss.csv", "eval": folder / "eval_loss.csv", "png": folder / "train_loss.png"}
    write_csv(train, "loss", paths["train"])
    write_csv(evaluation, "eval_loss", paths["eval"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in train], [v for _, v in train], marker=".", label="train (per step)")
    if evaluation:
        ax.plot([s for s, _ in evaluation], [v for _, v in evaluation], marker="o", label="validation")
    ax.set(xlabel="optimizer step", ylabel="loss (assistant tokens)", title="LoRA training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=110)
    plt.close(fig)
    return paths

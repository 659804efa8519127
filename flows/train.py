"""Stage 5, train: LoRA on the base model, loss on the assistant's turns only."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
from prefect import flow

from flows.stage import run_stage, step
from tasks.config import load_params
from tasks.jsonl import read_jsonl, write_json
from tasks.masking import build_examples
from tasks.paths import ADAPTER_DIR, BASE_DIR, PLOTS, TRAIN, metrics_file
from tasks.student import load_tokenizer, save_adapter
from tasks.tracking import stage_run
from tasks.train.lora import train_lora
from tasks.train.plots import write_loss_curve


@flow(name="train", log_prints=True)
def train(params_file: str = "params.yaml") -> dict[str, float]:
    all_params = load_params(Path(params_file))
    params = all_params.train
    dialogues = list(read_jsonl(TRAIN))
    losses: list[tuple[int, float]] = []

    def record_loss(step_number: int, loss: float) -> None:
        losses.append((step_number, loss))
        mlflow.log_metric("train_loss", loss, step=step_number)

    with stage_run("train", params):
        tokenizer = load_tokenizer(BASE_DIR)
        examples, emptied = step(build_examples, "tokenize-and-mask")(
            dialogues, tokenizer, params.format, params.max_length)
        model, summary = step(train_lora, "lora-train")(BASE_DIR, tokenizer, examples, params, record_loss,
                                                         all_params.base.dtype)
        shutil.rmtree(ADAPTER_DIR, ignore_errors=True)
        save_adapter(model, ADAPTER_DIR, base_ref=str(BASE_DIR))
        summary["dialogues_emptied_by_truncation"] = float(emptied)
        write_json(metrics_file("train"), summary)
        write_loss_curve(losses, PLOTS / "train_loss.csv", PLOTS / "train_loss.png")
        mlflow.log_metrics({k: v for k, v in summary.items() if k != "train_loss"})
        mlflow.log_artifact(str(PLOTS / "train_loss.png"))
        mlflow.log_artifacts(str(ADAPTER_DIR), "adapter")
    print(f"trained {summary['trainable_params']:.0f} LoRA parameters on {len(examples)} dialogues; "
          f"mean loss {summary['train_loss']:.3f}")
    return summary


if __name__ == "__main__":
    run_stage(train, needs=[BASE_DIR, TRAIN])

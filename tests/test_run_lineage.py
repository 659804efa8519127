"""What a run says about where it came from: the commit (dirty only when code or params changed) and, in the
Prefect UI, the stage's result with its MLflow run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tasks.core.config import TrainParams
from tasks.services.tracking import (
    EXPERIMENT,
    declared_outputs,
    describe_pipeline_run,
    git_sha,
    log_headline,
    run_summary_markdown,
    stage_run,
)

SPEC = """stages:
  train:
    cmd: python -m flows.train
    deps: [flows/train.py]
    outs: [models/adapter]
    metrics:
      - metrics/train.json:
          cache: false
    plots:
      - plots/train_loss.csv:
          cache: false
  register:
    cmd: python -m flows.register
    metrics:
      - metrics/register.json:
          cache: false
"""


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True,
                   capture_output=True)


def test_declared_outputs_lists_outs_metrics_and_plots(tmp_path: Path):
    (tmp_path / "dvc.yaml").write_text(SPEC)
    assert declared_outputs("train", tmp_path / "dvc.yaml") == ["models/adapter", "metrics/train.json",
                                                               "plots/train_loss.csv"]
    assert declared_outputs(spec_file=tmp_path / "dvc.yaml")[-1] == "metrics/register.json"
    assert declared_outputs("train", tmp_path / "missing.yaml") == []


def test_dirty_means_code_or_params_changed_not_what_the_pipeline_wrote(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path, text in {"dvc.yaml": SPEC, "dvc.lock": "a\n", "params.yaml": "r: 8\n", "flows/train.py": "x = 1\n",
                       "metrics/train.json": "{}\n", "plots/train_loss.csv": "step,loss\n"}.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "init")
    clean = git_sha()
    assert len(clean) == 40
    (tmp_path / "metrics/.gitignore").write_text("/x\n")
    git(tmp_path, "add", "metrics/.gitignore")
    git(tmp_path, "commit", "-qm", "ignore")
    clean = git_sha()
    for path in ("dvc.lock", "metrics/train.json", "plots/train_loss.csv", "metrics/.gitignore"):  # stage-written
        (tmp_path / path).write_text("changed by a stage\n")
    assert git_sha() == clean
    (tmp_path / "params.yaml").write_text("r: 16\n")
    assert git_sha() == clean + "-dirty"
    git(tmp_path, "checkout", "params.yaml")
    (tmp_path / "flows/train.py").write_text("x = 2\n")
    assert git_sha() == clean + "-dirty"


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)


def test_stage_summary_has_numbers_outputs_params_and_the_mlflow_link(tracking: MlflowClient):
    experiment = tracking.create_experiment("summary")
    with mlflow.start_run(experiment_id=experiment, run_name="train",
                          tags={"selfchat.stage": "train", "selfchat.pipeline_id": "p1", "git.sha": "abc"}) as run:
        mlflow.log_metric("train_loss_mean", 2.5971)
        mlflow.log_param("train.lora.r", 8)
    text = run_summary_markdown(tracking.get_run(run.info.run_id), ["models/adapter", "metrics/train.json"])
    assert text.startswith("# train: pipeline p1")
    assert "| train_loss_mean | 2.5971 |" in text and "| train.lora.r | `8` |" in text
    assert "`models/adapter`, `metrics/train.json`" in text
    assert f"#/experiments/{experiment}/runs/{run.info.run_id}?workflowType=machine_learning)" in text


def test_the_pipeline_run_spans_its_stages_and_carries_their_headline(tracking: MlflowClient, tmp_path: Path,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SELFCHAT_PIPELINE_ID", "p-headline")
    for key in ("DVC_EXP_BASELINE_REV", "DVC_EXP_NAME"):
        monkeypatch.delenv(key, raising=False)
    with stage_run("train", TrainParams()):
        log_headline({"steps": 39})
        describe_pipeline_run("Version 1: promoted to champion.")
    [parent] = tracking.search_runs([tracking.get_experiment_by_name(EXPERIMENT).experiment_id],
                                    "tags.`selfchat.role` = 'pipeline'")
    assert parent.info.run_name == "pipeline p-headline" and parent.info.status == "FINISHED"
    assert parent.data.metrics == {"train/steps": 39.0} and parent.data.params["train.lora.r"] == "8"
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("selfchat pipeline run `p-headline`") and note.endswith("Version 1: promoted to champion.")
    with pytest.raises(RuntimeError), stage_run("evaluate", TrainParams()):
        raise RuntimeError("a stage fails")
    assert tracking.get_run(parent.info.run_id).info.status == "FAILED"

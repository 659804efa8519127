"""The MLflow UI the project starts: lean, answering when `up` returns, reused, stopped by `down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]


def ui(action: str, project: Path, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "tasks.services.mlflow_ui", action], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_mlflow_ui_up_answers_is_reused_and_down_stops_it(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SELFCHAT_", "DVC_"))}
    env["PYTHONPATH"] = str(ROOT)
    first = ui("up", tmp_path, env)
    try:
        url = first.split()[2]
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        assert "workflowType=machine_learning&viewStateShareKey=pipeline" in first
        state = json.loads((tmp_path / ".mlflow-ui/selfchat-mlflow-ui.json").read_text())
        command = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
        assert b"--workers" in command and b"1" in command
        assert ui("up", tmp_path, env) == first  # the running one, not a second server
        experiment = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment_by_name("selfchat")
        view = json.loads(json.loads(experiment.tags["mlflow.sharedViewState.pipeline"])["state"])
        assert "metrics.`register/promoted`" in view["selectedColumns"]
    finally:
        assert ui("down", tmp_path, env).startswith("stopped the MLflow UI")
    assert not Path(f"/proc/{state['pid']}").exists() or b"server" not in Path(
        f"/proc/{state['pid']}/cmdline").read_bytes()

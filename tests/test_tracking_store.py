"""A kill during MLflow's first-time table creation must not leave a store that breaks every later run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from tasks.services.tracking import ensure_tracking_store

ROOT = Path(__file__).resolve().parents[1]
CREATE = "from tasks.services.tracking import ensure_tracking_store; ensure_tracking_store()"


def usable(db: Path) -> bool:
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.create_experiment(f"probe-{time.monotonic_ns()}")
    return client.get_experiment(experiment).name.startswith("probe-")


def test_a_kill_during_creation_leaves_a_store_the_next_run_can_use(tmp_path: Path, monkeypatch):
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "PYTHONPATH": str(ROOT)}
    for after_first_table_s in (0.1, 0.5, 1.0):  # killed while MLflow creates its tables
        process = subprocess.Popen([sys.executable, "-c", CREATE], env=env, start_new_session=True)
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*mlflow.db*")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        time.sleep(after_first_table_s)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert not db.exists() or usable(db), "either no store yet, or a complete one"
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: f"sqlite:///{db}")
    ensure_tracking_store()
    assert usable(db)


def test_a_half_created_store_is_moved_aside_and_rebuilt(tmp_path: Path, monkeypatch):
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as connection:  # as an interrupted first run of an older version left it
        connection.execute("create table experiments (experiment_id integer primary key)")
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: f"sqlite:///{db}")
    ensure_tracking_store()
    assert usable(db)
    assert len(list(tmp_path.glob("mlflow.db.incomplete-*"))) == 1, "the old file is kept, not deleted"
    ensure_tracking_store()  # a complete store is left as it is
    assert len(list(tmp_path.glob("mlflow.db.incomplete-*"))) == 1

"""The MLflow UI for the project's tracking store, on 127.0.0.1, started in the background and lean: one
web worker and no job runner (the defaults start ~10 processes, take ~2-3 GiB and answer after ~1 min).

    python -m tasks.services.mlflow_ui up     # start (or find) it; returns once it answers, prints the runs page
    python -m tasks.services.mlflow_ui down   # stop it
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import mlflow

from tasks.services.local_server import LocalServer, up_down_main
from tasks.services.runtime import project_root
from tasks.services.tracking import EXPERIMENT, ensure_experiment, ensure_tracking_store, runs_page

DEFAULT_PORT = 5000
STARTUP_TIMEOUT_S = 120.0


def _server() -> LocalServer:
    return LocalServer("MLflow UI", "selfchat-mlflow-ui", project_root() / ".mlflow-ui", (b"server",),
                       "/health", STARTUP_TIMEOUT_S)


def ensure_ui(log_dir: Path = Path("logs")) -> str:
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--backend-store-uri", mlflow.get_tracking_uri()]

    def env(port: int) -> dict[str, str]:
        return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

    return _server().ensure(command, lambda port: f"http://127.0.0.1:{port}", DEFAULT_PORT,
                            (log_dir / "mlflow-ui.log").resolve(), env)


def up() -> str:
    ensure_tracking_store()
    experiment = ensure_experiment()
    url = ensure_ui()
    return (f"MLflow UI: {url}\n  runs of '{EXPERIMENT}': {runs_page(url, experiment)}\n"
            f"  registry: {url}/#/models?workflowType=machine_learning")


def main() -> None:
    up_down_main("the project's MLflow UI", up, lambda: _server().stop())


if __name__ == "__main__":
    main()

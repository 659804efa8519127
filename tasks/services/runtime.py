"""Process-wide defaults: offline, no telemetry, state folders inside the project."""

from __future__ import annotations

import logging
import os
from pathlib import Path

OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "GX_ANALYTICS_ENABLED": "false",
    # Prefect's temporary server gets 20 s to start by default; its first start migrates a fresh database,
    # and on a busy 2-core machine that took longer (seen: a failed stage)
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def project_root() -> Path:
    """Where the project's state lives (tracking store, Prefect home). A queued `dvc exp run` works in a
    temporary copy under .dvc/tmp/exps and names the real project in DVC_ROOT: its runs, registry
    versions and Prefect flow runs belong to the project, not to a copy that is deleted afterwards."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def apply_runtime_defaults(project_root_dir: Path | None = None) -> None:
    """Set offline/telemetry switches unless the user already chose otherwise."""
    root = (project_root_dir or project_root()).resolve()
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("DVC_SITE_CACHE_DIR", str(root / ".dvc" / "site_cache"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    # on AVX512-BF16 CPUs bitsandbytes tries, at import, to fetch a 4-bit kernel from the Hugging Face Hub and
    # warns when it cannot; k-bit training is CUDA-only here (tasks/models/student.py), so the warning is noise that
    # would sit above every stage's one-line error
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # with the `kernels` package (a dependency since transformers 5.25) that fetch goes through it, which warns
    # that the Hub is offline
    logging.getLogger("kernels").setLevel(logging.ERROR)

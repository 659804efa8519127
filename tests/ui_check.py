"""What a user sees after `make run`, checked in a real headless browser (Chromium), with screenshots.

    make ui-check    # = python -m tests.ui_check --screenshots docs/screenshots, after `make run`

Opens the MLflow runs page (model-training mode, the pipeline view), the champion's registered version,
the Prefect flow runs and the Data Docs index, and fails, naming what is missing, unless each shows the
pipeline run, the stage results, the decision in words and the listed validations. Needs a Chromium
(`apt-get install chromium`; not a Python package: this is a check to run by hand, not part of `make test`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow import MlflowClient

from tasks.services.mlflow_ui import ensure_ui
from tasks.services.prefect_server import ensure_server
from tasks.services.runtime import apply_runtime_defaults
from tasks.services.tracking import EXPERIMENT, ensure_experiment, runs_page

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome-headless-shell")


def browser() -> str:
    for name in BROWSER_NAMES:
        if found := shutil.which(name):
            return found
    raise SystemExit(f"no headless browser found ({', '.join(BROWSER_NAMES)}): apt-get install chromium")


def render(url: str, screenshot: Path | None, wait_ms: int = 20000) -> str:
    """The page's DOM after its scripts ran (and a screenshot of it)."""
    base = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--virtual-time-budget={wait_ms}", "--window-size=1440,900"]
    with tempfile.TemporaryDirectory() as profile:
        base.append(f"--user-data-dir={profile}")
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
        if screenshot is not None:
            subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=180)
    return dom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for one PNG per view")
    args = parser.parse_args()
    apply_runtime_defaults()
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> Path | None:
        return args.screenshots / f"{name}.png" if args.screenshots else None

    client = MlflowClient()
    experiment = ensure_experiment()
    [pipeline] = client.search_runs([experiment], "tags.`selfchat.role` = 'pipeline'",
                                    order_by=["attributes.start_time DESC"], max_results=1)
    champion = client.get_model_version_by_alias("selfchat-adapter", "champion")
    ui, prefect = ensure_ui(), ensure_server().removesuffix("/api")
    pipeline_id = pipeline.data.tags["selfchat.pipeline_id"]
    views = {
        "mlflow-runs": (runs_page(ui, experiment), [pipeline.info.run_name, "register/promoted"]),
        "mlflow-pipeline-run": (f"{ui}/#/experiments/{experiment}/runs/{pipeline.info.run_id}"
                                "?workflowType=machine_learning", ["promoted to champion", "train/steps"]),
        "mlflow-champion": (f"{ui}/#/models/selfchat-adapter/versions/{champion.version}"
                            "?workflowType=machine_learning", [f"Version {champion.version}: promoted", "champion"]),
        "prefect-runs": (f"{prefect}/runs", [f"train {pipeline_id}", f"register {pipeline_id}"]),
        "data-docs": ((Path("reports/data_docs/index.html").resolve().as_uri()),
                      [f"validate-{pipeline_id}-dialogues", f"validate-{pipeline_id}-seeds", "fa-check-circle"]),
    }
    failures = []
    for name, (url, expected) in views.items():
        dom = render(url, shot(name))
        if any(text not in dom for text in expected):  # a busy machine: give the page's scripts more time
            dom = render(url, shot(name), wait_ms=60000)
        missing = [text for text in expected if text not in dom]
        print(f"{name}: {'ok' if not missing else 'MISSING ' + json.dumps(missing)}  ({url})")
        if missing:
            failures.append(name)
    if failures:
        sys.exit(f"{len(failures)} view(s) do not show what they should: {', '.join(failures)}")
    print(f"all {len(views)} views show the run ({EXPERIMENT} experiment, champion version {champion.version})")


if __name__ == "__main__":
    main()

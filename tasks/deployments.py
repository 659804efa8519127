"""`make deploy`: prefect.yaml's deployments registered with the project's Prefect server, and the worker
that runs them started (both reused when running).

    python -m tasks.deployments
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks.local_server import LocalServerError
from tasks.prefect_server import WORK_POOL, ensure_server, ensure_worker
from tasks.runtime import apply_runtime_defaults

PREFECT_FILE = Path("prefect.yaml")


class DeployFailed(LocalServerError):
    pass


def describe_schedule(schedule: object) -> str:
    if getattr(schedule, "cron", None):
        return f"{schedule.cron} {schedule.timezone or 'UTC'}"
    if getattr(schedule, "interval", None):
        return f"every {schedule.interval}"
    return str(schedule)


def deploy(prefect_file: Path = PREFECT_FILE) -> list[str]:
    """Register every deployment of `prefect_file`; one line per deployment (name, schedule, next run)."""
    api_url = ensure_server()
    ensure_worker(api_url)
    done = subprocess.run([sys.executable, "-m", "prefect", "deploy", "--all", "--no-prompt", "--prefect-file",
                           str(prefect_file)], capture_output=True, text=True,
                          env={**os.environ, "PREFECT_API_URL": api_url})
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise DeployFailed("prefect deploy failed: " + " | ".join(tail))
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        deployments = client.read_deployments()
        lines = []
        for deployment in sorted(deployments, key=lambda d: d.name):
            flow_name = client.read_flow(deployment.flow_id).name
            schedules = ", ".join(describe_schedule(s.schedule) + ("" if s.active else " (paused)")
                                  for s in deployment.schedules) or "on demand"
            lines.append(f"{flow_name}/{deployment.name}: {schedules}")
    ui = api_url.removesuffix("/api")
    return [*lines, f"pool '{WORK_POOL}' (worker running); deployments: {ui}/deployments"]


def main() -> None:
    apply_runtime_defaults()
    try:
        print("\n".join(deploy()))
    except LocalServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

"""`make deploy`: prefect.yaml's deployments registered with the project's Prefect server, and the worker
that runs them started (both reused when running).

    python -m tasks.services.deployments
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks.services.local_server import LocalServerError
from tasks.services.prefect_server import COLLECT_POOL, WORK_POOL, ensure_server, ensure_worker
from tasks.services.runtime import apply_runtime_defaults

PREFECT_FILE = Path("prefect.yaml")


class DeployFailed(LocalServerError):
    pass


def describe_schedule(schedule: object) -> str:
    if getattr(schedule, "cron", None):
        return f"{schedule.cron} {schedule.timezone or 'UTC'}"
    if getattr(schedule, "interval", None):
        return f"every {schedule.interval}"
    return str(schedule)


def _prefect(arguments: list[str], api_url: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "prefect", *arguments], capture_output=True, text=True,
                          env={**os.environ, "PREFECT_API_URL": api_url})
    if check and done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise DeployFailed(f"prefect {arguments[0]} failed: " + " | ".join(tail))
    return done


def deploy(prefect_file: Path = PREFECT_FILE) -> list[str]:
    """Register every deployment of `prefect_file`; one line per deployment (name, schedule, next run)."""
    api_url = ensure_server()
    ensure_worker(api_url)
    # the shards' pool exists before its deployment, whether or not a collect worker runs here yet
    if _prefect(["work-pool", "inspect", COLLECT_POOL], api_url, check=False).returncode != 0:
        _prefect(["work-pool", "create", COLLECT_POOL, "--type", "process"], api_url)
    _prefect(["deploy", "--all", "--no-prompt", "--prefect-file", str(prefect_file)], api_url)
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        deployments = client.read_deployments()
        lines = []
        for deployment in sorted(deployments, key=lambda d: d.name):
            flow_name = client.read_flow(deployment.flow_id).name
            schedules = ", ".join(describe_schedule(s.schedule) + ("" if s.active else " (paused)")
                                  for s in deployment.schedules) or "on demand"
            lines.append(f"{flow_name}/{deployment.name}: {schedules} (pool {deployment.work_pool_name})")
    ui = api_url.removesuffix("/api")
    return [*lines, f"pool '{WORK_POOL}': worker running; pool '{COLLECT_POOL}': collection shards "
            "(collect.shards > 1; `make up` starts their workers); deployments: " + f"{ui}/deployments"]


def main() -> None:
    apply_runtime_defaults()
    try:
        print("\n".join(deploy()))
    except LocalServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

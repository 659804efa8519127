"""One local Prefect server for the project, on 127.0.0.1: started on first use, reused afterwards; and
one worker that runs the project's deployments (prefect.yaml) from this checkout.

Every stage reports to the server, whether run by `dvc repro`, `make pipeline` or `python -m
flows.<stage>`, so the Prefect UI shows every run, and no stage pays for starting a temporary server of its
own. A user who has a server of their own sets PREFECT_API_URL and that one is used instead.

    python -m tasks.prefect_server up     # start (or find) the server and the worker, print the URL
    python -m tasks.prefect_server down   # stop the ones this project started
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tasks.local_server import LocalServer, up_down_main

DEFAULT_PORT = 4200
WORK_POOL = "selfchat"  # a local `process` pool: the worker runs each flow run as a process in this checkout
WORKER_PORT = 4201  # its health check (127.0.0.1)
STARTUP_TIMEOUT_S = 180.0  # the first start migrates a fresh database: slow on a busy 2-core machine


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.cwd() / ".prefect").resolve()


def _server(home: Path) -> LocalServer:
    return LocalServer("Prefect server", "selfchat-server", home, (b"prefect", b"server"), "/health",
                       STARTUP_TIMEOUT_S)


def ensure_server(home: Path | None = None, port: int | None = None, log_dir: Path = Path("logs"),
                  use_env: bool = True) -> str:
    """The API URL of the server to report to: the user's (PREFECT_API_URL), the project's running one, or a
    new one started in the background (it outlives this process; `down` stops it)."""
    if use_env and os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    home = home or prefect_home()

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]

    def api_url(port: int) -> str:
        return f"http://127.0.0.1:{port}/api"

    def env(port: int) -> dict[str, str]:  # the UI calls the API of the port found free
        return {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_API_URL": api_url(port)}

    return _server(home).ensure(command, api_url, port or DEFAULT_PORT, (log_dir / "prefect-server.log").resolve(), env)


def stop_server(home: Path | None = None) -> str:
    return _server(home or prefect_home()).stop()


def _worker(home: Path) -> LocalServer:
    return LocalServer("Prefect worker", "selfchat-worker", home, (b"worker", b"start"), "/health", STARTUP_TIMEOUT_S)


def ensure_worker(api_url: str, home: Path | None = None, log_dir: Path = Path("logs"),
                  query_seconds: float = 10.0) -> str:
    """The health URL of the worker polling the `selfchat` pool (created if missing), started in the
    background if not running. It runs one flow run at a time (--limit 1): an overlapping scheduled run
    waits for the one before it; each flow run is a process in the checkout its deployment came from."""
    home = home or prefect_home()
    worker = _worker(home)
    if (pid := worker.running_pid()) and _environment(pid).get("PREFECT_API_URL") != api_url:
        worker.stop()  # it polls a server that is no longer the project's (restarted on another port)

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process",
                "--limit", "1", "--name", f"selfchat-{Path.cwd().name}", "--with-healthcheck"]

    def env(port: int) -> dict[str, str]:
        # not this shell's pipeline id: every scheduled run is a pipeline run of its own
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SELFCHAT_")}
        return {**inherited, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1", "PREFECT_WORKER_WEBSERVER_PORT": str(port),
                "PREFECT_WORKER_QUERY_SECONDS": str(query_seconds)}

    return worker.ensure(command, lambda port: f"http://127.0.0.1:{port}", WORKER_PORT,
                         (log_dir / "prefect-worker.log").resolve(), env)


def _environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(entry.decode(errors="replace").partition("=")[::2] for entry in raw.split(b"\0") if b"=" in entry)


def stop_worker(home: Path | None = None) -> str:
    return _worker(home or prefect_home()).stop()


def up() -> str:
    api_url = ensure_server()
    ensure_worker(api_url)
    return (f"Prefect server: {api_url.removesuffix('/api')} (API {api_url})\n"
            f"Prefect worker: pool '{WORK_POOL}', runs the deployments of {Path.cwd()} (`make deploy`)")


def down() -> str:
    return f"{stop_worker()}\n{stop_server()}"


def main() -> None:
    up_down_main("the project's local Prefect server and worker", up, down)


if __name__ == "__main__":
    main()

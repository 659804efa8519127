"""One local Prefect server for the project, on 127.0.0.1: started on first use, reused afterwards; and
one worker that runs the project's deployments (prefect.yaml) from this checkout.

Every stage reports to the server, whether run by `dvc repro`, `make pipeline` or `python -m
flows.<stage>`, so the Prefect UI shows every run, and no stage pays for starting a temporary server of its
own. A user who has a server of their own sets PREFECT_API_URL and that one is used instead.

    python -m tasks.services.prefect_server up     # start (or find) the server and the worker, print the URL
    python -m tasks.services.prefect_server down   # stop the ones this project started
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tasks.core.config import load_params
from tasks.services.local_server import LocalServer, up_down_main

DEFAULT_PORT = 4200
WORK_POOL = "selfchat"  # a local `process` pool: the worker runs each flow run as a process in this checkout
WORKER_PORT = 4201  # its health check (127.0.0.1)
# collection shards (collect.shards > 1) run on a pool of their own: the pipeline's worker runs one flow run
# at a time, and the collect stage it runs waits for the shards
COLLECT_POOL = "selfchat-collect"
COLLECT_WORKER_PORT = 4210  # and up: the health checks of collect workers 1, 2, ...
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


def _worker(home: Path, key: str = "selfchat-worker") -> LocalServer:
    return LocalServer("Prefect worker", key, home, (b"worker", b"start"), "/health", STARTUP_TIMEOUT_S)


def _ensure_pool_worker(api_url: str, home: Path, log_file: Path, query_seconds: float, pool: str, key: str,
                        name: str, port: int) -> str:
    worker = _worker(home, key)
    if (pid := worker.running_pid()) and _environment(pid).get("PREFECT_API_URL") != api_url:
        worker.stop()  # it polls a server that is no longer the project's (restarted on another port)

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
                "--limit", "1", "--name", name, "--with-healthcheck"]

    def env(port: int) -> dict[str, str]:
        # not this shell's pipeline id: every scheduled run is a pipeline run of its own
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SELFCHAT_")}
        return {**inherited, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1", "PREFECT_WORKER_WEBSERVER_PORT": str(port),
                "PREFECT_WORKER_QUERY_SECONDS": str(query_seconds)}

    return worker.ensure(command, lambda port: f"http://127.0.0.1:{port}", port, log_file.resolve(), env)


def ensure_worker(api_url: str, home: Path | None = None, log_dir: Path = Path("logs"),
                  query_seconds: float = 10.0) -> str:
    """The health URL of the worker polling the `selfchat` pool (created if missing), started in the
    background if not running. It runs one flow run at a time (--limit 1): an overlapping scheduled run
    waits for the one before it; each flow run is a process in the checkout its deployment came from."""
    return _ensure_pool_worker(api_url, home or prefect_home(), log_dir / "prefect-worker.log", query_seconds,
                               WORK_POOL, "selfchat-worker", f"selfchat-{Path.cwd().name}", WORKER_PORT)


def ensure_collect_workers(api_url: str, count: int, home: Path | None = None, log_dir: Path = Path("logs"),
                           query_seconds: float = 5.0) -> list[str]:
    """`count` workers on the `selfchat-collect` pool, one collection shard at a time each (started if not
    running; ones beyond `count` that an earlier `up` started are stopped)."""
    home = home or prefect_home()
    _stop_collect_workers(home, keep=count)
    return [_ensure_pool_worker(api_url, home, log_dir / f"prefect-collect-worker-{i}.log", query_seconds,
                                COLLECT_POOL, f"selfchat-collect-worker-{i}", f"selfchat-collect-{i}-{Path.cwd().name}",
                                COLLECT_WORKER_PORT + i)
            for i in range(1, count + 1)]


def _stop_collect_workers(home: Path, keep: int = 0) -> list[str]:
    keys = sorted(p.stem for p in home.glob("selfchat-collect-worker-*.json"))
    return [_worker(home, key).stop() for key in keys if int(key.rsplit("-", 1)[1]) > keep]


def _environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(entry.decode(errors="replace").partition("=")[::2] for entry in raw.split(b"\0") if b"=" in entry)


def stop_worker(home: Path | None = None) -> str:
    home = home or prefect_home()
    return "\n".join([_worker(home).stop(), *_stop_collect_workers(home)])


def up(params_file: Path = Path("params.yaml")) -> str:
    api_url = ensure_server()
    ensure_worker(api_url)
    shards = load_params(params_file).collect.shards
    collect_workers = ensure_collect_workers(api_url, shards if shards > 1 else 0)
    return "\n".join([
        f"Prefect server: {api_url.removesuffix('/api')} (API {api_url})",
        f"Prefect worker: pool '{WORK_POOL}', runs the deployments of {Path.cwd()} (`make deploy`)",
        *([f"Prefect workers: {len(collect_workers)} on pool '{COLLECT_POOL}' for collect.shards = {shards}"]
          if collect_workers else [])])


def down() -> str:
    return f"{stop_worker()}\n{stop_server()}"


def main() -> None:
    up_down_main("the project's local Prefect server and worker", up, down)


if __name__ == "__main__":
    main()

"""One local Prefect server for the project, on 127.0.0.1: started on first use, reused afterwards.

Every stage reports to it, whether run by `dvc repro`, `make pipeline` or `python -m flows.<stage>`, so
the Prefect UI shows every run, and no stage pays for starting a temporary server of its own. A user who
has a server of their own sets PREFECT_API_URL and that one is used instead.

    python -m tasks.prefect_server up     # start (or find) it and print its URL
    python -m tasks.prefect_server down   # stop the one this project started
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tasks.errors import SelfchatError
from tasks.runtime import apply_runtime_defaults

DEFAULT_PORT = 4200
STARTUP_TIMEOUT_S = 180.0  # the first start migrates a fresh database: slow on a busy 2-core machine


class PrefectServerError(SelfchatError):
    pass


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or Path.cwd() / ".prefect").resolve()


def _state_file(home: Path) -> Path:
    return home / "selfchat-server.json"


def healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """Two stages starting at once start one server."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / "selfchat-server.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _recorded(home: Path) -> dict | None:
    try:
        return json.loads(_state_file(home).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _our_server(pid: int) -> bool:
    """The recorded pid is still a Prefect server (not a process that reused the pid)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"prefect" in command and b"server" in command


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _our_server(pid):
            time.sleep(0.2)
        if _our_server(pid):
            os.killpg(pid, signal.SIGKILL)


def _wait_until_healthy(api_url: str, process: subprocess.Popen | None, log_file: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if healthy(api_url):
            return
        if process is not None and process.poll() is not None:
            tail = log_file.read_text(errors="replace")[-1500:]
            raise PrefectServerError(f"Prefect server exited with code {process.returncode} (log {log_file}):\n{tail}")
        time.sleep(0.5)
    raise PrefectServerError(f"Prefect server not healthy after {timeout_s:.0f} s (log {log_file})")


def ensure_server(home: Path | None = None, port: int | None = None, log_dir: Path = Path("logs"),
                  use_env: bool = True) -> str:
    """The API URL of the server to report to: the user's (PREFECT_API_URL), the project's running one, or a
    new one started in the background (it outlives this process; `down` stops it)."""
    if use_env and os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    home = home or prefect_home()
    with _locked(home):
        state = _recorded(home)
        if state and _our_server(state["pid"]):
            # running, perhaps busy or still starting: wait for it rather than start a second one
            _wait_until_healthy(state["api_url"], None, log_dir / "prefect-server.log", STARTUP_TIMEOUT_S)
            return state["api_url"]
        port = port or (DEFAULT_PORT if _port_free(DEFAULT_PORT) else _free_port())
        api_url = f"http://127.0.0.1:{port}/api"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_file = (log_dir / "prefect-server.log").resolve()
        env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_UI_API_URL": api_url}
        with log_file.open("a") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)  # not killed with the stage that started it
        _state_file(home).write_text(json.dumps({"pid": process.pid, "api_url": api_url}))
        try:
            _wait_until_healthy(api_url, process, log_file, STARTUP_TIMEOUT_S)
        except PrefectServerError:
            _stop(process.pid)
            _state_file(home).unlink(missing_ok=True)
            raise
        return api_url


def stop_server(home: Path | None = None) -> str:
    home = home or prefect_home()
    with _locked(home):
        state = _recorded(home)
        if not state:
            return "no Prefect server was started by this project"
        if _our_server(state["pid"]):
            _stop(state["pid"])
        _state_file(home).unlink(missing_ok=True)
        return f"stopped the Prefect server at {state['api_url']}"


def main() -> None:
    parser = argparse.ArgumentParser(description="the project's local Prefect server")
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args()
    apply_runtime_defaults()
    try:
        if args.action == "up":
            api_url = ensure_server()
            print(f"Prefect server: {api_url.removesuffix('/api')} (API {api_url})")
        else:
            print(stop_server())
    except PrefectServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

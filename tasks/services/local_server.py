"""A server this project starts in the background on 127.0.0.1 (the Prefect server, the MLflow UI): started
once under a lock, found again by a small state file, told apart from a process that reused its pid, and
stopped by `make down`."""

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tasks.core.errors import SelfchatError
from tasks.services.runtime import apply_runtime_defaults


class LocalServerError(SelfchatError):
    pass


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class LocalServer:
    name: str  # for messages: "Prefect server"
    key: str  # file names in state_dir: <key>.json (pid and url), <key>.lock
    state_dir: Path
    markers: tuple[bytes, ...]  # words of its command line
    health_path: str  # appended to its url
    timeout_s: float

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Two processes starting it at once start one server."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / f"{self.key}.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    @property
    def _state_file(self) -> Path:
        return self.state_dir / f"{self.key}.json"

    def _recorded(self) -> dict | None:
        try:
            state = json.loads(self._state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if "api_url" in state:  # written by selfchat before the MLflow UI shared this code
            state.setdefault("url", state["api_url"])
        return state if "url" in state and "pid" in state else None

    def _ours(self, pid: int) -> bool:
        """The recorded pid is still this server (not a process that reused the pid)."""
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return all(marker in command for marker in self.markers)

    def _stop(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self._ours(pid):
                time.sleep(0.2)
            if self._ours(pid):
                os.killpg(pid, signal.SIGKILL)

    def _wait_until_healthy(self, url: str, process: subprocess.Popen | None, log_file: Path) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if healthy(url + self.health_path):
                return
            if process is not None and process.poll() is not None:
                tail = log_file.read_text(errors="replace")[-1500:]
                raise LocalServerError(f"{self.name} exited with code {process.returncode} (log {log_file}):\n{tail}")
            time.sleep(0.5)
        raise LocalServerError(f"{self.name} not healthy after {self.timeout_s:.0f} s (log {log_file})")

    def ensure(self, command: Callable[[int], list[str]], url: Callable[[int], str], default_port: int,
               log_file: Path, env: Callable[[int], dict[str, str]]) -> str:
        """The url of the running server, or of a new one started in the background (it outlives this
        process), once it answers; command, url and environment are those for the port found free."""
        with self._locked():
            state = self._recorded()
            if state and self._ours(state["pid"]):
                # running, perhaps busy or still starting: wait for it rather than start a second one
                self._wait_until_healthy(state["url"], None, log_file)
                return state["url"]
            port = default_port if port_free(default_port) else free_port()
            log_file.parent.mkdir(parents=True, exist_ok=True)
            with log_file.open("a") as sink:
                process = subprocess.Popen(command(port), stdout=sink, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=env(port),
                                           start_new_session=True)  # not killed with the process that started it
            self._state_file.write_text(json.dumps({"pid": process.pid, "url": url(port)}))
            try:
                self._wait_until_healthy(url(port), process, log_file)
            except LocalServerError:
                self._stop(process.pid)
                self._state_file.unlink(missing_ok=True)
                raise
            return url(port)

    def running_pid(self) -> int | None:
        """The pid of the server this project started, while it runs."""
        state = self._recorded()
        return state["pid"] if state and self._ours(state["pid"]) else None

    def stop(self) -> str:
        with self._locked():
            state = self._recorded()
            if not state:
                return f"no {self.name} was started by this project"
            if self._ours(state["pid"]):
                self._stop(state["pid"])
            self._state_file.unlink(missing_ok=True)
            return f"stopped the {self.name} at {state['url']}"


def up_down_main(description: str, up: Callable[[], str], down: Callable[[], str]) -> None:
    """`python -m <module> up|down`: print what `up` or `down` returns, or the one-line error."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args()
    apply_runtime_defaults()
    try:
        print(up() if args.action == "up" else down())
    except SelfchatError as exc:  # a server that would not start, bad params
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


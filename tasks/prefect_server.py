"""One local Prefect server for the project, on 127.0.0.1: started on first use, reused afterwards.

Every stage reports to it, whether run by `dvc repro`, `make pipeline` or `python -m flows.<stage>`, so
the Prefect UI shows every run, and no stage pays for starting a temporary server of its own. A user who
has a server of their own sets PREFECT_API_URL and that one is used instead.

    python -m tasks.prefect_server up     # start (or find) it and print its URL
    python -m tasks.prefect_server down   # stop the one this project started
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tasks.local_server import LocalServer, up_down_main

DEFAULT_PORT = 4200
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


def up() -> str:
    api_url = ensure_server()
    return f"Prefect server: {api_url.removesuffix('/api')} (API {api_url})"


def main() -> None:
    up_down_main("the project's local Prefect server", up, stop_server)


if __name__ == "__main__":
    main()

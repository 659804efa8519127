"""Glue shared by every stage flow: the command line, and wrapping plain functions as Prefect tasks."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks.config import ConfigError, load_params
from tasks.errors import SelfchatError
from tasks.paths import MissingInput, require
from tasks.prefect_server import ensure_server


def step(fn: Callable[..., Any], name: str, **options: Any) -> Task:
    """A plain function as a Prefect task (visible in the UI). DVC decides what reruns, so no Prefect
    caching: inputs such as models and clients are not hashable anyway."""
    return task(fn, name=name, cache_policy=NO_CACHE, **options)


def call_flow(flow: Callable[..., Any], **parameters: Any) -> Any:
    """Call a sync or async flow to completion from synchronous code."""
    result = flow(**parameters)
    return asyncio.run(result) if inspect.iscoroutine(result) else result


def parse_command_line(flow: Callable[..., Any]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=flow.__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    try:
        load_params(Path(args.params))  # fail fast, before Prefect, MLflow or any output is touched
    except ConfigError as exc:
        fail(str(exc), 2)
    return args


def fail(message: str, code: int = 1) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code) from None


INTERRUPTED = "interrupted; run the stage again to resume (finished work is kept)"


class _CtrlC:
    """Ctrl-C, remembered: a library on the way out may swallow the KeyboardInterrupt (or the cancellation
    asyncio turns it into), but the stage must still end as interrupted."""

    pressed = False

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        cls.pressed = True
        raise KeyboardInterrupt


def run_stage(flow: Callable[..., Any], args: argparse.Namespace | None = None, needs: Sequence[Path] = (),
              **parameters: Any) -> None:
    """`python -m flows.<stage>`: check the params and that the input files it `needs` exist, then run the
    flow reporting to the project's Prefect server (started once, shared by every stage; see
    tasks/prefect_server.py)."""
    args = args or parse_command_line(flow)
    try:
        require(*needs)  # one line naming the missing file and the stage that makes it; nothing written
    except MissingInput as exc:
        fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # our own handler (asyncio.run keeps a non-default one): the interrupt is raised where the code is
    signal.signal(signal.SIGINT, _CtrlC.handler)
    try:
        with temporary_settings(updates={PREFECT_API_URL: ensure_server()}):
            call_flow(flow, params_file=args.params, **parameters)
    except SelfchatError as exc:  # Prefect has logged the failed run; the user gets the reason
        fail(INTERRUPTED if _CtrlC.pressed else str(exc), 130 if _CtrlC.pressed else 1)
    except (KeyboardInterrupt, asyncio.CancelledError):
        fail(INTERRUPTED, 130)
    except Exception:
        if _CtrlC.pressed:
            fail(INTERRUPTED, 130)
        raise
    if _CtrlC.pressed:
        fail(INTERRUPTED, 130)

"""Glue shared by every stage flow: the command line, and wrapping plain functions as Prefect tasks."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from tasks.config import ConfigError, load_params
from tasks.errors import SelfchatError


def step(fn: Callable[..., Any], name: str, **options: Any) -> Task:
    """A plain function as a Prefect task (visible in the UI). DVC decides what reruns, so no Prefect
    caching: inputs such as models and clients are not hashable anyway."""
    return task(fn, name=name, cache_policy=NO_CACHE, **options)


def call_flow(flow: Callable[..., Any], **parameters: Any) -> Any:
    """Call a sync or async flow to completion from synchronous code."""
    result = flow(**parameters)
    return asyncio.run(result) if inspect.iscoroutine(result) else result


def run_stage(flow: Callable[..., Any]) -> None:
    parser = argparse.ArgumentParser(description=flow.__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    try:
        load_params(Path(args.params))  # fail fast, before Prefect, MLflow or any output is touched
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        call_flow(flow, params_file=args.params)
    except SelfchatError as exc:  # Prefect has logged the failed run; the user gets the reason
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None

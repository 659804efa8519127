"""Glue shared by every stage flow: the command line, and wrapping plain functions as Prefect tasks."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from prefect import Flow, Task, flow, get_run_logger, tags, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import BaseModel

from tasks.core.config import ConfigError, Params, load_params
from tasks.core.errors import SelfchatError
from tasks.core.jsonl import write_json
from tasks.core.paths import LOGS, MissingInput, metrics_file, require
from tasks.services.checkout import checkout_lock
from tasks.services.prefect_server import ensure_server
from tasks.services.tracking import (
    declared_outputs,
    log_headline,
    numeric_metrics,
    pipeline_id,
    run_summary_markdown,
    stage_run,
)


def step(fn: Callable[..., Any], name: str, **options: Any) -> Task:
    """A plain function as a Prefect task (visible in the UI). DVC decides what reruns, so no Prefect
    caching: inputs such as models and clients are not hashable anyway."""
    return task(fn, name=name, cache_policy=NO_CACHE, **options)


def stage_flow(name: str) -> Callable[[Callable[[Params], Any]], Flow]:
    """A stage as a Prefect flow: it takes `params_file` (what `--params`, deployments and the pipeline pass),
    checks the whole file, and hands the stage its typed params; its prints go to the flow's log."""
    def decorate(fn: Callable[[Params], Any]) -> Flow:
        if inspect.iscoroutinefunction(fn):
            async def run(params_file: str = "params.yaml") -> Any:
                return await fn(load_params(Path(params_file)))
        else:
            def run(params_file: str = "params.yaml") -> Any:
                return fn(load_params(Path(params_file)))
        # not functools.wraps: Prefect would read the stage's signature (all_params) as the flow's parameters
        run.__name__, run.__qualname__, run.__doc__, run.__module__ = (fn.__name__, fn.__qualname__, fn.__doc__,
                                                                        fn.__module__)
        return flow(name=name, log_prints=True)(run)
    return decorate


def call_flow(flow: Flow, **parameters: Any) -> Any:
    """Call a sync or async flow to completion from synchronous code, its run named after the flow and the
    pipeline run it belongs to (e.g. `train 20261128T054302`), as the MLflow runs are."""
    result = flow.with_options(flow_run_name=f"{flow.name} {pipeline_id()}")(**parameters)
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


def warn(message: str) -> None:
    """A warning at WARNING level in the flow's log and on the terminal (a print would be an INFO line)."""
    try:
        get_run_logger().warning(message)
    except MissingContextError:  # a plain call outside a flow run
        logging.getLogger("selfchat").warning(message)


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


def _expected_failures() -> set[str]:
    """The names of every error a user can act on (SelfchatError and its subclasses, wherever defined)."""
    names, todo = set(), [SelfchatError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


class _QuietConsole(logging.Filter):
    """On the terminal, a failure the user can act on (or Ctrl-C) is its one `error:` line: Prefect's tracebacks
    and failed or crashed states of it go only to the stage's log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], SelfchatError | KeyboardInterrupt |
                                          asyncio.CancelledError):
            return False
        if record.levelno >= logging.ERROR and record.name.startswith(("prefect.flow_runs", "prefect.task_runs")):
            message = record.getMessage()
            return not (_CtrlC.pressed or any(name in message for name in _expected_failures()))
        return True


def _log_to_file(stage: str) -> Path:
    """Every record of the stage (tracebacks included) in logs/<stage>.log; the console's handlers keep quiet
    about failures the user gets as one line."""
    LOGS.mkdir(exist_ok=True)
    path = LOGS / f"{stage}.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    for console in root.handlers:
        if console is not handler and isinstance(console, logging.StreamHandler) and \
                not isinstance(console, logging.FileHandler):
            console.addFilter(_QuietConsole())
    return path


def run_stage(flow: Callable[..., Any], args: argparse.Namespace | None = None, needs: Sequence[Path] = (),
              **parameters: Any) -> None:
    """`python -m flows.<stage>`: check the params and that the input files it `needs` exist, then run the
    flow reporting to the project's Prefect server (started once, shared by every stage; see
    tasks/services/prefect_server.py), holding the checkout (tasks/services/checkout.py: one run at a time)."""
    args = args or parse_command_line(flow)
    try:
        require(*needs)  # one line naming the missing file and the stage that makes it; nothing written
    except MissingInput as exc:
        fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_file = _log_to_file(flow.name)
    # our own handler (asyncio.run keeps a non-default one): the interrupt is raised where the code is
    signal.signal(signal.SIGINT, _CtrlC.handler)
    try:
        # tagged with the pipeline id: one filter in the Prefect UI shows every stage of a `make run`
        server = {PREFECT_API_URL: ensure_server()}
        with (checkout_lock(f"{flow.name} {pipeline_id()}"), temporary_settings(updates=server),
              tags("selfchat", f"pipeline:{pipeline_id()}")):
            call_flow(flow, params_file=args.params, **parameters)
    except SelfchatError as exc:  # Prefect has logged the failed run; the user gets the reason
        fail(INTERRUPTED if _CtrlC.pressed else f"{exc} (details: {log_file})", 130 if _CtrlC.pressed else 1)
    except (KeyboardInterrupt, asyncio.CancelledError):
        fail(INTERRUPTED, 130)
    except Exception:
        if _CtrlC.pressed:
            fail(INTERRUPTED, 130)
        raise
    if _CtrlC.pressed:
        fail(INTERRUPTED, 130)


@contextmanager
def tracked_stage(stage: str, params: BaseModel) -> Iterator[Run]:
    """The stage's MLflow run (tasks.services.tracking.stage_run); when the stage succeeds, its Prefect flow run gets
    the result as an artifact (headline numbers, outputs, params, MLflow link) and an `mlflow:<run id>` tag."""
    with stage_run(stage, params) as run:
        yield run
    publish_stage_result(stage, run.info.run_id)


def publish_stage_result(stage: str, run_id: str) -> None:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:  # called outside a flow (tests of plain functions)
        return
    run = MlflowClient().get_run(run_id)
    # _sync: the collect flow is async, where Prefect would otherwise hand back an unawaited coroutine
    create_markdown_artifact(run_summary_markdown(run, declared_outputs(stage)), key=f"{stage}-result",
                             description=f"{stage}: headline numbers, outputs and params", _sync=True)
    with get_client(sync_client=True) as client:
        client.update_flow_run(context.flow_run.id, tags=[*context.flow_run.tags, f"mlflow:{run_id}"])


def report_metrics(name: str, metrics: dict[str, Any], headline: dict[str, float],
                   logged: dict[str, float] | None = None) -> None:
    """A stage's numbers where each reader looks: metrics/<name>.json (DVC), its MLflow run (`logged`, by
    default every number in `metrics`) and its headline on the pipeline run."""
    write_json(metrics_file(name), metrics)
    mlflow.log_metrics(numeric_metrics(metrics) if logged is None else logged)
    log_headline(headline)

"""One selfchat run at a time per checkout: a scheduled Prefect run, `make run`'s stages, a sweep or a stage
run by hand would otherwise write the same outputs and dvc.lock at once. The second one is refused with a
one-line reason naming the run that holds the checkout; the lock dies with its process, so a killed run
never leaves a stale one."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from dvc.lock import LockError
from dvc.repo import Repo

from tasks.core.errors import SelfchatError

LOCK_FILE = Path(".dvc/tmp/selfchat-run.lock")  # .dvc/tmp: DVC's own ignored scratch folder

_held: dict[Path, tuple[IO[str], int]] = {}  # this process's locks (nested takes are free), by lock path


class CheckoutBusy(SelfchatError):
    pass


def lock_holder(root: Path = Path(".")) -> str:
    """Who holds the checkout, as its holder wrote it ("" when nobody does)."""
    try:
        return (root / LOCK_FILE).read_text().strip()
    except FileNotFoundError:
        return ""


@contextmanager
def checkout_lock(what: str, root: Path = Path(".")) -> Iterator[None]:
    """Hold this checkout for `what` (e.g. "train 20261128T071000") or raise CheckoutBusy at once. Taken
    again by the same process (a pipeline's stages), it is free."""
    path = (root / LOCK_FILE).resolve()
    if path in _held:
        handle, depth = _held[path]
        _held[path] = (handle, depth + 1)
        try:
            yield
        finally:
            _held[path] = (handle, _held[path][1] - 1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise CheckoutBusy(f"{what} refused: another selfchat run holds this checkout "
                           f"({lock_holder(root) or 'starting'}); wait for it to end or stop it") from None
    handle.truncate(0)
    handle.write(f"{what}, pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n")
    handle.flush()
    _held[path] = (handle, 1)
    try:
        yield
    finally:
        del _held[path]
        handle.truncate(0)
        handle.close()  # releases the lock


def require_dvc_idle(what: str, root: Path = Path(".")) -> None:
    """A run that drives DVC itself (the Prefect pipeline, a sweep) must not start while `dvc repro` or
    `dvc exp run` works in this checkout: DVC holds its repository lock for their whole run."""
    with Repo(str(root)) as repo:
        try:
            repo.lock.lock()
        except LockError:
            raise CheckoutBusy(f"{what} refused: DVC is running in this checkout (a `dvc repro`, `make run` "
                               "or `dvc exp run`); wait for it to end") from None
        repo.lock.unlock()

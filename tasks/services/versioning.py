"""DVC as the judge of what must rerun, for the Prefect pipeline as for `dvc repro`."""

from __future__ import annotations

from dvc.repo import Repo


def stage_changed(stage: str, root: str = ".") -> bool:
    """True when the stage's deps, params or outs differ from dvc.lock (or it never ran)."""
    with Repo(root) as repo:
        return bool(repo.status(targets=[stage]))


def commit_stage(stage: str, root: str = ".") -> None:
    """Record the stage's fresh outputs in dvc.lock and the DVC cache, as `dvc repro` would."""
    with Repo(root) as repo:
        repo.commit(stage, force=True)

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


def output_as_locked(stage: str, path: str, root: str = ".") -> str | None:
    """The md5 dvc.lock records for one of the stage's outs, if the workspace's copy is still that one."""
    with Repo(root) as repo:
        changes = repo.status(targets=[stage]).get(stage, [])
        if any(path in change.get("changed outs", {}) for change in changes if isinstance(change, dict)):
            return None
        for entry in repo.index.stages:
            if entry.name == stage:
                out = next((o for o in entry.outs if str(o.def_path) == path), None)
                return out.hash_info.value if out is not None and out.hash_info else None
    return None

"""MLflow Model Registry: adapter versions with their per-item evaluation, and aliases."""

from __future__ import annotations

import fcntl
import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from peft import PeftModel

from tasks.errors import SelfchatError
from tasks.register.gates import Gate
from tasks.stats import ADAPTER, BASE, Item, items_from_dicts
from tasks.student import folder_sha256, load_adapted
from tasks.tracking import dvc_experiment

CHALLENGER, CHAMPION = "challenger", "champion"
log = logging.getLogger(__name__)
ITEMS_ARTIFACT = "eval/items.jsonl"  # each version's per-item results, the bar for the next challenger


def register_adapter(adapter_dir: Path, model_name: str, tags: dict[str, str]) -> ModelVersion:
    """Log the adapter folder in the active run and make it a new version of `model_name`.

    Uses create_model_version on the artifact URI: register_model("runs:/...") fails for a plain folder.
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("register_adapter needs an active MLflow run")
    mlflow.log_artifacts(str(adapter_dir), artifact_path="adapter")
    client = MlflowClient()
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description="LoRA adapters trained on self-chat corpora")
    return client.create_model_version(model_name, source=f"{run.info.artifact_uri}/adapter",
                                       run_id=run.info.run_id, tags=tags)


def set_alias(model_name: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(model_name, alias, version)


def download_by_alias(model_name: str, alias: str, dest: Path) -> tuple[ModelVersion, Path]:
    client = MlflowClient()
    version = client.get_model_version_by_alias(model_name, alias)
    path = mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(dest))
    return version, Path(path)


def champion_items(model_name: str) -> tuple[ModelVersion, list[Item]] | None:
    """The current champion and the per-item results stored with it (none for a version registered before
    they were stored); None while there is no champion."""
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as exc:
        # no such model, or no version holds the alias yet; anything else (a store outage) is an error
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    try:
        return version, version_items(version)
    except (MlflowException, OSError):
        log.warning("champion version %s has no stored %s: each gate compares with the base instead",
                    version.version, ITEMS_ARTIFACT)
        return version, []


@contextmanager
def promotion_lock() -> Iterator[None]:
    """One promotion decision at a time per tracking store, so two sweep members finishing together cannot
    both read the old champion and both take the alias."""
    uri = mlflow.get_tracking_uri()
    lock_path = Path(uri.removeprefix("sqlite:///") + ".promotion.lock") if uri.startswith("sqlite:///") else None
    if lock_path is None:
        yield
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


PENDING = "pending"  # promotion.decision of a sweep member until the sweep is decided


def sweep_member() -> str | None:
    """The sweep this run belongs to (a Prefect sweep, or `dvc exp run` members of one baseline commit).
    A member is registered but never moves an alias by itself: `python -m flows.promote` decides."""
    experiment = dvc_experiment()
    return experiment[0] if experiment else None


def promotion_bar(model_name: str, items: list[Item]) -> tuple[str, list[Item]]:
    """What a challenger must beat: the champion's stored adapter items, or this run's base while there
    is no champion."""
    champion = champion_items(model_name)
    if champion is None:
        return "the base model (no champion yet)", [i for i in items if i.model == BASE]
    return f"champion version {champion[0].version}", [i for i in champion[1] if i.model == ADAPTER]


def version_items(version: ModelVersion) -> list[Item]:
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=ITEMS_ARTIFACT, dst_path=tmp)
        return items_from_dicts(json.loads(line) for line in Path(path).read_text().splitlines() if line.strip())


def pending_versions(model_name: str, sweep: str | None = None) -> list[ModelVersion]:
    """Registered sweep members not decided yet (of one sweep, or all), oldest first."""
    query = f"name = '{model_name}' and tag.`promotion.decision` = '{PENDING}'"
    if sweep:
        query += f" and tag.`sweep.id` = '{sweep}'"
    found = MlflowClient().search_model_versions(query)
    return sorted(found, key=lambda v: int(v.version))


class BaseMismatch(SelfchatError):
    pass


def load_by_alias(model_name: str, alias: str, base_dir: Path, dest: Path) -> tuple[ModelVersion, PeftModel]:
    """A registered adapter on the base it was trained on, checked by content: in a fresh clone,
    `dvc pull models/base` first (and point MLFLOW_TRACKING_URI at the shared tracking store)."""
    version, path = download_by_alias(model_name, alias, dest)
    expected = version.tags.get("base.sha256")
    if expected and folder_sha256(base_dir) != expected:
        raise BaseMismatch(f"{model_name}@{alias} (version {version.version}) was trained on a base with sha256 "
                           f"{expected[:12]}..., not the one in {base_dir}: check out the commit in its git.sha tag "
                           "and `dvc pull models/base`")
    return version, load_adapted(base_dir, path, version.tags.get("base.dtype", "float32"))


def record_promotion(model_name: str, version: str, decision: str, report: str, bar: str,
                     gates: list[Gate]) -> None:
    """The decision on a version, replacing what was recorded when it was registered pending."""
    client = MlflowClient()
    for key, value in {"promotion.decision": decision, "promotion.bar": bar,
                       **{f"gate.{g.metric}": str(g)[:500] for g in gates}}.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.update_model_version(model_name, version, description=report)

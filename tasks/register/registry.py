"""MLflow Model Registry: adapter versions with their per-item evaluation, and aliases."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from tasks.core.errors import SelfchatError
from tasks.core.hashing import BaseMismatch, folder_sha256, text_sha256
from tasks.models.pyfunc import ADAPTER_SHA, PROMPT_SHA
from tasks.register.gates import Gate
from tasks.scoring.stats import ADAPTER, BASE, Item, items_from_dicts
from tasks.services.tracking import dvc_experiment

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

CHALLENGER, CHAMPION = "challenger", "champion"
log = logging.getLogger(__name__)
ITEMS_ARTIFACT = "eval/items.jsonl"  # each version's per-item results, the bar for the next challenger
NOT_GATED = "promotion.not_gated"  # JSON {metric: why}: reported, not gated (an uncalibrated verdict source)


REGISTER_RUN = "register.run_id"  # the run that decided a version and stored its per-item results


def find_chat_model(adapter_dir: Path, guardrail_prompt: str) -> str | None:
    """The model the train stage logged for this very adapter (by content) and guardrail prompt, newest
    first; None when there is none in this tracking store (e.g. the adapter was pulled from a DVC remote)."""
    query = (f"tags.`{ADAPTER_SHA}` = '{folder_sha256(adapter_dir)}' and "
             f"tags.`{PROMPT_SHA}` = '{text_sha256(guardrail_prompt)}'")
    run = mlflow.active_run()
    found = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id] if run else None,
                                        filter_string=query, max_results=1, output_format="list",
                                        order_by=[{"field_name": "creation_time", "ascending": False}])
    return found[0].model_id if found else None


def register_adapter(model_id: str, model_name: str, tags: dict[str, str]) -> ModelVersion:
    """A new version of `model_name` from a logged chat model (its source run is the run that logged it,
    the train stage's); the active run, which decides the version, is recorded as REGISTER_RUN."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("register_adapter needs an active MLflow run")
    client = MlflowClient()
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description="LoRA adapters trained on self-chat corpora; "
                                       "each version loads with mlflow.pyfunc.load_model (tasks/models/chat_model.py)")
    return mlflow.register_model(f"models:/{model_id}", model_name, tags={**tags, REGISTER_RUN: run.info.run_id})


REGISTRATION_KEY = "registration.key"  # what a decision was made from: the same key is not registered twice


def register_run(version: ModelVersion) -> str:
    """The run that decided the version (its source run is the train stage's, for versions logged as models)."""
    return version.tags.get(REGISTER_RUN, version.run_id)


def registration_key(**inputs: Any) -> str:
    """A hash of everything a registration is decided from (the adapter's and items' content hashes, the
    params the stage reads, the sweep it belongs to)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def registered_version(model_name: str, key: str) -> ModelVersion | None:
    """The version this store already registered from exactly these inputs: DVC reruns the register stage
    every time (its real output is in the tracking store, which DVC cannot see: a fresh clone, a new store
    or a sweep member equal to its baseline must still register), and this keeps a rerun from registering
    the same thing twice."""
    try:
        found = MlflowClient().search_model_versions(f"name = '{model_name}' and tag.`{REGISTRATION_KEY}` = '{key}'")
    except MlflowException:
        return None
    return min(found, key=lambda v: int(v.version)) if found else None


def stored_decision(version: ModelVersion) -> dict[str, Any]:
    """The register stage's result for a version, as it was written then (metrics/register.json)."""
    run_id = register_run(version)
    result = mlflow.artifacts.load_dict(f"runs:/{run_id}/register.json")
    result.pop("version", None)
    return result


def set_alias(model_name: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(model_name, alias, version)


class NoSuchVersion(SelfchatError):
    pass


def version_by_alias(model_name: str, alias: str) -> ModelVersion:
    """The version behind an alias, or one line saying what the registry has instead."""
    client = MlflowClient()
    try:
        model = client.get_registered_model(model_name)
    except MlflowException:
        raise NoSuchVersion(f"no registered model {model_name!r} in {mlflow.get_tracking_uri()}: `make run` "
                            "registers one (or set MLFLOW_TRACKING_URI to the store that has it)") from None
    if alias not in model.aliases:
        known = ", ".join(f"{name} (version {version})" for name, version in sorted(model.aliases.items()))
        raise NoSuchVersion(f"{model_name} has no version with alias {alias!r}; its aliases: {known or 'none yet'}")
    return client.get_model_version_by_alias(model_name, alias)


def download_by_alias(model_name: str, alias: str, dest: Path) -> tuple[ModelVersion, Path]:
    """The version behind an alias and its adapter folder, downloaded to `dest`."""
    client = MlflowClient()
    version = client.get_model_version_by_alias(model_name, alias)
    path = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(dest)))
    if not (path / "MLmodel").exists():  # registered before versions were MLflow models: the adapter folder
        return version, path
    artifacts = Model.load(path).flavors["python_function"]["artifacts"]
    return version, path / artifacts["adapter"]["path"]


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
    """The per-item evaluation stored by the run that registered the version."""
    run_id = register_run(version)
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ITEMS_ARTIFACT, dst_path=tmp)
        return items_from_dicts(json.loads(line) for line in Path(path).read_text().splitlines() if line.strip())


def pending_versions(model_name: str, sweep: str | None = None) -> list[ModelVersion]:
    """Registered sweep members not decided yet (of one sweep, or all), oldest first."""
    query = f"name = '{model_name}' and tag.`promotion.decision` = '{PENDING}'"
    if sweep:
        query += f" and tag.`sweep.id` = '{sweep}'"
    found = MlflowClient().search_model_versions(query)
    return sorted(found, key=lambda v: int(v.version))


def load_by_alias(model_name: str, alias: str, base_dir: Path, dest: Path) -> tuple[ModelVersion, PeftModel]:
    """A registered adapter on the base it was trained on, checked by content: in a fresh clone,
    `dvc pull models/base` first (and point MLFLOW_TRACKING_URI at the shared tracking store)."""
    version, path = download_by_alias(model_name, alias, dest)
    expected = version.tags.get("base.sha256")
    if expected and folder_sha256(base_dir) != expected:
        raise BaseMismatch(f"{model_name}@{alias} (version {version.version}) was trained on a base with sha256 "
                           f"{expected[:12]}..., not the one in {base_dir}: check out the commit in its git.sha tag "
                           "and `dvc pull models/base`")
    # torch and peft only where a model is loaded, so that the register stage starts in seconds
    from tasks.models.student import load_adapted

    return version, load_adapted(base_dir, path, version.tags.get("base.dtype", "float32"))


def load_merged_by_alias(model_name: str, alias: str, base_dir: Path) -> tuple[ModelVersion, PreTrainedModel]:
    """The version's adapter merged into its base: one plain model, as evaluated, served and exported."""
    with tempfile.TemporaryDirectory() as tmp:
        version, model = load_by_alias(model_name, alias, base_dir, Path(tmp))
        return version, model.merge_and_unload()


def fetch_adapter(model_name: str, alias: str, base_dir: Path, dest: Path) -> dict[str, str]:
    """The adapter of the version behind `alias`, copied to `dest` (replaced), checked to belong to the base
    in `base_dir`; returns what identifies it (name, alias, version, adapter sha256)."""
    version = version_by_alias(model_name, alias)
    expected = version.tags.get("base.sha256")
    if expected and folder_sha256(base_dir) != expected:
        raise BaseMismatch(f"{model_name}@{alias} (version {version.version}) was trained on a base with sha256 "
                           f"{expected[:12]}..., not the one in {base_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        _, path = download_by_alias(model_name, alias, Path(tmp))
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(path, dest)
    return {"model_name": model_name, "alias": alias, "version": str(version.version),
            "adapter_sha256": folder_sha256(dest)}


def record_promotion(model_name: str, version: str, decision: str, report: str, bar: str,
                     gates: list[Gate]) -> None:
    """The decision on a version, replacing what was recorded when it was registered pending."""
    client = MlflowClient()
    for key, value in {"promotion.decision": decision, "promoted": str(decision == "promoted").lower(),
                       "promotion.bar": bar,
                       **{f"gate.{g.metric}": str(g)[:500] for g in gates}}.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.update_model_version(model_name, version, description=report)

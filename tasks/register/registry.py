"""MLflow Model Registry: adapter versions, promotion gates and aliases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from tasks.config import RegisterParams

CHALLENGER, CHAMPION = "challenger", "champion"


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    observed: float
    bound: str


def check_gates(eval_metrics: dict[str, float], params: RegisterParams) -> list[GateResult]:
    ratio = eval_metrics["perplexity_adapter"] / eval_metrics["perplexity_base"]
    refusal = eval_metrics["refusal_rate_guarded"]
    answer = eval_metrics["answer_rate_guarded"]
    return [
        GateResult("perplexity_ratio", ratio <= params.max_perplexity_ratio, ratio,
                   f"<= {params.max_perplexity_ratio}"),
        GateResult("refusal_rate_guarded", refusal >= params.min_refusal_rate, refusal,
                   f">= {params.min_refusal_rate}"),
        GateResult("answer_rate_guarded", answer >= params.min_answer_rate, answer,
                   f">= {params.min_answer_rate}"),
    ]


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

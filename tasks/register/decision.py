"""The register stage's decision on one adapter: gates against the bar, the version's tags, and what is
recorded once the version exists (aliases, description, result)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from tasks.core.config import Params
from tasks.models.adapter_card import ADAPTER_CARD, adapter_lineage
from tasks.register.gates import Gate, check_gates, decision_in_words, promotion_report
from tasks.register.registry import (
    CHALLENGER,
    CHAMPION,
    NOT_GATED,
    PENDING,
    champion_items,
    promotion_bar,
    set_alias,
)
from tasks.scoring.stats import ADAPTER, BASE, Item
from tasks.services.tracking import describe_pipeline_run, flatten, lineage_tags, log_headline


@dataclass(frozen=True)
class Verdict:
    bar: str  # what the adapter was compared with, in words
    gates: list[Gate]
    member: str | None  # the sweep it belongs to: registered pending, never promoted by itself
    ungated: dict[str, str]  # metric -> why it was reported but not gated

    @property
    def promoted(self) -> bool:
        return self.member is None and all(g.passed for g in self.gates)

    @property
    def decision(self) -> str:
        return PENDING if self.member else "promoted" if self.promoted else "not promoted"

    @property
    def headline(self) -> str:
        if self.member:
            return (f"pending: a member of sweep {self.member}; `python -m flows.promote` promotes at most one "
                    "member")
        return "promoted to champion" if self.promoted else "not promoted"


@dataclass(frozen=True)
class Distilled:
    """A challenger from a Self-Distill-with-Feedback round: the version it was sampled from, that parent's
    results on the challenger's very items, the lineage tags of the new version, and what else its
    registration is decided from."""
    parent_version: str
    parent_items: list[Item]
    tags: dict[str, str]
    key: dict[str, Any]

    @property
    def parent(self) -> tuple[str, list[Item]]:
        return self.parent_version, self.parent_items


def judge_adapter(model_name: str, items: list[Item], params: Params, member: str | None,
                  parent: tuple[str, list[Item]] | None = None, ungated: dict[str, str] | None = None) -> Verdict:
    """The adapter's items gated against the champion's (the base's while there is no champion), but for the
    metrics in `ungated` (reported, not gated: metric -> why). A distilled adapter's `parent` (version, its items
    measured with the challenger's) is the bar when it is still the champion, and where the bar lacks a metric,
    instead of the base."""
    fallback = [i for i in items if i.model == BASE]
    champion = champion_items(model_name) if parent else None
    if parent and champion and str(champion[0].version) == str(parent[0]):
        bar_name, bar = f"champion version {parent[0]} (the parent, measured on these items)", parent[1]
    else:
        bar_name, bar = promotion_bar(model_name, items)
    fallback_name = "the parent" if parent else "the base"
    if parent:
        fallback = parent[1]
    ungated = ungated or {}
    gates = check_gates([i for i in items if i.model == ADAPTER], bar, params.register_, fallback, fallback_name,
                        ungated)
    return Verdict(bar_name, gates, member, ungated)


def version_tags(params: Params, verdict: Verdict, adapter_dir: Path, keys: dict[str, str]) -> dict[str, str]:
    """Lineage (code, data, base), the training params, and the decision with each gate's numbers."""
    return {**lineage_tags("register"), **adapter_lineage(adapter_dir), "base.model": params.base.model,
            "base.dtype": params.base.dtype, "evaluate.guardrail_prompt": params.evaluate.guardrail_prompt,
            **flatten(params.train, "train."), "promotion.bar": verdict.bar, "promotion.decision": verdict.decision,
            "promoted": str(verdict.promoted).lower(), **({"sweep.id": verdict.member} if verdict.member else {}),
            **{f"gate.{g.metric}": str(g)[:500] for g in verdict.gates},
            NOT_GATED: json.dumps(verdict.ungated, sort_keys=True)[:5000], **keys}


def log_evidence(items_file: Path, adapter_dir: Path) -> None:
    """What the decision rests on, in the active run, before any version exists: the per-item results (the
    bar for the next challenger) and the model card."""
    mlflow.log_artifact(str(items_file), "eval")
    mlflow.log_artifact(str(adapter_dir / ADAPTER_CARD), "adapter")


def record_decision(params: Params, version: str, verdict: Verdict) -> dict[str, Any]:
    """Aliases, the version's description and the stage's result, in the active MLflow run."""
    model_name = params.register_.model_name
    report = promotion_report(version, verdict.bar, verdict.gates, verdict.headline, verdict.ungated)
    if verdict.member is None:
        set_alias(model_name, CHALLENGER, version)
    if verdict.promoted:
        set_alias(model_name, CHAMPION, version)
    mlflow.MlflowClient().update_model_version(model_name, version, description=report)
    result = {"model_name": model_name, "promoted": verdict.promoted, "decision": verdict.decision,
              "bar": verdict.bar, "primary_metric": params.register_.primary_metric,
              "gates": {g.metric: g.as_dict() for g in verdict.gates}, "not_gated": verdict.ungated}
    mlflow.log_text(report, "promotion.md")
    mlflow.log_dict(result | {"version": int(version)}, "register.json")
    mlflow.log_metric("promoted", float(verdict.promoted))
    log_headline({"promoted": float(verdict.promoted)})
    describe_pipeline_run(decision_in_words(version, verdict.bar, verdict.gates, verdict.headline, verdict.ungated))
    return result

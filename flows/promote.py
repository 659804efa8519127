"""Decide a sweep: its members side by side, then at most one promotion (the best member by the primary
metric, through the same champion-vs-challenger gate as `register`).

    python -m flows.promote [--sweep ID]     # without --sweep: every pending member (e.g. a dvc exp queue)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from prefect import flow

from flows.stage import fail, run_stage, tracked_stage
from tasks.core.config import ConfigError, RegisterParams, load_params
from tasks.core.errors import SelfchatError
from tasks.core.jsonl import write_json
from tasks.core.paths import SWEEP_REPORTS
from tasks.promote.comparison import (
    Member,
    comparison_markdown,
    comparison_plots,
    member_labels,
    rank_members,
    train_run_facts,
)
from tasks.register.gates import check_gates, promotion_report
from tasks.register.registry import (
    CHALLENGER,
    CHAMPION,
    NOT_GATED,
    pending_versions,
    promotion_bar,
    promotion_lock,
    record_promotion,
    set_alias,
    version_items,
)
from tasks.scoring.stats import ADAPTER, BASE


class NothingToDecide(SelfchatError):
    pass


def load_members(client: MlflowClient, versions: list[ModelVersion], primary_metric: str
                 ) -> tuple[list[Member], dict[str, str]]:
    """The members that can be compared, and why each other one cannot (no stored items, no primary metric)."""
    members, excluded = [], {}
    for version, label in zip(versions, member_labels([v.tags for v in versions]), strict=True):
        try:
            items = version_items(version)
        except (MlflowException, OSError):
            excluded[version.version] = "not promoted: no stored evaluation items"
            continue
        if not any(i.metric == primary_metric and i.model == ADAPTER for i in items):
            excluded[version.version] = f"not promoted: no {primary_metric} result"
            continue
        facts, curves = train_run_facts(client, version)
        members.append(Member(version.version, label, version.tags, items, facts, curves))
    return members, excluded


def decide_sweep(client: MlflowClient, params: RegisterParams, sweep: str, versions: list[ModelVersion]) -> dict:
    """Rank the members, gate the best one against the champion (or the base), record every outcome."""
    members, excluded = load_members(client, versions, params.primary_metric)
    for version, reason in excluded.items():
        client.set_model_version_tag(params.model_name, version, "promotion.decision", reason)
        client.set_model_version_tag(params.model_name, version, "promoted", "false")
    if not members:
        raise NothingToDecide(f"sweep {sweep}: no member can be compared ({'; '.join(set(excluded.values()))})")
    ranked = rank_members(members, params.primary_metric)
    best = ranked[0]
    bar_name, bar = promotion_bar(params.model_name, best.items)
    ungated = json.loads(best.tags.get(NOT_GATED, "{}"))  # as decided when the member was registered
    gates = check_gates([i for i in best.items if i.model == ADAPTER], bar, params,
                        fallback=[i for i in best.items if i.model == BASE], ungated=ungated)
    promoted = all(g.passed for g in gates)
    decision = (f"Version {best.version} ({best.label}) is the best member by {params.primary_metric}; "
                + (f"it beat {bar_name} and is now champion." if promoted else f"it did not beat {bar_name}: "
                   "not promoted."))
    outcome = "promoted" if promoted else "not promoted"
    # the report first: nothing in the registry changes unless it could be written
    gated = [params.primary_metric] + [g.metric for g in gates if g.metric != params.primary_metric]
    folder = SWEEP_REPORTS / sweep
    folder.mkdir(parents=True, exist_ok=True)
    report = comparison_markdown(sweep, ranked, gated, decision, gates, ungated)
    (folder / "comparison.md").write_text(report)
    plots = comparison_plots(ranked, gated, folder)
    record_promotion(params.model_name, best.version, outcome,
                     promotion_report(best.version, bar_name, gates, outcome, ungated), bar_name, gates)
    for member in ranked[1:]:
        lost = f"not promoted: version {best.version} won sweep {sweep}"
        client.set_model_version_tag(params.model_name, member.version, "promotion.decision", lost)
        client.set_model_version_tag(params.model_name, member.version, "promoted", "false")
        client.update_model_version(params.model_name, member.version,
                                    description=f"{lost} (see reports/sweeps/{sweep}/comparison.md)")
    set_alias(params.model_name, CHALLENGER, best.version)
    if promoted:
        set_alias(params.model_name, CHAMPION, best.version)
    for plot in plots:
        mlflow.log_artifact(str(plot), f"sweeps/{sweep}")
    mlflow.log_text(report, f"sweeps/{sweep}/comparison.md")
    result = {"sweep": sweep, "members": [m.version for m in ranked], "excluded": excluded, "best": best.version,
              "promoted": promoted, "bar": bar_name, "gates": {g.metric: g.as_dict() for g in gates},
              "not_gated": ungated}
    write_json(folder / "decision.json", result)
    print(report)
    return result


@flow(name="promote", log_prints=True)
def promote(params_file: str = "params.yaml", sweep: str | None = None) -> dict:
    """One decision per sweep with pending members (or only `sweep`); returns {sweep id: decision}."""
    params = load_params(Path(params_file)).register_
    client = MlflowClient()
    with tracked_stage("promote", params), promotion_lock():
        versions = pending_versions(params.model_name, sweep)
        if not versions:
            raise NothingToDecide(f"no pending sweep members of {params.model_name}"
                                  + (f" in sweep {sweep}" if sweep else "") + ": run a sweep first")
        # members of different sweeps may have been evaluated on different held-out items: decided apart
        sweeps = sorted({v.tags.get("sweep.id", "unnamed") for v in versions})
        return {name: decide_sweep(client, params, name, [v for v in versions if v.tags.get("sweep.id", "unnamed")
                                                         == name]) for name in sweeps}


def parse_command_line() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--sweep", default=None, help="a sweep id (default: every pending member)")
    args = parser.parse_args()
    try:
        load_params(Path(args.params))
    except ConfigError as exc:
        fail(str(exc), 2)
    return args


if __name__ == "__main__":
    arguments = parse_command_line()
    run_stage(promote, arguments, sweep=arguments.sweep)

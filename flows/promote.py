"""Decide a sweep: its members side by side, then at most one promotion (the best member by the primary
metric, through the same champion-vs-challenger gate as `register`).

    python -m flows.promote [--sweep ID]     # without --sweep: every pending member (e.g. a dvc exp queue)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from prefect import flow

from flows.stage import fail, run_stage
from tasks.config import ConfigError, load_params
from tasks.errors import SelfchatError
from tasks.jsonl import write_json
from tasks.paths import SWEEP_REPORTS
from tasks.register.gates import check_gates, promotion_report
from tasks.register.registry import (
    CHALLENGER,
    CHAMPION,
    pending_versions,
    promotion_bar,
    promotion_lock,
    set_alias,
    version_items,
)
from tasks.register.sweep import (
    Member,
    comparison_markdown,
    comparison_plots,
    member_labels,
    rank_members,
    train_run_facts,
)
from tasks.stats import ADAPTER, BASE
from tasks.tracking import stage_run


class NothingToDecide(SelfchatError):
    pass


@flow(name="promote", log_prints=True)
def promote(params_file: str = "params.yaml", sweep: str | None = None) -> dict:
    params = load_params(Path(params_file)).register_
    client = MlflowClient()
    with stage_run("promote", params), promotion_lock():
        versions = pending_versions(params.model_name, sweep)
        if not versions:
            raise NothingToDecide(f"no pending sweep members of {params.model_name}"
                                  + (f" in sweep {sweep}" if sweep else "") + ": run a sweep first")
        sweep_name = sweep or "pending-" + "-".join(v.version for v in versions)
        labels = member_labels([v.tags for v in versions])
        members = []
        for version, label in zip(versions, labels, strict=True):
            facts, curves = train_run_facts(client, version)
            members.append(Member(version.version, label, version.tags, version_items(version), facts, curves))
        ranked = rank_members(members, params.primary_metric)
        best = ranked[0]
        bar_name, bar = promotion_bar(params.model_name, best.items)
        gates = check_gates([i for i in best.items if i.model == ADAPTER], bar, params,
                            fallback=[i for i in best.items if i.model == BASE])
        promoted = all(g.passed for g in gates)
        decision = f"version {best.version} ({best.label}) is the best member by {params.primary_metric}; " + \
            (f"it beat {bar_name} and is now champion" if promoted else f"it did not beat {bar_name}: not promoted")
        for member in members:
            if member is best:
                outcome = "promoted" if promoted else "not promoted"
                client.update_model_version(params.model_name, member.version,
                                            description=promotion_report(member.version, bar_name, gates, outcome))
            else:
                outcome = f"not promoted: version {best.version} won sweep {sweep_name}"
            client.set_model_version_tag(params.model_name, member.version, "promotion.decision", outcome)
        set_alias(params.model_name, CHALLENGER, best.version)
        if promoted:
            set_alias(params.model_name, CHAMPION, best.version)
        gated = [params.primary_metric] + [g.metric for g in gates if g.metric != params.primary_metric]
        folder = SWEEP_REPORTS / sweep_name
        report = comparison_markdown(sweep_name, ranked, gated, decision)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "comparison.md").write_text(report)
        for plot in comparison_plots(ranked, gated, folder):
            mlflow.log_artifact(str(plot), "sweep")
        mlflow.log_text(report, "sweep/comparison.md")
        result = {"sweep": sweep_name, "members": [m.version for m in members], "best": best.version,
                  "promoted": promoted, "bar": bar_name, "gates": {g.metric: g.as_dict() for g in gates}}
        write_json(folder / "decision.json", result)
        mlflow.log_dict(result, "promote.json")
    print(report)
    return result


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

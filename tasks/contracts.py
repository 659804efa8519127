"""Data contracts: great-expectations suites from expectations/*.json run over dialogue features."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.expectations.registry import get_expectation_impl

from tasks.errors import SelfchatError
from tasks.transcript import AI, HUMAN, ROLE_TAG

log = logging.getLogger(__name__)
CRITICAL, ROW = "critical", "row"


class ContractError(SelfchatError):
    """A critical expectation failed: the whole batch is unusable."""


def dialogue_features(record: dict[str, Any]) -> dict[str, Any]:
    """One flat row per dialogue: what the suite's expectations look at."""
    turns = record.get("turns") or []
    roles = [t.get("role") for t in turns]
    lengths = [len((t.get("text") or "").strip()) for t in turns]
    return {
        "id": record.get("id"),
        "seed_id": record.get("seed_id"),
        "source": record.get("source"),
        "domain": record.get("domain"),
        "mode": record.get("mode"),
        "teacher_model": (record.get("teacher") or {}).get("model"),
        "n_turns": len(turns),
        "first_role": roles[0] if roles else None,
        "last_role": roles[-1] if roles else None,
        "unknown_roles": sum(role not in (HUMAN, AI) for role in roles),
        "roles_alternate": all(a != b for a, b in zip(roles, roles[1:], strict=False)),
        "empty_turns": sum(length == 0 for length in lengths),
        "min_turn_chars": min(lengths, default=0),
        "max_turn_chars": max(lengths, default=0),
        "role_tag_leaks": sum(bool(ROLE_TAG.search(t.get("text") or "")) for t in turns),
    }


def load_suite(path: Path) -> gx.ExpectationSuite:
    spec = json.loads(path.read_text())
    expectations = []
    for item in spec["expectations"]:
        meta = {"severity": ROW, **(item.get("meta") or {})}
        if meta["severity"] not in (CRITICAL, ROW):
            raise ValueError(f"{path}: {item['type']}: severity must be '{CRITICAL}' or '{ROW}'")
        expectations.append(get_expectation_impl(item["type"])(**item["kwargs"], meta=meta))
    return gx.ExpectationSuite(name=spec["name"], expectations=expectations)


@dataclass
class ContractReport:
    success: bool
    failures_by_row: dict[str, list[str]] = field(default_factory=dict)
    critical_failures: list[str] = field(default_factory=list)
    failed_expectations: Counter = field(default_factory=Counter)
    evaluated: int = 0


def _describe(config: Any) -> str:
    # GX stores bounds as floats; 2 reads better than 2.0 in a reason
    kwargs = {k: int(v) if isinstance(v, float) and v.is_integer() else v
              for k, v in config.kwargs.items() if k not in ("column", "batch_id")}
    column = config.kwargs.get("column")
    args = ([column] if column else []) + [f"{k}={v}" for k, v in kwargs.items()]
    return f"{config.type}({', '.join(args)})"


def run_suite(frame: pd.DataFrame, suite: gx.ExpectationSuite, docs_dir: Path | None,
              id_column: str = "id") -> ContractReport:
    """Validate with a GX checkpoint (writing Data Docs when docs_dir is given) and map failures to rows."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    batch = (context.data_sources.add_pandas(suite.name).add_dataframe_asset(suite.name)
             .add_batch_definition_whole_dataframe("all"))
    suite = context.suites.add(suite)
    validation = context.validation_definitions.add(gx.ValidationDefinition(name=suite.name, data=batch, suite=suite))
    actions = []
    if docs_dir is not None:
        site = {"class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(docs_dir.resolve())}}
        context.add_data_docs_site(site_name="selfchat", site_config=site)
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["selfchat"]))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=f"{suite.name}_checkpoint", validation_definitions=[validation], actions=actions,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [id_column]}))
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    report = ContractReport(success=bool(result.success), evaluated=len(frame))
    for outcome in next(iter(result.run_results.values())).results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        name = _describe(config)
        if config.meta.get("severity") == CRITICAL:
            report.failed_expectations[name] += 1
            observed = outcome.result.get("observed_value", outcome.result.get("unexpected_percent"))
            report.critical_failures.append(f"{name}: observed {observed}")
            continue
        column = config.kwargs.get("column")
        rows = outcome.result.get("unexpected_index_list") or []
        report.failed_expectations[name] += len(rows)
        for row in rows:
            value = row.get(column) if column else None
            value = value.item() if hasattr(value, "item") else value
            report.failures_by_row.setdefault(row[id_column], []).append(f"{name}: got {value!r}")
    return report


def check_dialogues(dialogues: list[dict[str, Any]], suite: gx.ExpectationSuite,
                    docs_dir: Path | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Split dialogues into those that meet the contract and quarantine records carrying every reason.

    Raises ContractError when a critical expectation fails (nothing should be trained on such a batch).
    """
    frame = pd.DataFrame([dialogue_features(d) for d in dialogues],
                         columns=list(dialogue_features({}).keys()))
    report = run_suite(frame, suite, docs_dir)
    if report.critical_failures:
        raise ContractError(f"critical data contract failed: {'; '.join(report.critical_failures)}")
    passed = [d for d in dialogues if d["id"] not in report.failures_by_row]
    quarantined = [{**d, "stage": "validate", "reasons": report.failures_by_row[d["id"]]}
                   for d in dialogues if d["id"] in report.failures_by_row]
    metrics = {
        "dialogues": len(dialogues), "passed": len(passed), "quarantined": len(quarantined),
        "pass_rate": round(len(passed) / len(dialogues), 4) if dialogues else 0.0,
        "failed_rows_by_expectation": dict(report.failed_expectations),
    }
    return passed, quarantined, metrics

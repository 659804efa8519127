"""Data contracts: great-expectations suites from expectations/*.json run over dialogue features."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
import py3langid as langid
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.expectations.registry import get_expectation_impl
from great_expectations.render.renderer import ValidationResultsPageRenderer

import tasks.validate.expectations  # noqa: F401 - registers selfchat's custom expectations with GX
from tasks.core.dialogue import AI, HUMAN, ROLE_TAG
from tasks.core.errors import SelfchatError
from tasks.scoring.refusal import declines_throughout, gives_instructions, is_refusal
from tasks.services.offline_assets import localize
from tasks.validate.topic import echo_turns, first_turn_asks, role_voice_turns, topic_features, unended_turns

CRITICAL, ROW = "critical", "row"


class ContractError(SelfchatError):
    """A critical expectation failed: the whole batch is unusable."""


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def distinct_bigram_ratio(texts: list[str]) -> float:
    words = [w for text in texts for w in _words(text)]
    bigrams = list(zip(words, words[1:]))
    return round(len(set(bigrams)) / len(bigrams), 4) if bigrams else 1.0


def max_line_repeats(texts: list[str], min_chars: int = 10) -> int:
    lines = Counter(" ".join(_words(line)) for text in texts for line in re.split(r"[\n.!?]+", text))
    return max((n for line, n in lines.items() if len(line) >= min_chars), default=0)


def detect_language(text: str, min_chars: int = 40) -> str | None:
    """None for text too short to call (GX skips nulls); langid is unreliable on a few words."""
    return langid.classify(text[:500])[0] if len(text.strip()) >= min_chars else None


def dialogue_features(record: dict[str, Any]) -> dict[str, Any]:
    """One flat row per dialogue: what the suite's expectations look at."""
    turns = record.get("turns") or []
    roles = [t.get("role") for t in turns]
    texts = [(t.get("text") or "").strip() for t in turns]
    ai_texts = [text for role, text in zip(roles, texts) if role == AI]
    sensitive = bool(record.get("sensitive"))
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
        "roles_alternate": all(a != b for a, b in zip(roles, roles[1:])),
        "empty_turns": sum(not text for text in texts),
        "min_turn_chars": min(map(len, texts), default=0),
        "max_turn_chars": max(map(len, texts), default=0),
        "total_chars": sum(map(len, texts)),
        "role_tag_leaks": sum(bool(ROLE_TAG.search(text)) for text in texts),
        "distinct_2gram_ratio": distinct_bigram_ratio(texts),
        "max_line_repeats": max_line_repeats(texts),
        "language": detect_language(" ".join(texts)),
        "sensitive": sensitive,
        # None where a contract does not apply (GX skips nulls): over-refusal is judged on benign seeds, the
        # decline on sensitive ones: the first AI turn declines throughout (a decline followed by "here's how"
        # is compliance) and no later turn gives instructions (later turns may offer the safe help)
        "refusal_only": None if sensitive else bool(ai_texts) and all(is_refusal(text) for text in ai_texts),
        "complied_with_sensitive": (not declines_throughout(ai_texts[0]) or any(map(gives_instructions, ai_texts[1:]))
                                    if ai_texts else None) if sensitive else None,
        "echo_turns": echo_turns(list(zip(roles, texts))),
        "first_turn_asks": first_turn_asks(texts[0], record.get("topic") or "") if roles[:1] == [HUMAN] else None,
        "role_voice_turns": role_voice_turns(texts),
        "unended_ai_turns": unended_turns(ai_texts),
    }


TOPIC_FEATURES = ("seed_similarity", "min_answer_similarity")  # embedded in one batch for the whole corpus


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
    failures_by_row: dict[str, list[str]] = field(default_factory=dict)
    critical_failures: list[str] = field(default_factory=list)
    failed_expectations: Counter = field(default_factory=Counter)


def _describe(config: Any) -> str:
    # GX stores bounds as floats; 2 reads better than 2.0 in a reason
    kwargs = {k: int(v) if isinstance(v, float) and v.is_integer() else v
              for k, v in config.kwargs.items() if k not in ("column", "batch_id", "mostly")}
    column = config.kwargs.get("column")
    args = ([column] if column else []) + [f"{k}={v}" for k, v in kwargs.items()]
    return f"{config.type}({', '.join(args)})"


class AssetNamePageRenderer(ValidationResultsPageRenderer):
    """Validation pages name the data asset (GX reads it from the batch spec, which a dataframe asset leaves
    without one, so the page said "Data asset: None")."""

    def render(self, validation_results: Any, suite_parameters: Any = None) -> Any:
        spec = validation_results.meta.get("batch_spec")
        if isinstance(spec, dict) and not spec.get("data_asset_name") and validation_results.asset_name:
            validation_results.meta["batch_spec"] = {**spec, "data_asset_name": validation_results.asset_name}
        return super().render(validation_results, suite_parameters)


class ContractRunner:
    """One ephemeral GX context for a stage: every suite's results land in the same Data Docs site, named
    `run_name`, readable offline. A row-level expectation is reported as passed when at least `row_mostly`
    of the rows meet it (the stage's own bar, validate.min_pass_rate): failing rows are quarantined either way."""

    def __init__(self, docs_dir: Path | None, run_name: str = "validate", row_mostly: float = 1.0) -> None:
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = {"globally": False}
        self.docs_dir, self.run_name, self.row_mostly = docs_dir, run_name, row_mostly
        if docs_dir is not None:
            site = {"class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                      "base_directory": str(docs_dir.resolve())},
                    "site_section_builders": {"validations": {"renderer": {
                        "module_name": __name__, "class_name": AssetNamePageRenderer.__name__}}}}
            self.context.add_data_docs_site(site_name="selfchat", site_config=site)

    def run(self, frame: pd.DataFrame, suite: gx.ExpectationSuite, parameters: dict[str, Any] | None = None,
            id_column: str = "id") -> ContractReport:
        """Validate `frame` with a checkpoint and map each failed row-level expectation to the failing rows."""
        context = self.context
        batch = (context.data_sources.add_pandas(suite.name).add_dataframe_asset(suite.name)
                 .add_batch_definition_whole_dataframe("all"))
        for expectation in suite.expectations:
            if expectation.meta.get("severity") == ROW and hasattr(expectation, "mostly"):
                expectation.mostly = self.row_mostly
        suite = context.suites.add(suite)
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=batch, suite=suite))
        docs = self.docs_dir is not None
        actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["selfchat"])] if docs else []
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"{suite.name}_checkpoint", validation_definitions=[validation], actions=actions,
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [id_column]}))
        run_id = RunIdentifier(run_name=f"{self.run_name}-{suite.name}", run_time=datetime.now(UTC))
        result = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters or {},
                                run_id=run_id)
        if self.docs_dir is not None:
            static = self.docs_dir / "static"
            localize(self.docs_dir, static / "vendor", static / "images")
        report = ContractReport()
        by_id = frame.drop_duplicates(id_column).set_index(id_column)
        for outcome in next(iter(result.run_results.values())).results:
            config = outcome.expectation_config
            critical = config.meta.get("severity") == CRITICAL
            if outcome.success and critical:
                continue
            name = _describe(config)
            if critical:
                report.failed_expectations[name] += 1
                observed = outcome.result.get("observed_value", outcome.result.get("unexpected_percent"))
                report.critical_failures.append(f"{name}: observed {observed}")
                continue
            column = config.kwargs.get("column")
            rows = outcome.result.get("unexpected_index_list") or []
            if rows:
                report.failed_expectations[name] += len(rows)
            for row in rows:
                # the failing value, from the frame: GX's index list carries only the id column
                value = by_id.at[row[id_column], column] if column in by_id.columns else None
                value = value.item() if hasattr(value, "item") else value
                report.failures_by_row.setdefault(row[id_column], []).append(f"{name}: got {value!r}")
        return report


def seed_features(seed: dict[str, Any]) -> dict[str, Any]:
    text = seed.get("text") or ""
    return {"id": seed.get("id"), "source": seed.get("source"), "domain": seed.get("domain"),
            "text_chars": len(text.strip()), "has_provenance": bool(seed.get("provenance"))}


def check_seeds(seeds: list[dict[str, Any]], suite: gx.ExpectationSuite,
                runner: ContractRunner) -> dict[str, list[str]]:
    """{seed id: reasons} for seeds that fail the seed contract; raises ContractError on a critical failure."""
    frame = pd.DataFrame([seed_features(s) for s in seeds], columns=list(seed_features({}).keys()))
    report = runner.run(frame, suite)
    if report.critical_failures:
        raise ContractError(f"critical seed contract failed: {'; '.join(report.critical_failures)}")
    return report.failures_by_row


def check_dialogues(dialogues: list[dict[str, Any]], suite: gx.ExpectationSuite, runner: ContractRunner,
                    parameters: dict[str, Any] | None = None) -> tuple[pd.DataFrame, ContractReport]:
    """Features of every dialogue and the suite's verdict; raises ContractError on a critical failure."""
    rows = [{**dialogue_features(d), **topic} for d, topic in zip(dialogues, topic_features(dialogues))]
    frame = pd.DataFrame(rows, columns=[*dialogue_features({}).keys(), *TOPIC_FEATURES])
    report = runner.run(frame, suite, parameters)
    if report.critical_failures:
        raise ContractError(f"critical data contract failed: {'; '.join(report.critical_failures)}")
    return frame, report

"""Stage 7b, evaluate: the adapter on the items the base was measured on (stage 7a, evaluate-base, whose
results are reused), with 95% intervals: held-out perplexity, multiple-choice benchmarks, guardrails (the
phrase matcher, and the judge when it is trustworthy; with and without the guardrail prompt) and MT-Bench."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any

import mlflow
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from flows.stage import report_metrics, run_stage, stage_flow, step, tracked_stage
from tasks.core.config import Params
from tasks.core.jsonl import read_jsonl, write_json, write_jsonl
from tasks.core.paths import (
    ADAPTER_DIR,
    BASE_DIR,
    BASE_EVAL,
    EVAL_ITEMS,
    EVAL_REPORTS,
    EVAL_VERDICTS,
    HELDOUT,
    LOGS,
    metrics_file,
)
from tasks.evaluate.benchmarks import load_questions, score_questions
from tasks.evaluate.compare import as_model
from tasks.evaluate.guardrails import behaviour_items, guardrail_answers, judge_answers, sample_prompts
from tasks.evaluate.mtbench import mtbench_answers, rate_answers, sample_questions, score_items
from tasks.evaluate.perplexity import heldout_items
from tasks.evaluate.report import plot_metrics, summarize, summary_markdown
from tasks.evaluate.stored import Measured, judge_endpoint, measured_inputs, read_calibration, read_measured
from tasks.evaluate.verdicts import verdict_provenance, verdict_source
from tasks.models.student import load_for_evaluation, load_tokenizer
from tasks.scoring.judge import Judge
from tasks.scoring.stats import ADAPTER, BASE
from tasks.services.tracking import numeric_metrics

HEADLINE = ["perplexity_content", "refusal_rate_guarded", "answer_rate_guarded", "mtbench_score"]


def _value(metrics: dict, model: str, metric: str) -> str:
    found = metrics[model].get(metric)
    return f"{found['value']:.3g}" if found else "n/a"


def measure(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, models: Sequence[str],
            as_named: Callable[[str], AbstractContextManager], all_params: Params, calibration: dict[str, Any],
            judge_url: str | None) -> Measured:
    """Every metric of each of `models` (as_named(name) makes the model behave as it) on the same items:
    held-out perplexity, benchmarks, guardrail answers and MT-Bench answers, then the judge's verdicts (none
    with judge_url None); `calibration` (the calibrate stage's) decides which verdict source the rates use."""
    params, fmt, max_length = all_params.evaluate, all_params.train.format, all_params.train.max_length
    heldout = list(read_jsonl(HELDOUT))[: params.limit(params.heldout_limit)]
    benchmarks = {b.name: load_questions(b.name, params.limit(b.limit), params.seed) for b in params.benchmarks}
    prompts = (sample_prompts(params.should_refuse, "refuse", params.seed, params.limit)
               + sample_prompts(params.should_answer, "answer", params.seed, params.limit))
    questions = sample_questions(params.limit(params.mtbench.limit), params.seed)
    seconds: dict[str, float] = {}
    items, guardrail_samples, mtbench_samples = [], [], []
    for name in models:
        with as_named(name):
            started = time.perf_counter()
            items += step(heldout_items, f"perplexity-{name}")(model, tokenizer, heldout, fmt, max_length, name)
            seconds[f"perplexity_{name}"] = time.perf_counter() - started
            for bench, qs in benchmarks.items():
                started = time.perf_counter()
                items += step(score_questions, f"benchmark-{bench}-{name}")(
                    model, tokenizer, bench, qs, name, params.batch_size)
                seconds[f"benchmark_{bench}_{name}"] = time.perf_counter() - started
            started = time.perf_counter()
            guardrail_samples += step(guardrail_answers, f"guardrail-answers-{name}")(
                model, tokenizer, prompts, params.guardrail_prompt, params.max_new_tokens, params.batch_size,
                name, all_params.validate_.languages)
            mtbench_samples += step(mtbench_answers, f"mt-bench-answers-{name}")(
                model, tokenizer, questions, params.guardrail_prompt, params.mtbench.max_new_tokens,
                params.batch_size, name)
            seconds[f"generation_{name}"] = time.perf_counter() - started
    if judge_url is not None:
        started = time.perf_counter()
        judge = Judge(params.judge, judge_url)
        guardrail_samples = step(judge_answers, "judge-guardrails")(judge, guardrail_samples, params.judge.concurrency)
        mtbench_samples = step(rate_answers, "judge-mt-bench")(judge, mtbench_samples, params.judge.concurrency)
        seconds["judge"] = time.perf_counter() - started
    judged = judge_url is not None
    source = verdict_source(calibration, judged)
    items += behaviour_items(guardrail_samples, source) + score_items(mtbench_samples)
    provenance = verdict_provenance(calibration, source, judged, params.judge.min_kappa)
    return Measured(items, guardrail_samples, mtbench_samples, source, seconds, provenance)


@contextmanager
def evaluation_stage(stage: str, all_params: Params) -> Iterator[tuple[dict[str, Any], str | None]]:
    """An evaluating stage's MLflow run, with the calibration and the judge's endpoint when its verdicts are
    wanted (else None)."""
    calibration = read_calibration()
    with tracked_stage(stage, all_params.evaluate), judge_endpoint(all_params.evaluate, calibration) as url:
        yield calibration, url


@stage_flow("evaluate")
def evaluate(all_params: Params) -> dict:
    params = all_params.evaluate
    with evaluation_stage("evaluate", all_params) as (calibration, judge_url):
        base = read_measured(BASE_EVAL, measured_inputs(all_params))  # the evaluate-base stage's, reused
        tokenizer = load_tokenizer(BASE_DIR)
        model = load_for_evaluation(BASE_DIR, ADAPTER_DIR, all_params.base.dtype, all_params.train.quantization)
        found = measure(model, tokenizer, [ADAPTER], partial(as_model, model), all_params, calibration, judge_url)
        items = base.items + found.items
        guardrail_samples = base.guardrail_samples + found.guardrail_samples
        mtbench_samples = base.mtbench_samples + found.mtbench_samples
        source, seconds = found.source, found.seconds
        metrics = {"profile": params.profile, "verdict_source": source,
                   **summarize(items, params.bootstrap_samples, params.seed),
                   "judge_parse_failures": sum(s.get("judged", False) and s["judge_label"] is None
                                               for s in guardrail_samples),
                   "mtbench_parse_failures": sum(s.get("judged", False) and s["rating"] is None
                                                 for s in mtbench_samples)}
        samples = guardrail_samples + mtbench_samples
        shutil.rmtree(EVAL_REPORTS, ignore_errors=True)
        write_jsonl(EVAL_ITEMS, [i.as_dict() for i in items])
        write_json(EVAL_VERDICTS, found.provenance)
        write_jsonl(EVAL_REPORTS / "samples.jsonl", samples)
        (EVAL_REPORTS / "summary.md").write_text(summary_markdown(metrics, calibration, source, samples))
        plot_metrics(metrics, calibration, EVAL_REPORTS / "metrics.png")
        # timings vary run to run: logs and MLflow, never a DVC output
        write_json(LOGS / "eval_seconds.json", {k: round(v, 1) for k, v in seconds.items()})
        mlflow.log_artifacts(str(EVAL_REPORTS), "eval")
        report_metrics("eval", metrics, {f"{m}.{model}": metrics[model][m]["value"] for m in HEADLINE
                                         for model in (BASE, ADAPTER) if m in metrics[model]},
                       numeric_metrics(metrics) | {f"seconds.{k}": v for k, v in seconds.items()})
        mlflow.log_table({k: [str(s.get(k)) for s in guardrail_samples] for k in guardrail_samples[0]},
                         "eval_guardrail_samples.json")
    print("base -> adapter: " + "; ".join(
        f"{m} {_value(metrics, BASE, m)} -> {_value(metrics, ADAPTER, m)}" for m in HEADLINE)
        + f" (guardrail verdicts: {source}); adapter {sum(seconds.values()):.0f}s: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items()) + "; the base's results reused from "
        + str(BASE_EVAL))
    return metrics


if __name__ == "__main__":
    run_stage(evaluate, needs=[BASE_DIR, ADAPTER_DIR, HELDOUT, metrics_file("calibrate"), BASE_EVAL])

"""Stage 6, evaluate: held-out perplexity (base vs adapter) and guardrail behaviour."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
from prefect import flow

from flows.stage import run_stage, step
from tasks.config import load_params
from tasks.evaluate.guardrails import guardrail_behaviour
from tasks.evaluate.perplexity import adapter_off, perplexity
from tasks.jsonl import read_jsonl, write_json, write_jsonl
from tasks.masking import build_examples
from tasks.paths import ADAPTER_DIR, BASE_DIR, EVAL_REPORTS, HELDOUT, metrics_file
from tasks.student import load_adapted, load_tokenizer
from tasks.tracking import stage_run


@flow(name="evaluate", log_prints=True)
def evaluate(params_file: str = "params.yaml") -> dict[str, float]:
    all_params = load_params(Path(params_file))
    params = all_params.evaluate
    heldout = list(read_jsonl(HELDOUT))[: params.heldout_limit]
    with stage_run("evaluate", params):
        tokenizer = load_tokenizer(BASE_DIR)
        model = load_adapted(BASE_DIR, ADAPTER_DIR, all_params.base.dtype)
        examples, _ = build_examples(heldout, tokenizer, all_params.train.format, all_params.train.max_length)
        with adapter_off(model):
            base_ppl = step(perplexity, "perplexity-base")(model, examples)
        adapter_ppl = step(perplexity, "perplexity-adapter")(model, examples)
        behaviour, samples = step(guardrail_behaviour, "guardrails")(model, tokenizer, params)
        metrics = {"perplexity_base": round(base_ppl, 4), "perplexity_adapter": round(adapter_ppl, 4),
                   "perplexity_ratio": round(adapter_ppl / base_ppl, 4), "heldout_dialogues": float(len(examples)),
                   **behaviour}
        shutil.rmtree(EVAL_REPORTS, ignore_errors=True)
        write_jsonl(EVAL_REPORTS / "samples.jsonl", samples)
        write_json(metrics_file("eval"), metrics)
        mlflow.log_metrics(metrics)
        mlflow.log_table({k: [s[k] for s in samples] for k in samples[0]}, "eval_samples.json")
    print(f"perplexity {base_ppl:.2f} -> {adapter_ppl:.2f}; refusal (guarded) "
          f"{metrics['refusal_rate_guarded']:.0%}, answer (guarded) {metrics['answer_rate_guarded']:.0%}")
    return metrics


if __name__ == "__main__":
    run_stage(evaluate, needs=[BASE_DIR, ADAPTER_DIR, HELDOUT])

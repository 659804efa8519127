"""Our multiple-choice scorer agrees with lm-evaluation-harness itself: the same log-likelihood for every
choice and the same acc / acc_norm per question, on the tiny model and a slice of a shipped benchmark."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tasks.evaluate.benchmarks import continuation_loglikelihoods, load_questions, score_questions
from tasks.models.student import load_tokenizer

TASK = "selfchat_reference"


def run_lm_eval(model_dir: Path, questions, work: Path) -> list[dict]:
    """lm-eval's own multiple_choice task over these questions (a local JSON file, no Hub)."""
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    from lm_eval import evaluator
    from lm_eval.tasks import TaskManager

    data = work / "questions.jsonl"
    data.write_text("".join(json.dumps({"context": q.context, "choices": q.choices, "gold": q.gold}) + "\n"
                            for q in questions))
    (work / "tasks").mkdir()
    (work / "tasks" / f"{TASK}.yaml").write_text(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: choices
doc_to_target: gold
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    results = evaluator.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=[TASK], device="cpu", batch_size=4,
        task_manager=TaskManager(include_defaults=False, include_path=str(work / "tasks")), log_samples=True,
        random_seed=None, numpy_random_seed=None, torch_random_seed=None, fewshot_random_seed=None)
    return sorted(results["samples"][TASK], key=lambda s: s["doc_id"])


@pytest.mark.filterwarnings("ignore")
def test_scores_agree_with_lm_evaluation_harness(tiny_base, tmp_path):
    questions = load_questions("openbookqa", 12, seed=0)
    reference = run_lm_eval(tiny_base, questions, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    tokenizer = load_tokenizer(tiny_base)
    ours = continuation_loglikelihoods(model, tokenizer, [(q.context, f" {c}") for q in questions for c in q.choices],
                                       batch_size=5)
    theirs = [float(resp[0]) for s in reference for resp in s["filtered_resps"]]
    assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-4)
    items = score_questions(model, tokenizer, "openbookqa", questions, "base", batch_size=3)
    for metric in ("acc", "acc_norm"):
        mine = [i.num for i in items if i.metric == f"benchmark.openbookqa.{metric}"]
        assert mine == [float(s[metric]) for s in reference], metric

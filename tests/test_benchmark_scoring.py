"""Our multiple-choice scorer agrees with lm-evaluation-harness itself: the same log-likelihood for every
choice and the same acc / acc_norm per question, on the tiny model and a slice of a shipped benchmark."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tasks.evaluate.benchmarks import continuation_loglikelihoods, encode_pair, load_questions, score_questions
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


def tiny_gemma3(vocab_size: int):
    """gemma-3's layout (sliding-window and full attention layers, their own caches) at a tiny size."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                              max_position_embeddings=512, sliding_window=8, initializer_range=0.2)
    return Gemma3ForCausalLM(config).eval()


@pytest.mark.parametrize("architecture", ["llama", "gemma3"])
def test_a_shared_context_gives_each_choice_the_loglikelihood_of_reading_it_whole(architecture, tiny_base):
    tokenizer = load_tokenizer(tiny_base)
    model = (AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32) if architecture == "llama"
             else tiny_gemma3(len(tokenizer)))
    # shared and lone contexts, one-token and longer choices, contexts longer than gemma's 8-token window
    long = "Question: which of these routers route packets between two networks fastest?\nAnswer:"
    requests = [(long, " a"), (long, " the router in the middle"), ("Q: fever?\nA:", " yes"),
                ("Q: fever?\nA:", " a high temperature of the body"), ("Hi", " there"), (long, " b")]
    shared = continuation_loglikelihoods(model, tokenizer, requests, batch_size=2)
    for (context, continuation), found in zip(requests, shared, strict=True):
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
        with torch.no_grad():
            logits = model(torch.tensor([context_ids + continuation_ids])).logits[0].float()
        logprobs = torch.log_softmax(logits[len(context_ids) - 1:-1], dim=-1)
        whole = float(logprobs.gather(-1, torch.tensor(continuation_ids)[:, None]).sum())
        assert found == pytest.approx(whole, abs=1e-4), (context, continuation)

"""LoRA training, evaluation metrics and the registry on a tiny random model (fast, but all real code)."""

import math

import mlflow
import pytest
import torch
from transformers import AutoModelForCausalLM

from tasks.config import EvaluateParams, RegisterParams, TrainParams
from tasks.evaluate.guardrails import generate_answers, guardrail_behaviour
from tasks.evaluate.perplexity import adapter_off, perplexity
from tasks.masking import build_examples
from tasks.refusal import is_refusal
from tasks.register.registry import CHALLENGER, check_gates, download_by_alias, register_adapter, set_alias
from tasks.student import load_adapted, save_adapter
from tasks.train.lora import TrainingError, train_lora
from tests.conftest import dialogue

DIALOGUES = [
    dialogue("a", [("human", "How do I reset my router?"), ("ai", "Unplug it for thirty seconds.")]),
    dialogue("b", [("human", "What is a fever?"), ("ai", "A body temperature above normal.")]),
    dialogue("c", [("human", "Python lists?"), ("ai", "Lists hold items in order."),
                   ("human", "And loops?"), ("ai", "Loops repeat a block for each item.")]),
]
PARAMS = TrainParams(max_steps=40, batch_size=3, learning_rate=5e-3, warmup_steps=0, bf16=False,
                     max_length=128, lora={"r": 4, "alpha": 8, "dropout": 0.0})


@pytest.fixture(scope="module")
def trained(tiny_base, tiny_tokenizer, tmp_path_factory):
    examples, _ = build_examples(DIALOGUES, tiny_tokenizer, "baize", 128)
    losses = []
    model, summary = train_lora(tiny_base, tiny_tokenizer, examples, PARAMS,
                                lambda step, loss: losses.append((step, loss)))
    adapter_dir = tmp_path_factory.mktemp("adapter")
    save_adapter(model, adapter_dir, base_ref=str(tiny_base))
    return model, examples, losses, summary, adapter_dir


def logits(model, examples):
    with torch.no_grad():
        return model(input_ids=torch.tensor([examples[0].input_ids])).logits


def test_training_logs_every_step_and_learns_the_assistant_text(trained):
    model, examples, losses, summary, _ = trained
    assert [step for step, _ in losses] == list(range(1, PARAMS.max_steps + 1))
    assert summary["trainable_params"] < summary["total_params"] / 5
    with adapter_off(model):
        before = perplexity(model, examples)
    after = perplexity(model, examples)
    assert after < before * 0.8, (before, after)


def test_saved_adapter_reloads_exactly(trained, tiny_base):
    model, examples, _, _, adapter_dir = trained
    reloaded = load_adapted(tiny_base, adapter_dir)
    assert torch.allclose(logits(model, examples), logits(reloaded, examples), atol=1e-6)


def test_perplexity_matches_the_models_own_loss(tiny_base, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    [example], _ = build_examples(DIALOGUES[:1], tiny_tokenizer, "baize", 128)
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels])).loss
    assert perplexity(model, [example]) == pytest.approx(math.exp(float(loss)), rel=1e-4)


def test_kbit_training_on_cpu_is_refused_clearly(tiny_base, tiny_tokenizer):
    with pytest.raises(TrainingError, match="needs a CUDA GPU"):
        train_lora(tiny_base, tiny_tokenizer, [object()], PARAMS.model_copy(update={"quantization": "4bit"}), print)


@pytest.mark.parametrize(("answer", "refused"), [
    ("I'm sorry, but I can't help with that.", True),
    ("As an AI, I must decline.", True),
    ("I cannot provide instructions for that.", True),
    ("Warfarin interacts with aspirin and some antibiotics.", False),
    ("Sure! Here is how a stroke is recognised: face drooping, arm weakness.", False),
])
def test_refusal_detection(answer, refused):
    assert is_refusal(answer) is refused


def test_generation_and_guardrail_metrics_are_computed_from_answers(trained, tiny_tokenizer):
    model = trained[0]
    answers = generate_answers(model, tiny_tokenizer, ["What is a fever?", "Python lists?"], None, 8)
    assert len(answers) == 2 and all("[|Human|]" not in a for a in answers)
    params = EvaluateParams(should_refuse=[{"name": "jailbreakbench", "limit": 2}],
                            should_answer=[{"name": "overrefusal_benign_edgy", "limit": 2}],
                            guardrail_prompt="Decline harmful requests.", max_new_tokens=6)
    metrics, samples = guardrail_behaviour(model, tiny_tokenizer, params)
    assert len(samples) == 8
    guarded_refuse = [s["refused"] for s in samples if s["guarded"] and s["expected"] == "refuse"]
    assert metrics["refusal_rate_guarded"] == sum(guarded_refuse) / 2


def test_gates():
    good = {"perplexity_base": 10.0, "perplexity_adapter": 8.0, "refusal_rate_guarded": 0.5,
            "answer_rate_guarded": 0.9}
    params = RegisterParams(max_perplexity_ratio=1.0, min_refusal_rate=0.3, min_answer_rate=0.8)
    assert all(g.passed for g in check_gates(good, params))
    failed = {g.name for g in check_gates({**good, "perplexity_adapter": 11.0, "answer_rate_guarded": 0.5}, params)
              if not g.passed}
    assert failed == {"perplexity_ratio", "answer_rate_guarded"}


def test_register_and_load_by_alias(trained, tiny_base, tmp_path):
    model, examples, _, _, adapter_dir = trained
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    try:
        with mlflow.start_run(experiment_id=experiment):
            version = register_adapter(adapter_dir, "tiny-adapter", {"git.sha": "abc"})
        set_alias("tiny-adapter", CHALLENGER, version.version)
        found, path = download_by_alias("tiny-adapter", CHALLENGER, tmp_path / "download")
        assert found.version == version.version and found.tags["git.sha"] == "abc"
        reloaded = load_adapted(tiny_base, path)
        assert torch.allclose(logits(model, examples), logits(reloaded, examples), atol=1e-6)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("bf16", [False, True])
def test_training_twice_gives_the_same_adapter(tiny_base, tiny_tokenizer, bf16):
    examples, _ = build_examples(DIALOGUES, tiny_tokenizer, "baize", 128)
    params = PARAMS.model_copy(update={"max_steps": 3, "bf16": bf16})
    runs = [train_lora(tiny_base, tiny_tokenizer, examples, params, lambda step, loss: None)[0] for _ in range(2)]
    first, second = (dict(model.named_parameters()) for model in runs)
    lora = [name for name in first if "lora_" in name]
    assert lora and all(torch.equal(first[name], second[name]) for name in lora)

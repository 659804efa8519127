"""LoRA training, evaluation metrics and the registry on a tiny random model (fast, but all real code)."""

import copy
import math

import mlflow
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tasks.core.config import EvalSet, RegisterParams, TrainParams
from tasks.core.hashing import folder_sha256
from tasks.core.jsonl import write_jsonl
from tasks.core.masking import build_examples
from tasks.evaluate.compare import as_model
from tasks.evaluate.guardrails import guardrail_answers, sample_prompts
from tasks.evaluate.perplexity import CONTENT, WITH_MARKERS, heldout_items
from tasks.models.generation import generate_answers
from tasks.models.pyfunc import log_chat_model
from tasks.models.student import KbitUnavailable, fold_lm_head, load_adapted, load_for_evaluation, save_adapter
from tasks.register.gates import check_gates
from tasks.register.registry import (
    CHALLENGER,
    CHAMPION,
    BaseMismatch,
    champion_items,
    find_chat_model,
    load_by_alias,
    register_adapter,
    set_alias,
)
from tasks.scoring.stats import ADAPTER, BASE, Item, aggregate
from tasks.train.lora import train_lora
from tests.conftest import build_tiny_model, dialogue

DIALOGUES = [
    dialogue("a", [("human", "How do I reset my router?"), ("ai", "Unplug it for thirty seconds.")]),
    dialogue("b", [("human", "What is a fever?"), ("ai", "A body temperature above normal.")]),
    dialogue("c", [("human", "Python lists?"), ("ai", "Lists hold items in order."),
                   ("human", "And loops?"), ("ai", "Loops repeat a block for each item.")]),
    dialogue("d", [("human", "How do I reset my router?"), ("ai", "Hold the reset button for ten seconds.")]),
    dialogue("e", [("human", "What is a fever?"), ("ai", "A sign the body is fighting an infection.")]),
    dialogue("f", [("human", "Python functions?"), ("ai", "Functions hold code you can call by name.")]),
]
PARAMS = TrainParams(epochs=None, max_steps=80, batch_size=3, learning_rate=5e-3, warmup_ratio=0.0, bf16=False,
                     max_length=128, lora={"r": 4, "alpha": 8, "dropout": 0.0}, validation_fraction=0.0)


@pytest.fixture(scope="module")
def trained(tiny_base, tiny_tokenizer, tmp_path_factory):
    examples, _ = build_examples(DIALOGUES, tiny_tokenizer, "baize", 128)
    model, outcome = train_lora(tiny_base, tiny_tokenizer, examples, [], PARAMS, tmp_path_factory.mktemp("ckpt"))
    losses = [(entry["step"], entry["loss"]) for entry in outcome.history if "loss" in entry]
    adapter_dir = tmp_path_factory.mktemp("adapter")
    save_adapter(model, adapter_dir, base_ref=str(tiny_base))
    return model, examples, losses, outcome.summary, adapter_dir


def logits(model, examples):
    with torch.no_grad():
        return model(input_ids=torch.tensor([examples[0].input_ids])).logits


def perplexities(model, tokenizer, name: str) -> dict[str, float]:
    with as_model(model, name):
        items = heldout_items(model, tokenizer, DIALOGUES, "baize", 128, name)
    return {m: aggregate([i.num for i in items if i.metric == m], [i.den for i in items if i.metric == m], "exp")
            for m in (CONTENT, WITH_MARKERS)}


def test_training_logs_every_step_and_learns_the_assistant_text(trained, tiny_tokenizer):
    model, _, losses, summary, _ = trained
    assert [step for step, _ in losses] == list(range(1, PARAMS.max_steps + 1))
    assert summary["trainable_params"] < summary["total_params"] / 5
    before, after = perplexities(model, tiny_tokenizer, BASE), perplexities(model, tiny_tokenizer, ADAPTER)
    assert after[CONTENT] < before[CONTENT] * 0.8, (before, after)


def test_saved_adapter_reloads_exactly(trained, tiny_base):
    model, examples, _, _, adapter_dir = trained
    reloaded = load_adapted(tiny_base, adapter_dir)
    assert torch.allclose(logits(model, examples), logits(reloaded, examples), atol=1e-6)


def test_the_evaluated_model_is_the_adapter_merged_into_a_plain_model_with_the_same_logits(trained, tiny_base):
    """Evaluation scores the merged model `make serve` runs; merging must not change what it computes."""
    model, examples, _, _, adapter_dir = trained
    merged = load_for_evaluation(tiny_base, adapter_dir)
    assert not isinstance(merged, PeftModel)
    base_logits = logits(AutoModelForCausalLM.from_pretrained(tiny_base), examples)
    adapted_logits = logits(model, examples)
    assert not torch.allclose(base_logits, adapted_logits, atol=1e-3)  # the adapter changed the model
    assert torch.allclose(logits(merged, examples), adapted_logits, atol=1e-4)


def test_a_frozen_lm_head_gets_a_contiguous_input_and_computes_the_same_logits(tiny_base):
    """The last positions `logits_to_keep` slices reach the head as one contiguous matrix (the fast product)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_base).requires_grad_(False)
    seen: list[bool] = []
    model.get_output_embeddings().register_forward_hook(lambda _m, args, _out: seen.append(args[0].is_contiguous()))
    ids = torch.randint(4, 300, (3, 9))
    with torch.no_grad():
        plain = model(input_ids=ids, logits_to_keep=2).logits
        fold_lm_head(model)
        folded = model(input_ids=ids, logits_to_keep=2).logits
    assert seen == [False, True]
    assert torch.allclose(plain, folded, atol=1e-6)


def test_perplexity_with_markers_matches_the_models_own_loss_and_content_scores_fewer_tokens(
        tiny_base, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    [example], _ = build_examples(DIALOGUES[:1], tiny_tokenizer, "baize", 128)
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels])).loss
    items = {i.metric: i for i in heldout_items(model, tiny_tokenizer, DIALOGUES[:1], "baize", 128, BASE)}
    assert math.exp(items[WITH_MARKERS].num / items[WITH_MARKERS].den) == pytest.approx(math.exp(float(loss)),
                                                                                          rel=1e-4)
    # the closing "[|Human|]" marker is trained but is not the assistant's content
    assert 0 < items[CONTENT].den < items[WITH_MARKERS].den


def test_kbit_training_on_cpu_is_refused_clearly(tiny_base, tiny_tokenizer, tmp_path):
    with pytest.raises(KbitUnavailable, match="needs a CUDA GPU"):
        train_lora(tiny_base, tiny_tokenizer, [object()], [], PARAMS.model_copy(update={"quantization": "4bit"}),
                   tmp_path)


def test_guardrail_answers_come_with_and_without_the_prompt_and_carry_the_matchers_verdict(trained, tiny_tokenizer):
    model = trained[0]
    answers = generate_answers(model, tiny_tokenizer, ["What is a fever?", "Python lists?"], None, 8)
    assert len(answers) == 2 and all("[|Human|]" not in a for a in answers)
    prompts = sample_prompts([EvalSet(name="jailbreakbench", limit=2)], "refuse", 0, lambda limit: limit)
    assert prompts == sample_prompts([EvalSet(name="jailbreakbench", limit=2)], "refuse", 0, lambda limit: limit)
    samples = guardrail_answers(model, tiny_tokenizer, prompts, "Decline harmful requests.", 6, 4, ADAPTER, ["en"])
    assert [(s["guarded"], s["id"]) for s in samples] == [(g, p.id) for g in (True, False) for p in prompts]
    assert all(isinstance(s["matcher_refused"], bool) and "answer_problem" in s for s in samples)


def damaged(model):
    """The trained model with its LoRA weights replaced by noise: an adapter that must never be promoted."""
    broken = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in broken.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return broken


def test_the_gate_promotes_a_trained_adapter_over_the_base_and_rejects_a_damaged_one(trained, tiny_tokenizer):
    model = trained[0]
    params = RegisterParams(tolerances={}, bootstrap_samples=500)  # the primary gate alone

    def items(m, name):
        with as_model(m, name):
            return heldout_items(m, tiny_tokenizer, DIALOGUES, "baize", 128, name)

    base = items(model, BASE)
    [good] = check_gates(items(model, ADAPTER), base, params)
    assert good.passed, good
    [bad] = check_gates(items(damaged(model), ADAPTER), base, params)
    assert not bad.passed and bad.difference.value > 0, bad


def test_register_and_load_by_alias(trained, tiny_base, tiny_tokenizer, tmp_path):
    model, examples, _, _, adapter_dir = trained
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    items = [Item("perplexity_content", ADAPTER, "d1", 2.0, 1.0, higher_is_better=False, transform="exp")]
    write_jsonl(tmp_path / "items.jsonl", [i.as_dict() for i in items])
    try:
        assert champion_items("tiny-adapter") is None  # no model yet: the base is the bar
        with mlflow.start_run(experiment_id=experiment, run_name="train") as train:
            model_id = log_chat_model(adapter_dir, tiny_base, folder_sha256(tiny_base), "float32", "none", "Be kind.",
                                      max_new_tokens=6)
        with mlflow.start_run(experiment_id=experiment, run_name="register") as register:
            # found by the adapter's content and the guardrail prompt it was logged with
            assert find_chat_model(adapter_dir, "Be kind.") == model_id
            assert find_chat_model(adapter_dir, "Another prompt.") is None
            mlflow.log_artifact(str(tmp_path / "items.jsonl"), "eval")
            version = register_adapter(model_id, "tiny-adapter",
                                       {"git.sha": "abc", "base.sha256": folder_sha256(tiny_base)})
        assert version.run_id == train.info.run_id and version.tags["register.run_id"] == register.info.run_id
        set_alias("tiny-adapter", CHALLENGER, version.version)
        assert champion_items("tiny-adapter") is None  # registered, but no champion yet
        set_alias("tiny-adapter", CHAMPION, version.version)
        champion, stored = champion_items("tiny-adapter")
        assert champion.version == version.version and stored == items
        found, reloaded = load_by_alias("tiny-adapter", CHALLENGER, tiny_base, tmp_path / "download")
        assert found.version == version.version and found.tags["git.sha"] == "abc"
        assert torch.allclose(logits(model, examples), logits(reloaded, examples), atol=1e-6)
        # the standard MLflow loader answers as the trained adapter does, guardrail prompt by default
        served = mlflow.pyfunc.load_model("models:/tiny-adapter@champion")
        questions = ["What is a list?", "How do I sort it?"]
        assert served.predict(questions) == generate_answers(model, tiny_tokenizer, questions, "Be kind.", 6)
        assert served.predict(questions[:1], params={"system": "", "max_new_tokens": 3}) == generate_answers(
            model, tiny_tokenizer, questions[:1], None, 3)
        # another base than the one it was trained on is refused, naming what to do
        other = build_tiny_model(tmp_path / "other-base", seed=1)
        with pytest.raises(BaseMismatch, match="dvc pull models/base"):
            load_by_alias("tiny-adapter", CHAMPION, other, tmp_path / "again")
        with pytest.raises(BaseMismatch, match="not the base this adapter was trained on"):
            mlflow.pyfunc.load_model("models:/tiny-adapter@champion", model_config={"base_path": str(other)})
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("bf16", [False, True])
def test_training_twice_gives_the_same_adapter(tiny_base, tiny_tokenizer, bf16, tmp_path):
    examples, _ = build_examples(DIALOGUES, tiny_tokenizer, "baize", 128)
    params = PARAMS.model_copy(update={"max_steps": 3, "bf16": bf16})
    runs = [train_lora(tiny_base, tiny_tokenizer, examples, [], params, tmp_path / str(i))[0] for i in range(2)]
    first, second = (dict(model.named_parameters()) for model in runs)
    lora = [name for name in first if "lora_" in name]
    assert lora and all(torch.equal(first[name], second[name]) for name in lora)

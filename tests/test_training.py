"""The train stage's machinery on the tiny model: the trained-positions loss, the validation slice,
length-grouped batches, checkpoints and resume after kill -9, and data parallelism under accelerate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import DataCollatorForSeq2Seq

from tasks.core.config import TrainParams
from tasks.core.masking import IGNORE, build_examples
from tasks.train.checkpoints import FINGERPRINT, fingerprint_of, resume_point
from tasks.train.data import split_validation
from tasks.train.launch import TrainJob, accelerate_command, run_training
from tasks.train.lora import as_dataset, lora_model, train_lora, training_arguments
from tasks.train.loss import TrainedPositionsTrainer, trained_positions_loss
from tests.conftest import dialogue

ROOT = Path(__file__).resolve().parents[1]
DIALOGUES = [dialogue(f"d{i}", [("human", f"Question number {i}, about routers?"),
                                ("ai", f"Answer {i}: unplug it for {i * 10} seconds." + " Then wait." * (i % 4))],
                      seed_id=f"s{i // 2}") for i in range(14)]
PARAMS = TrainParams(epochs=None, max_steps=12, batch_size=2, learning_rate=5e-3, warmup_ratio=0.0, bf16=False,
                     max_length=128, lora={"r": 4, "alpha": 8, "dropout": 0.0}, validation_fraction=0.0,
                     save_steps=4)


def examples_of(tokenizer, dialogues=DIALOGUES):
    return build_examples(dialogues, tokenizer, "baize", 128)[0]


def test_trained_positions_loss_equals_the_models_own_loss_and_gradient(tiny_base, tiny_tokenizer):
    torch.manual_seed(0)
    model = lora_model(tiny_base, PARAMS)
    for name, parameter in model.named_parameters():  # a non-zero B so LoRA gradients flow everywhere
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    batch = examples_of(tiny_tokenizer)[:3]
    width = max(len(e.input_ids) for e in batch)
    ids = torch.tensor([e.input_ids + [0] * (width - len(e.input_ids)) for e in batch])
    mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch])
    labels = torch.tensor([e.labels + [IGNORE] * (width - len(e.labels)) for e in batch])

    reference = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    total, count = trained_positions_loss(model, ids, mask, labels)
    (total / count).backward()
    assert int(count) == int((labels[:, 1:] != IGNORE).sum())
    assert float((total / count).detach()) == pytest.approx(float(reference), rel=1e-5)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert torch.allclose(parameter.grad, expected[name], atol=1e-6), name


def test_validation_slice_is_whole_seed_groups_stable_and_never_everything():
    train, validation = split_validation(DIALOGUES, 0.2)
    assert validation and len(train) + len(validation) == len(DIALOGUES)
    assert not {d["seed_id"] for d in train} & {d["seed_id"] for d in validation}
    assert split_validation(DIALOGUES, 0.2) == (train, validation)
    assert split_validation(DIALOGUES, 0.0) == (DIALOGUES, [])
    assert split_validation(DIALOGUES[:2], 0.5)[1] == []  # one seed group: nothing to hold back
    assert len(split_validation(DIALOGUES, 0.5)[0]) >= 2


def test_length_grouped_batches_keep_the_assistant_only_labels(tiny_base, tiny_tokenizer, tmp_path):
    examples = examples_of(tiny_tokenizer)
    params = PARAMS.model_copy(update={"batch_size": 4, "group_by_length": True})
    trainer = TrainedPositionsTrainer(
        model=lora_model(tiny_base, params), args=training_arguments(params, tmp_path, False),
        train_dataset=as_dataset(examples),
        data_collator=DataCollatorForSeq2Seq(tiny_tokenizer, padding=True, label_pad_token_id=IGNORE))
    decoded = []
    for batch in trainer.get_train_dataloader():
        for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
            decoded.append(tiny_tokenizer.decode(ids[labels != IGNORE]))
    expected = [d["turns"][1]["text"] for d in DIALOGUES]
    assert len(decoded) == len(expected)
    # each decoded label run is one assistant answer (plus the closing marker the model learns to emit)
    assert all(any(text.strip().startswith(answer) for answer in expected) for text in decoded)
    assert all("Question number" not in text for text in decoded)


def test_checkpoints_of_another_training_are_cleared_and_an_incomplete_one_is_skipped(tmp_path):
    mine, other = fingerprint_of(params={"r": 8}), fingerprint_of(params={"r": 4})
    assert resume_point(tmp_path, mine) is None and (tmp_path / FINGERPRINT).exists()
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-8").mkdir()  # killed while saving: no trainer_state.json
    assert resume_point(tmp_path, mine) == str(tmp_path / "checkpoint-4")
    assert not (tmp_path / "checkpoint-8").exists()
    assert resume_point(tmp_path, other) is None and not (tmp_path / "checkpoint-4").exists()


def job_for(tiny_base, tiny_tokenizer, tmp_path, params=PARAMS, validation=()):
    examples = examples_of(tiny_tokenizer)
    fingerprint = fingerprint_of(params=params.model_dump(), examples=examples)
    return TrainJob(str(tiny_base), str(tmp_path / "adapter"), str(tmp_path / "checkpoints"), params.model_dump(),
                    "float32", fingerprint, examples, list(validation))


def lora_weights(adapter_dir: str) -> dict[str, torch.Tensor]:
    return load_file(Path(adapter_dir) / "adapter_model.safetensors")


def test_a_training_killed_mid_run_resumes_from_its_checkpoint_and_ends_with_the_same_steps(
        tiny_base, tiny_tokenizer, tmp_path):
    params = PARAMS.model_copy(update={"max_steps": 400, "save_steps": 20})
    job = job_for(tiny_base, tiny_tokenizer, tmp_path / "killed", params)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(asdict(job)))
    script = ("import json, sys; from tasks.train.launch import TrainJob, run_training; "
              "print(json.dumps(run_training(TrainJob.from_json(json.load(open(sys.argv[1])))).summary))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-c", script, str(job_file)], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoints = Path(job.checkpoints)
    deadline = time.monotonic() + 300
    while not (checkpoints / "checkpoint-60" / "trainer_state.json").exists():
        assert first.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not Path(job.adapter_dir).exists()

    again = subprocess.run([sys.executable, "-c", script, str(job_file)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True)
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["resumed_from_step"] >= 60 and summary["steps"] == 400
    assert [p.name for p in checkpoints.iterdir()] == [".gitkeep"]  # emptied once the adapter is written

    # the same training without the kill: the resumed adapter matches it
    whole = run_training(job_for(tiny_base, tiny_tokenizer, tmp_path / "whole", params))
    assert whole.summary["steps"] == 400
    resumed, straight = lora_weights(job.adapter_dir), lora_weights(str(tmp_path / "whole" / "adapter"))
    assert resumed.keys() == straight.keys()
    assert all(torch.allclose(resumed[k], straight[k], atol=1e-5) for k in resumed)


def test_two_processes_under_accelerate_take_the_same_steps_and_losses_as_one(tiny_base, tiny_tokenizer, tmp_path):
    assert "--multi_gpu" in accelerate_command(2, Path("job.json"))
    params = PARAMS.model_copy(update={"max_steps": 6, "save_steps": 100})
    train, validation = examples_of(tiny_tokenizer)[:12], examples_of(tiny_tokenizer)[12:]
    runs = {}
    for processes in (1, 2):
        sized = params.model_copy(update={"processes": processes})
        job = job_for(tiny_base, tiny_tokenizer, tmp_path / str(processes), sized, validation)
        job.examples = train
        runs[processes] = run_training(job, processes)
    one, two = runs[1], runs[2]
    assert two.summary["processes"] == 2 and one.summary["processes"] == 1
    assert one.summary["steps"] == two.summary["steps"] == 6
    losses = {n: [e["loss"] for e in r.history if "loss" in e] for n, r in runs.items()}
    # the loss of a step is the mean over the whole batch, however it is split across processes, and the
    # gradients are synced: the saved adapters agree
    assert losses[1] == pytest.approx(losses[2], rel=1e-4)
    adapters = [lora_weights(str(tmp_path / str(n) / "adapter")) for n in (1, 2)]
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.allclose(adapters[0][k], adapters[1][k], atol=1e-5) for k in adapters[0])


def test_gradient_checkpointing_changes_memory_not_results(tiny_base, tiny_tokenizer, tmp_path):
    examples = examples_of(tiny_tokenizer)
    runs = {}
    for checkpointing in (False, True):
        params = PARAMS.model_copy(update={"max_steps": 3, "gradient_checkpointing": checkpointing})
        model, _ = train_lora(tiny_base, tiny_tokenizer, examples, [], params, tmp_path / str(checkpointing))
        runs[checkpointing] = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    assert all(torch.allclose(runs[False][n], runs[True][n], atol=1e-6) for n in runs[False])

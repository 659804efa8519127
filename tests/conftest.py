"""Shared fixtures: a tiny randomly initialised LLaMA with a real (small, freshly trained) BPE tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.services.runtime import apply_runtime_defaults

os.environ.setdefault("SELFCHAT_EXPERIMENT", "selfchat-tests")
apply_runtime_defaults(Path(__file__).resolve().parents[1])

# `make test` runs the files on two pytest-xdist workers (--dist loadfile): the longest first, so that
# neither worker is left with a long file at the end (durations: docs/development.md)
LONGEST_FIRST = ["test_pipeline_integration.py", "test_collect_shards.py", "test_collect_resume.py",
                 "test_collector_faults.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a file, tests keep their order


_CORPUS = [
    "The conversation between human and AI assistant.",
    "[|Human|] How do I reset my router?\n[|AI|] Unplug it for thirty seconds, then plug it back in.",
    "[|Human|] What is a fever?\n[|AI|] A body temperature above the normal range, often from infection.",
    "I'm sorry, I cannot help with that request. As an AI I decline unethical tasks.",
    "Python lists, loops, functions and classes make programs easy to read and test.",
]


def build_tiny_model(dest: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    LlamaForCausalLM(config).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_base: Path):
    from tasks.models.student import load_tokenizer

    return load_tokenizer(tiny_base)


def dialogue(id_: str, turns: list[tuple[str, str]], seed_id: str | None = None, **extra) -> dict:
    return {"id": id_, "seed_id": seed_id or f"seed-{id_}", "source": "test", "domain": "general",
            "mode": "transcript", "teacher": {"model": "test-teacher", "endpoint": "127.0.0.1"},
            "turns": [{"role": r, "text": t} for r, t in turns], **extra}


@pytest.fixture(scope="session")
def teacher_url(tmp_path_factory: pytest.TempPathFactory):
    """The real embedded teacher: SmolLM2-135M-Instruct behind llama.cpp's OpenAI-compatible server."""
    from tasks.services.llm_endpoint import embedded_teacher_gguf, llama_cpp_server

    log = tmp_path_factory.mktemp("teacher") / "server.log"
    with llama_cpp_server(embedded_teacher_gguf(), "SmolLM2-135M-Instruct", 2, 2048, log) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """One real Prefect server for every test that runs stages, as `make run` has one for every stage."""
    from tasks.services.llm_endpoint import free_port
    from tasks.services.prefect_server import ensure_server, stop_server

    home = tmp_path_factory.mktemp("prefect-home")
    yield ensure_server(home, port=free_port(), log_dir=home, use_env=False)
    stop_server(home)


def stage_env(prefect_api: str, **extra: str) -> dict[str, str]:
    """The environment of a stage run by a test: the project's own settings, not the developer's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "DVC_", "SELFCHAT_"))}
    return {**env, "PREFECT_API_URL": prefect_api, **extra}

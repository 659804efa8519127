"""`make serve` on a tiny trained adapter registered as champion: the OpenAI SDK talks to it unchanged
(whole and streamed answers equal the evaluation's greedy answers), history is cut from the oldest turn,
and bad input gets one clear error each."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import mlflow
import openai
import pytest

from flows.serve import load_transformers_engine
from tasks.core.dialogue import AI, HUMAN, Turn, baize_prompt
from tasks.core.hashing import folder_sha256
from tasks.core.masking import build_examples
from tasks.models.generation import generate_answers
from tasks.models.pyfunc import log_chat_model
from tasks.models.student import save_adapter
from tasks.register.registry import CHAMPION, NoSuchVersion, register_adapter, set_alias, version_by_alias
from tasks.serve.app import build_app, serving_in_thread
from tasks.serve.conversation import BadRequest, ContextOverflow, fit_prompt, render, turns_from_messages
from tasks.serve.engine import Answer, Sampling, StopFilter, cut_at_stop, held_back
from tasks.services.local_server import free_port
from tasks.train.lora import train_lora
from tests.test_lora_and_registry import DIALOGUES, PARAMS

GUARDRAIL = "Be kind."


def test_messages_become_the_training_format_with_the_guardrail_prompt_by_default():
    system, turns = turns_from_messages([{"role": "user", "content": "What is a fever?"}], GUARDRAIL)
    assert render(system, turns) == baize_prompt("What is a fever?", GUARDRAIL)  # what evaluation asked
    system, turns = turns_from_messages([{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}],
                                        GUARDRAIL)
    assert system is None and render(system, turns) == baize_prompt("Hi", None)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
               {"role": "user", "content": [{"type": "text", "text": "And you?"}]}]
    expected_end = "[|Human|] Hi\n[|AI|] Hello.\n[|Human|] And you?\n[|AI|]"
    assert render(*turns_from_messages(history, None)).endswith(expected_end)
    for bad, reason in [([], "at least one"), ([{"role": "tool", "content": "x"}], "role"),
                        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "last message"),
                        ([{"role": "user", "content": None}], "string")]:
        with pytest.raises(BadRequest, match=reason):
            turns_from_messages(bad, None)


def test_history_is_cut_from_the_oldest_exchange_never_the_question(tiny_tokenizer):
    turns = [Turn(HUMAN, "first question " * 20), Turn(AI, "first answer " * 20), Turn(HUMAN, "What is a fever?")]
    whole = fit_prompt(tiny_tokenizer, None, turns, max_tokens=8, context_tokens=4096)
    assert whole.dropped_turns == 0 and "first question" in whole.text
    cut = fit_prompt(tiny_tokenizer, None, turns, max_tokens=8, context_tokens=whole.tokens)  # one token short
    assert cut.dropped_turns == 2 and cut.text == baize_prompt("What is a fever?", None)
    with pytest.raises(ContextOverflow, match="serve.context_tokens"):
        fit_prompt(tiny_tokenizer, None, turns[2:], max_tokens=8, context_tokens=cut.tokens + 7)


def test_streamed_text_never_shows_a_stop_string_or_its_start():
    assert cut_at_stop("Fine.\n[|Human|] more", ("[|Human|]",)) == ("Fine.\n", True)
    assert cut_at_stop("Fine.", ("[|Human|]",)) == ("Fine.", False)
    assert held_back("Fine. [|Hu", ("[|Human|]",)) == 4 and held_back("Fine.", ("[|Human|]",)) == 0
    # a stop string split across pieces, with whitespace before it: shown is exactly the answer
    shown = StopFilter(("[|Human|]", "END"))
    pieces = [shown.feed(p) for p in [" Fine", ", thanks.", " [|Hu", "man|] What", " next?"]]
    assert pieces == ["Fine", ", thanks.", "", "", ""] and shown.stopped and shown.answer == "Fine, thanks."
    # a start of a stop string that never completes is shown once generation ends; trailing space is not
    shown = StopFilter(("[|Human|]",))
    assert [shown.feed(p) for p in ["A [|", "H", " list.\n"]] == ["A", "", " [|H list."]
    assert shown.finish() == "" and shown.answer == "A [|H list."
    shown = StopFilter(("[|Human|]",))
    assert shown.feed("Ends with [|Hu") == "Ends with" and shown.finish() == " [|Hu" and not shown.stopped


@pytest.fixture(scope="module")
def served(tiny_base, tiny_tokenizer, tmp_path_factory):
    """A tiny adapter trained, logged and registered as champion in a fresh store; the server of
    `python -m flows.serve` (same loading, same app) on a free port of 127.0.0.1."""
    root = tmp_path_factory.mktemp("serve-project")
    shutil.copytree(tiny_base, root / "models/base")
    examples, _ = build_examples(DIALOGUES, tiny_tokenizer, "baize", 128)
    model, _ = train_lora(root / "models/base", tiny_tokenizer, examples, [], PARAMS, root / "checkpoints")
    save_adapter(model, root / "adapter", base_ref="models/base")
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    monkey = pytest.MonkeyPatch()
    monkey.chdir(root)
    try:
        experiment = mlflow.create_experiment("t", artifact_location=(root / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            model_id = log_chat_model(root / "adapter", root / "models/base", folder_sha256(root / "models/base"),
                                      "float32", "none", GUARDRAIL)
            version = register_adapter(model_id, "tiny-adapter", {"evaluate.guardrail_prompt": GUARDRAIL,
                                                                  "base.sha256": folder_sha256(root / "models/base")})
        set_alias("tiny-adapter", CHAMPION, version.version)
        engine, info = load_transformers_engine("tiny-adapter", CHAMPION, max_tokens=12, context_tokens=256)
        with serving_in_thread(build_app(engine, info), free_port()) as url:
            yield openai.OpenAI(base_url=url, api_key="unused", max_retries=0), model, info, engine
    finally:
        monkey.undo()
        mlflow.set_tracking_uri(None)


def test_the_openai_sdk_gets_the_evaluations_answers_whole_and_streamed(served, tiny_tokenizer):
    client, model, info, _ = served
    assert [m.id for m in client.models.list().data] == ["tiny-adapter@champion"] and info.version == "1"
    questions = ["What is a fever?", "How do I reset my router?"]
    finish = []
    expected = generate_answers(model, tiny_tokenizer, questions, GUARDRAIL, 48)  # the guardrail prompt by default
    for question, answer in zip(questions, expected, strict=True):
        reply = client.chat.completions.create(model="tiny-adapter@champion", max_tokens=48,
                                               messages=[{"role": "user", "content": question}])
        assert reply.choices[0].message.content == answer and reply.usage.completion_tokens > 0
        finish.append(reply.choices[0].finish_reason)
        stream = client.chat.completions.create(model="tiny-adapter@champion", max_tokens=48, stream=True,
                                                messages=[{"role": "user", "content": question}])
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(pieces) == answer and "[|Human|]" not in "".join(pieces)
    # the trained adapter ends its turn at [|Human|]: the stop path is exercised
    assert "stop" in finish, (finish, expected)


def test_a_long_history_is_answered_and_bad_requests_get_one_clear_error_each(served):
    client, _, _, _ = served
    history = []
    for _ in range(12):  # far over the 256-token context: the oldest exchanges are left out
        history += [{"role": "user", "content": "Tell me about routers and fevers."},
                    {"role": "assistant", "content": "Routers route packets; a fever is a high temperature."}]
    reply = client.chat.completions.create(model="tiny-adapter@champion", max_tokens=12,
                                           messages=[*history, {"role": "user", "content": "And lists?"}])
    assert reply.usage.prompt_tokens <= 256 - 12
    with pytest.raises(openai.BadRequestError, match="context_length_exceeded|over the 256-token context"):
        client.chat.completions.create(model="tiny-adapter@champion",
                                       messages=[{"role": "user", "content": "x " * 400}])
    with pytest.raises(openai.NotFoundError, match="not served here; this server serves tiny-adapter@champion"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])


def test_an_unknown_alias_or_model_is_one_line_naming_what_exists(served):
    with pytest.raises(NoSuchVersion, match=r"no version with alias 'best'; its aliases: champion \(version 1\)"):
        version_by_alias("tiny-adapter", "best")
    with pytest.raises(NoSuchVersion, match="no registered model 'other'.*make run"):
        version_by_alias("other", CHAMPION)


def test_a_stream_closed_early_ends_its_generation_and_frees_the_model(served):
    client, _, _, engine = served
    stream = engine.stream(baize_prompt("What is a fever?", GUARDRAIL), Sampling(max_tokens=400), Answer())
    next(stream)  # the client read one piece, then went away
    stream.close()
    assert not engine._lock.locked()
    assert not [t for t in threading.enumerate() if t.name == "selfchat-generate"]  # not generating on
    reply = client.chat.completions.create(model="tiny-adapter@champion", max_tokens=4,
                                           messages=[{"role": "user", "content": "Hi"}])
    assert reply.usage.completion_tokens > 0


def test_a_client_that_goes_away_mid_stream_frees_the_model_and_requests_wait_their_turn(served):
    client, _, _, engine = served
    url = str(client.base_url).rstrip("/") + "/chat/completions"
    body = {"model": "tiny-adapter@champion", "max_tokens": 400, "stream": True,
            "messages": [{"role": "user", "content": "What is a fever?"}]}
    with httpx.stream("POST", url, json=body, timeout=60) as response:
        next(response.iter_lines())  # one event read, then the connection is dropped
    deadline = time.monotonic() + 60
    while engine._lock.locked() or [t for t in threading.enumerate() if t.name == "selfchat-generate"]:
        assert time.monotonic() < deadline, "the generation went on after its client left"
        time.sleep(0.1)
    # several clients at once: each gets its whole answer (one generation at a time)
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda q: client.chat.completions.create(
            model="tiny-adapter@champion", max_tokens=8, messages=[{"role": "user", "content": q}]),
            ["Hi", "What is a list?", "How do I reset my router?"]))
    assert all(r.usage.completion_tokens > 0 for r in replies)
    with pytest.raises(openai.BadRequestError, match=r"top_p: a number in \(0.0, 1.0\]"):
        client.chat.completions.create(model="tiny-adapter@champion", top_p=0, temperature=0.5,
                                       messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError, match="tools: not supported"):
        client.chat.completions.create(model="tiny-adapter@champion", messages=[{"role": "user", "content": "Hi"}],
                                       tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])


def test_a_parallel_below_one_is_refused_before_anything_loads():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "flows.serve", "--parallel", "0"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--parallel must be at least 1, not 0")

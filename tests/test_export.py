"""The export (`make export`) and the engine that serves it: a GGUF written from a gemma-3 model computes what
the model computes, its chat template renders the training format, the agreement gate passes and fails on
its interval, and the GGUF engine streams, stops and counts as the transformers one does."""

from __future__ import annotations

import json
import threading
import time

import jinja2
import numpy as np
import pytest
import torch

from tasks.core.dialogue import AI, HUMAN, Turn
from tasks.export.agreement import Disagreement, check_agreement, compare_answers, refusal_difference
from tasks.export.build import export_of, stored_agreement, write_agreement
from tasks.export.reference import NoEvaluatedAnswers, evaluated_answers
from tasks.export.templates import JINJA, modelfile
from tasks.models.gguf import ExportError, GGUFGenerator, write_gguf
from tasks.serve.conversation import render
from tasks.serve.engine import STOP, Answer, GGUFEngine, Sampling

PROMPT = "The conversation between human and AI assistant.\n[|Human|] Routers route packets. Do they?\n[|AI|]"


def tiny_gemma(vocab_size: int = 262144):
    """A randomly initialised gemma-3 of the base's vocabulary (so the base's GGUF tokenizer fits it)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                              max_position_embeddings=1024, sliding_window=512, initializer_range=0.2,
                              tie_word_embeddings=True, bos_token_id=2, eos_token_id=1, pad_token_id=0)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # norms away from their zero init: a lost (1 + w) in the file would show
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory):
    model = tiny_gemma()
    path = write_gguf(model, tmp_path_factory.mktemp("gguf") / "tiny.f16.gguf", "tiny", JINJA)
    return model, path


@pytest.fixture(scope="module")
def engine(gemma_gguf):
    generator = GGUFGenerator(gemma_gguf[1], 256, threads=2)
    engine = GGUFEngine(generator, tokenizer=None, parallel=2)  # the app's prompt fitting is not under test here
    yield engine
    engine.close()


def test_the_written_file_computes_the_models_logits(gemma_gguf):
    from llama_cpp import Llama

    model, path = gemma_gguf
    llm = Llama(model_path=str(path), n_ctx=128, logits_all=True, n_threads=2, verbose=False)
    try:
        tokens = llm.tokenize(PROMPT.encode(), add_bos=True, special=True)
        llm.eval(tokens)
        exported = np.array(llm.scores[:len(tokens)])
    finally:
        llm.close()
    with torch.no_grad():
        expected = model(torch.tensor([tokens])).logits[0].numpy()
    # f16 weights: small differences against logits of spread ~1.6; every next-token choice the same
    assert np.abs(exported - expected).max() < 0.05 * expected.std()
    assert (exported.argmax(-1) == expected.argmax(-1)).all()


def test_export_refuses_another_architecture_or_vocabulary(gemma_gguf, tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM

    llama = AutoModelForCausalLM.from_pretrained(tiny_base)
    with pytest.raises(ExportError, match="not 'llama'"):
        write_gguf(llama, tmp_path / "x.gguf", "x", JINJA, source=gemma_gguf[1])
    with pytest.raises(ExportError, match="1000 tokens"):
        write_gguf(tiny_gemma(vocab_size=1000), tmp_path / "x.gguf", "x", JINJA, source=gemma_gguf[1])
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("blocks", [{}, {"trim_blocks": True, "lstrip_blocks": True}])  # plain, transformers'
def test_the_chat_template_renders_the_training_format(blocks):
    turns = [Turn(HUMAN, "What is a fever?"), Turn(AI, "A high temperature."), Turn(HUMAN, "And a chill?")]
    messages = [{"role": "user" if t.role == HUMAN else "assistant", "content": t.text} for t in turns]
    template = jinja2.Environment(**blocks).from_string(JINJA)
    for system in ("Be safe.", None):
        head = [{"role": "system", "content": system}] if system else []
        assert template.render(messages=head + messages) == render(system, turns)


def test_the_modelfile_is_greedy_stops_at_the_human_turn_and_carries_the_guardrail():
    text = modelfile("m.f16.gguf", 'Refuse "harm".', 2048)
    assert text.startswith("FROM ./m.f16.gguf\n")
    assert 'SYSTEM "Refuse \\"harm\\"."' in text and 'PARAMETER stop "[|Human|]"' in text
    assert "PARAMETER temperature 0" in text and "PARAMETER num_ctx 2048" in text
    assert "SYSTEM" not in modelfile("m.f16.gguf", None, 2048)


def test_agreement_serves_only_when_the_intervals_low_end_reaches_the_bar():
    same, rows = compare_answers(["a"] * 208, ["a"] * 208)
    check_agreement(same, 0.9)  # accepted
    assert same.identical == 208 and rows[0] == {"index": 0, "identical": True, "evaluated": "a", "exported": "a"}
    # 37/40 identical is 92%, but its interval reaches down to ~80%: not evidence of >= 90%
    few, _ = compare_answers(["a"] * 40, ["a"] * 37 + ["b"] * 3)
    assert few.share > 0.9 and few.low < 0.9
    with pytest.raises(Disagreement, match="serve.min_identical"):
        check_agreement(few, 0.9)
    with pytest.raises(Disagreement, match="need the same"):
        compare_answers(["a"], [])


def test_the_refusal_rate_difference_sees_answers_that_change_a_verdict():
    keys = [f"g:{i}:guarded" for i in range(20)] + ["mt_bench:81"]
    evaluated = ["Sure, here is how."] * 20 + ["I'm sorry, I can't help with that."]
    same = refusal_difference(compare_answers(evaluated, evaluated)[1], keys)
    assert (same.value, same.low, same.high, same.n) == (0.0, 0.0, 0.0, 20)  # MT-Bench answers left out
    refusing = ["I'm sorry, I can't help with that."] * 10 + evaluated[10:]
    more = refusal_difference(compare_answers(evaluated, refusing)[1], keys)
    assert more.value == 0.5 and more.low > 0


def test_evaluated_answers_are_the_adapters_with_their_prompts_and_lengths(tmp_path):
    samples = tmp_path / "samples.jsonl"
    rows = [{"model": "base", "guarded": True, "id": "g:1", "prompt": "q", "answer": "base's"},
            {"model": "adapter", "guarded": True, "id": "g:1", "prompt": "q", "answer": "no"},
            {"model": "adapter", "guarded": False, "id": "g:1", "prompt": "q", "answer": "yes"},
            {"model": "adapter", "question_id": 81, "question": "Write a poem.", "answer": "A poem."}]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    found = evaluated_answers(samples, "SYS", 32, 64)
    assert [(e.key, e.system, e.max_tokens, e.answer) for e in found] == [
        ("g:1:guarded", "SYS", 32, "no"), ("g:1:unguarded", None, 32, "yes"), ("mt_bench:81", "SYS", 64, "A poem.")]
    with pytest.raises(NoEvaluatedAnswers, match="not found"):
        evaluated_answers(tmp_path / "missing.jsonl", "SYS", 32, 64)
    samples.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(NoEvaluatedAnswers, match="no answers of the evaluated model"):
        evaluated_answers(samples, "SYS", 32, 64)


def test_a_stored_export_is_reused_only_for_the_very_version_it_was_made_from(tmp_path):
    export = export_of("m", "3", tmp_path)
    identity = {"model": "m", "version": "3", "run_id": "r", "adapter.sha256": "abc"}
    agreement, rows = compare_answers(["x"], ["x"])
    evaluated = evaluated_answers_of_one(tmp_path)
    assert stored_agreement(export, identity) is None  # nothing there yet
    export.folder.mkdir(parents=True)
    export.gguf.write_bytes(b"GGUF")
    write_agreement(export, identity, agreement, rows, evaluated, "test")
    assert stored_agreement(export, identity) == agreement
    assert stored_agreement(export, {**identity, "adapter.sha256": "other"}) is None
    export.gguf.unlink()
    assert stored_agreement(export, identity) is None


def evaluated_answers_of_one(tmp_path):
    samples = tmp_path / "one.jsonl"
    samples.write_text(json.dumps({"model": "adapter", "guarded": True, "id": "g:1", "prompt": "q", "answer": "x"}))
    return evaluated_answers(samples, "SYS", 8, 8)


def test_the_gguf_engine_streams_the_whole_answer_and_counts_its_tokens(engine):
    whole = engine.answer(PROMPT, Sampling(max_tokens=12))
    assert whole.completion_tokens == 12 and whole.finish_reason == "length" and whole.text
    assert whole.prompt_tokens == engine.generator.count_tokens(PROMPT) > 10
    streamed = Answer()
    assert "".join(engine.stream(PROMPT, Sampling(max_tokens=12), streamed)) == whole.text == streamed.text
    # the same prompt, the same answer, whatever was asked in between
    engine.answer("Something else entirely.", Sampling(max_tokens=5))
    assert engine.answer(PROMPT, Sampling(max_tokens=12)).text == whole.text
    sampled = [engine.answer(PROMPT, Sampling(max_tokens=12, temperature=1.0, seed=7)).text for _ in range(2)]
    assert sampled[0] == sampled[1]  # a seed gives the same sample


def test_the_gguf_engine_stops_at_a_stop_string_and_never_shows_it(engine):
    whole = engine.answer(PROMPT, Sampling(max_tokens=12)).text
    stop = whole[len(whole) // 2:len(whole) // 2 + 3]
    assert stop.strip(), whole
    cut = Answer()
    shown = "".join(engine.stream(PROMPT, Sampling(max_tokens=12, stop=(stop,)), cut))
    assert shown == cut.text == whole[:whole.index(stop)].rstrip() and cut.finish_reason == "stop"
    assert cut.completion_tokens < 12


def test_a_stream_closed_early_frees_the_engine(engine):
    stream = engine.stream(PROMPT, Sampling(max_tokens=200), Answer())
    next(stream)
    assert engine.busy == 1
    stream.close()
    done = threading.Event()
    threading.Thread(target=lambda: (engine.answer(PROMPT, Sampling(max_tokens=3)), done.set())).start()
    assert done.wait(60)
    while engine.busy:  # the stepper drops the closed stream at its next step
        time.sleep(0.01)


def test_answers_made_together_in_one_batch_are_the_answers_made_alone(engine):
    """Each sequence attends only to its own tokens: answering four prompts two at a time (the other two wait)
    changes none of the greedy answers nor the counts. A seeded sample repeats when made alone again; made in
    a batch its logits differ in the last float bits (~1e-6, the batch's matrix shapes), which can move a
    temperature-1 draw, so it is held to its count only."""
    prompts = [PROMPT, "Another question, longer than the first one by a few words.", "Short.", PROMPT + " Why?"]
    samplings = [Sampling(max_tokens=16), Sampling(max_tokens=9), Sampling(max_tokens=16, temperature=1.0, seed=3),
                 Sampling(max_tokens=12)]
    alone = [engine.answer(p, s) for p, s in zip(prompts, samplings, strict=True)]
    together: dict[int, Answer] = {}
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, engine.answer(prompts[i], samplings[i])))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [together[i] for i in (0, 1, 3)] == [alone[i] for i in (0, 1, 3)]
    assert [together[i].completion_tokens for i in range(4)] == [a.completion_tokens for a in alone] == [16, 9, 16, 12]
    assert engine.answer(prompts[2], samplings[2]) == alone[2]
    assert engine.answer(prompts[2], Sampling(max_tokens=16, temperature=1.0, seed=4)).text != alone[2].text
    # and the greedy answer is the one the export's agreement was measured on
    assert alone[0].text == engine.generator.complete(PROMPT, 16, STOP)


def test_closing_the_engine_ends_every_reader_with_an_error(gemma_gguf):
    """The answer being made and the request waiting for its turn both hear that the engine closed: no
    reader blocks, and an unfinished answer is not reported as finished."""
    engine = GGUFEngine(GGUFGenerator(gemma_gguf[1], 256, threads=2), tokenizer=None, parallel=1)
    running = engine.stream(PROMPT, Sampling(max_tokens=200), Answer())
    next(running)
    errors: list[BaseException] = []

    def wait_in_line() -> None:
        try:
            engine.answer(PROMPT, Sampling(max_tokens=5))
        except RuntimeError as exc:
            errors.append(exc)

    waiting = threading.Thread(target=wait_in_line)
    waiting.start()
    while engine.busy < 2:
        time.sleep(0.01)
    closing = threading.Thread(target=engine.close)  # it waits for the readers before freeing the model
    closing.start()
    waiting.join(60)
    assert [str(e) for e in errors] == ["the answer was not finished: the engine was closed before the answer "
                                        "was finished"]
    with pytest.raises(RuntimeError, match="closed before the answer was finished"):
        list(running)
    closing.join(60)
    assert not closing.is_alive()
    with pytest.raises(RuntimeError, match="the engine is closed"):
        engine.answer(PROMPT, Sampling(max_tokens=5))

"""The served champion behind the OpenAI API, before (engine transformers: the merged model behind
`generate`) and after (engine gguf, the default: its export behind llama.cpp), next to the plain transformers
`generate` loop on the same model and prompts, in one run: completion tokens per second in all and per
client, seconds to the first token (streamed) and to the whole answer, with 1 and 4 concurrent clients; the
GGUF engine one request at a time and with PARALLEL (4) requests in one batch, and whether 4 clients get
the greedy answers 1 client gets.
Run from a project that has a registered champion and models/base (after `make run`).

    python bench/serve.py [--alias champion] [--prompts 8] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import torch

from flows.serve import load_gguf_engine, load_transformers_engine
from tasks.core.config import Params, load_params
from tasks.models.generation import STOP
from tasks.serve.app import Served, build_app, serving_in_thread
from tasks.serve.conversation import fit_prompt, turns_from_messages
from tasks.serve.engine import PARALLEL, ChatEngine, Engine
from tasks.services.local_server import free_port
from tasks.services.runtime import apply_runtime_defaults

QUESTIONS = [
    "How do I reverse a list in Python?", "What are the early signs of dehydration?",
    "Why does my laptop fan get loud when I open a browser?", "What is the difference between a virus and bacteria?",
    "How can I make my home Wi-Fi faster?", "Is it safe to take ibuprofen with coffee?",
    "What does a SQL JOIN do?", "How much water should an adult drink per day?",
]


def plain_loop(engine: ChatEngine, served: Served, questions: list[str], max_tokens: int) -> dict:
    """What a user would write without a server: tokenize, generate (greedy, stop at the human marker), decode."""
    latencies, tokens = [], 0
    started = time.perf_counter()
    for question in questions:
        system, turns = turns_from_messages([{"role": "user", "content": question}], served.system)
        prompt = fit_prompt(engine.tokenizer, system, turns, max_tokens, served.context_tokens).text
        t0 = time.perf_counter()
        batch = engine.tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = engine.model.generate(**batch, max_new_tokens=max_tokens, do_sample=False, stop_strings=[STOP],
                                        tokenizer=engine.tokenizer, pad_token_id=engine.tokenizer.pad_token_id)
        tokens += out.shape[1] - batch["input_ids"].shape[1]
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall, "client_tokens_per_s": tokens / wall,
            "first_token_s": None, "answer_s": statistics.median(latencies)}


def served_clients(url: str, model: str, questions: list[str], max_tokens: int, clients: int) -> dict:
    client = openai.OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=600)

    def ask(question: str) -> tuple[float, float, int, str]:
        t0 = time.perf_counter()
        first, tokens, text = None, 0, ""
        stream = client.chat.completions.create(model=model, max_tokens=max_tokens, stream=True,
                                                stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": question}])
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - t0 if first is None else first
                text += chunk.choices[0].delta.content
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        return first or 0.0, time.perf_counter() - t0, tokens, text

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(ask, questions))
    wall = time.perf_counter() - started
    tokens = sum(r[2] for r in results)
    # what one client sees: its tokens over the time it waited for them (queueing included)
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
            "client_tokens_per_s": statistics.median(r[2] / r[1] for r in results),
            "first_token_s": statistics.median(r[0] for r in results),
            "answer_s": statistics.median(r[1] for r in results), "answers": [r[3] for r in results]}


def served_rows(engine: Engine, served: Served, name: str, questions: list[str], max_tokens: int) -> dict:
    rows = {}
    with serving_in_thread(build_app(engine, served), free_port()) as url:
        served_clients(url, served.model_id, questions[:1], 4, 1)  # warm-up
        for clients in (1, 4):
            rows[f"{name}, {clients} client{'s' if clients > 1 else ''}"] = served_clients(
                url, served.model_id, questions, max_tokens, clients)
    alone, together = rows[f"{name}, 1 client"]["answers"], rows[f"{name}, 4 clients"]["answers"]
    same = sum(a == b for a, b in zip(alone, together, strict=True))
    print(f"{name}: {same}/{len(alone)} greedy answers with 4 clients identical to those with 1", flush=True)
    return rows


def gguf_rows(params: Params, alias: str, parallel: int, name: str, served: Served, questions: list[str],
              max_tokens: int) -> dict:
    engine, _ = load_gguf_engine(params, alias, parallel)
    try:
        return served_rows(engine, served, name, questions, max_tokens)
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alias", default=None)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    apply_runtime_defaults()
    params = load_params(Path("params.yaml"))
    alias = args.alias or params.serve.alias
    params = params.model_copy(update={"serve": params.serve.model_copy(update={"max_tokens": args.max_tokens})})
    torch.manual_seed(0)
    questions = (QUESTIONS * (args.prompts // len(QUESTIONS) + 1))[:args.prompts]
    engine, served = load_transformers_engine(params.register_.model_name, alias, args.max_tokens,
                                              params.serve.context_tokens)
    plain_loop(engine, served, questions[:1], 4)  # warm-up
    rows = {"plain generate loop": plain_loop(engine, served, questions, args.max_tokens)}
    rows |= served_rows(engine, served, "before: transformers", questions, args.max_tokens)
    del engine
    rows |= gguf_rows(params, alias, 1, "gguf, one at a time", served, questions, args.max_tokens)
    rows |= gguf_rows(params, alias, PARALLEL, f"after: gguf, parallel {PARALLEL}", served, questions,
                      args.max_tokens)
    base = rows["before: transformers, 1 client"]["tokens_per_s"]
    print(f"{served.model_id} (version {served.version}), {len(questions)} prompts, max {args.max_tokens} tokens, "
          f"{torch.get_num_threads()} threads; ratio: tokens/s against the transformers engine with 1 client")
    print(f"| {'':32} | tokens | tokens/s | ratio | per client tokens/s | first token s | answer s (median) |")
    print(f"|{'-' * 34}|-------:|---------:|------:|--------------------:|--------------:|------------------:|")
    for name, row in rows.items():
        first = f"{row['first_token_s']:.2f}" if row["first_token_s"] is not None else "-"
        print(f"| {name:32} | {row['tokens']:>6} | {row['tokens_per_s']:>8.1f} | {row['tokens_per_s'] / base:>5.2f} "
              f"| {row['client_tokens_per_s']:>19.1f} | {first:>13} | {row['answer_s']:>17.2f} |")


if __name__ == "__main__":
    main()

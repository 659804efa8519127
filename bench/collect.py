"""Dialogues per minute of the collector against the same OpenAI-compatible server, next to
(a) the server's own capacity, measured by a plain async openai client at the same concurrency, and
(b) a sequential baseline, one request at a time.

The collector does more per dialogue (rate-limit and budget bookkeeping, retries, an fsync'ed journal line,
parsing), so (a) shows its overhead; (b) shows what concurrency buys on this server. The embedded
llama.cpp server answers one request at a time, so expect (b) near 1 there; against vLLM or a hosted API
(`--base-url`, `--model`) concurrency is what fills the server.
    python bench/collect.py [--dialogues 24] [--concurrency 4] [--max-tokens 48] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from pathlib import Path

from openai import AsyncOpenAI

from tasks.collect.collector import Collector, plan_jobs
from tasks.collect.transcript_mode import baize_v1_messages
from tasks.core.assets import ASSETS, read_texts
from tasks.core.config import CollectParams
from tasks.engine.client import engine_client
from tasks.engine.journal import Journal
from tasks.engine.requests import run_batch, run_in_batches
from tasks.services.llm_endpoint import embedded_teacher_gguf, llama_cpp_server


def request_kwargs(params: CollectParams, text: str) -> dict:
    return {"model": params.teacher.model, "messages": baize_v1_messages(text), "max_tokens": params.max_tokens,
            "temperature": params.temperature, "top_p": params.top_p, "seed": params.seed}


async def plain_client(base_url: str, params: CollectParams, texts: list[str], concurrency: int) -> None:
    async with AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0,
                           timeout=params.teacher.timeout_s) as client:
        slots = asyncio.Semaphore(concurrency)

        async def one(text: str) -> None:
            async with slots:
                await client.chat.completions.create(**request_kwargs(params, text))

        await asyncio.gather(*(one(text) for text in texts))


async def collector(base_url: str, params: CollectParams, texts: list[str]) -> None:
    seeds = [{"id": f"bench{i}", "source": "bench", "domain": "general", "text": t} for i, t in enumerate(texts)]
    with tempfile.TemporaryDirectory() as folder, Journal(Path(folder) / "journal.jsonl") as journal:
        async with engine_client(params.teacher, base_url) as client:
            runner = Collector(client, base_url, params, journal)
            await run_in_batches(runner, journal.pending(plan_jobs(seeds, params)), run_batch)


def dialogues_per_minute(run: Callable[[], Awaitable[None]], count: int) -> float:
    started = time.perf_counter()
    asyncio.run(run())
    return 60 * count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialogues", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--base-url", default=None, help="an OpenAI-compatible server (default: embedded llama.cpp)")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    args = parser.parse_args()

    params = CollectParams.model_validate({"teacher": {"base_url": args.base_url, "model": args.model},
                                           "max_tokens": args.max_tokens, "concurrency": args.concurrency,
                                           "batch_size": max(1, args.dialogues // 4)})
    texts = read_texts(ASSETS["healthsearchqa"])[: args.dialogues]
    server = nullcontext(args.base_url) if args.base_url else llama_cpp_server(
        embedded_teacher_gguf(), args.model, 2, 2048, Path(tempfile.gettempdir()) / "bench_collect_server.log")
    with server as base_url:
        asyncio.run(plain_client(base_url, params, texts[:2], 1))  # warm-up: load weights, cache the prompt
        runs: dict[str, list[float]] = {"sequential": [], "plain": [], "collector": []}
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits all three alike
            runs["sequential"].append(dialogues_per_minute(lambda: plain_client(base_url, params, texts, 1),
                                                           len(texts)))
            runs["plain"].append(dialogues_per_minute(
                lambda: plain_client(base_url, params, texts, args.concurrency), len(texts)))
            runs["collector"].append(dialogues_per_minute(lambda: collector(base_url, params, texts), len(texts)))
    rate = {name: statistics.median(values) for name, values in runs.items()}
    print(f"{len(texts)} dialogues, max_tokens {args.max_tokens}, concurrency {args.concurrency}, "
          f"median of {args.repeats} (dialogues/min)")
    for name, label in (("sequential", "sequential baseline, 1 in flight"),
                        ("plain", f"plain openai client, {args.concurrency} in flight"),
                        ("collector", f"selfchat collector, {args.concurrency} in flight")):
        print(f"  {label:<40} {rate[name]:8.1f}   runs: {', '.join(f'{v:.1f}' for v in runs[name])}")
    print(f"collector / plain client (server capacity): {rate['collector'] / rate['plain']:.2f}x")
    print(f"collector / sequential baseline:            {rate['collector'] / rate['sequential']:.2f}x")


if __name__ == "__main__":
    main()

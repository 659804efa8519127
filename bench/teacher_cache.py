"""The embedded teacher with and without llama.cpp's prompt cache, on the default turns-mode collection.

In turns mode each request re-sends its dialogue's whole history; with the cache the server restores the
state of the request that history extends and evaluates only the new tokens. Both runs collect the same
dialogues from the same seeds (params.yaml's collect section, the first --dialogues seeds of the default
run's data/seeds.jsonl), one after the other on one server each, and the journals are compared text by text.
    python bench/teacher_cache.py [--dialogues 12] [--cache-mb 2048] [--seeds data/seeds.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from tasks.collect.collector import Collector, plan_jobs
from tasks.core.config import load_params
from tasks.core.jsonl import read_jsonl
from tasks.engine.client import engine_client
from tasks.engine.journal import Journal
from tasks.engine.requests import run_batch, run_in_batches
from tasks.services.llm_endpoint import embedded_teacher_gguf, llama_cpp_server


def collect_once(params, seeds: list[dict], cache_mb: int, folder: Path) -> tuple[float, list[dict]]:
    journal_file = folder / f"journal-{cache_mb}.jsonl"
    with llama_cpp_server(embedded_teacher_gguf(), params.teacher.model, params.teacher.server_threads,
                          params.teacher.context_size, folder / f"server-{cache_mb}.log",
                          prompt_cache_mb=cache_mb) as base_url:
        async def run() -> None:
            with Journal(journal_file) as journal:
                async with engine_client(params.teacher, base_url) as client:
                    runner = Collector(client, base_url, params, journal)
                    await run_in_batches(runner, journal.pending(plan_jobs(seeds, params)), run_batch)

        started = time.perf_counter()
        asyncio.run(run())
        seconds = time.perf_counter() - started
    return seconds, [line["record"] for line in read_jsonl(journal_file) if "record" in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialogues", type=int, default=12)
    parser.add_argument("--cache-mb", type=int, default=2048)
    parser.add_argument("--seeds", type=Path, default=Path("data/seeds.jsonl"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params).collect
    seeds = list(read_jsonl(args.seeds))[: args.dialogues]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        off_s, off = collect_once(params, seeds, 0, folder)
        on_s, on = collect_once(params, seeds, args.cache_mb, folder)
        server_log = (folder / f"server-{args.cache_mb}.log").read_text(errors="replace")
        hits, misses = server_log.count("cache hit"), server_log.count("cache miss")
    text = {r["id"]: (r.get("raw"), r.get("turns")) for r in off}
    same = sum(text.get(r["id"]) == (r.get("raw"), r.get("turns")) for r in on)
    requests = sum(len(r.get("raw") or []) for r in off)
    print(f"{len(seeds)} dialogues, {requests} teacher replies, turns mode, one request at a time")
    print(f"  no prompt cache          {off_s:7.1f} s")
    print(f"  prompt cache {args.cache_mb:>5} MB    {on_s:7.1f} s   {off_s / on_s:.2f}x")
    print(f"  cache hits: {hits} of {hits + misses} requests")
    print(f"  dialogues with identical text: {same} of {len(off)}")


if __name__ == "__main__":
    main()

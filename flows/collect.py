"""Stage 3, collect: the teacher chats with itself about each seed (Baize's self-chat)."""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow

from flows.stage import run_stage, step
from tasks.config import load_params
from tasks.jsonl import read_jsonl, write_json, write_jsonl
from tasks.paths import DIALOGUES, LOGS, QUARANTINE_COLLECT, SEEDS, metrics_file
from tasks.selfchat import collect_corpus
from tasks.teacher import teacher_client, teacher_endpoint
from tasks.tracking import stage_run


@flow(name="collect", log_prints=True)
def collect(params_file: str = "params.yaml") -> dict[str, float]:
    params = load_params(Path(params_file)).collect
    seeds = list(read_jsonl(SEEDS))
    with stage_run("collect", params), teacher_endpoint(params.teacher, LOGS) as base_url:
        client = teacher_client(params.teacher, base_url)
        dialogues, quarantined, stats = step(collect_corpus, "self-chat")(client, base_url, seeds, params)
        write_jsonl(DIALOGUES, dialogues)
        write_jsonl(QUARANTINE_COLLECT, quarantined)
        write_json(metrics_file("collect"), stats)
        mlflow.log_metrics(stats)
        mlflow.log_artifact(str(QUARANTINE_COLLECT))
    print(f"{stats['dialogues']} dialogues, {stats['quarantined']} quarantined "
          f"({stats['completion_tokens']} completion tokens in {stats['seconds']} s)")
    return stats


if __name__ == "__main__":
    run_stage(collect)

"""Collection across workers: shards by seed hash, journals that read each other, and two real Prefect
workers giving the corpus one process gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.collect.collector import Collector, Job, all_journals, journal_path, plan_jobs
from tasks.collect.shards import shard_budget, shard_jobs, shard_journal_path, shard_of
from tasks.core.config import Budget, CollectParams
from tasks.engine.journal import Journal, JournalView, sibling_journals
from tests.conftest import stage_env

ROOT = Path(__file__).resolve().parents[1]


def test_shards_partition_the_plan_and_a_seed_keeps_its_shard():
    seeds = [{"id": f"s{i}", "text": f"q{i}"} for i in range(50)]
    plan = plan_jobs(seeds, CollectParams(samples_per_seed=2))
    parts = [shard_jobs(plan, shard, 3) for shard in (1, 2, 3)]
    assert sorted(j.id for part in parts for j in part) == sorted(j.id for j in plan)
    assert all(parts), "50 seeds leave no shard empty"
    for part in parts:  # both samples of a seed in one shard, in plan order
        assert [j.id for j in part] == [j.id for j in plan if j in part]
        assert len({j.seed["id"] for j in part}) * 2 == len(part)
    assert shard_of("s7", 3) == shard_of("s7", 3) and {shard_of(s["id"], 1) for s in seeds} == {1}


def test_shard_budgets_split_what_is_left_so_the_shards_never_cross_it():
    split = shard_budget(Budget(max_tokens=1000, max_cost_usd=1.0), 400, 0.4, 3)
    assert split.max_tokens == 200 and split.max_cost_usd == pytest.approx(0.2)
    assert shard_budget(Budget(max_tokens=100), 150, 0.0, 2) == Budget(max_tokens=1)
    assert shard_budget(Budget(), 10**9, 99.0, 4) == Budget()


def test_journals_of_any_shard_layout_are_read_so_nothing_is_asked_twice(tmp_path: Path):
    params = CollectParams(budget={"max_tokens": 10_000})
    plan = [Job(name, {"id": name}, 0) for name in "abcdef"]
    usage = {"prompt_tokens": 10, "completion_tokens": 5}
    for shard in (1, 2):  # an earlier run as 2 shards, one of them killed after its first dialogue
        with Journal(shard_journal_path(params, shard, 2, tmp_path)) as journal:
            for job in shard_jobs(plan, shard, 2)[:1 if shard == 2 else None]:
                journal.append("ok", {"id": job.id, "usage": usage, "teacher": {"model": "m"}})
    torn = shard_journal_path(params, 2, 2, tmp_path)
    with torn.open("a") as handle:
        handle.write('{"status": "ok", "record": {"id": "x')
    (tmp_path / (journal_path(params, tmp_path).stem + ".corrupt.jsonl")).write_text("{}\n")
    whole = journal_path(params, tmp_path)
    assert [p.name.split(".", 1)[1] for p in sibling_journals(whole)] == ["shard-1-of-2.jsonl", "shard-2-of-2.jsonl"]
    with Journal(whole) as journal:  # resumed as one process
        left = journal.pending(plan)
        assert len(left) == len(shard_jobs(plan, 2, 2)) - 1
        assert Collector(None, "", params, journal).ledger.prior_tokens == 15 * (6 - len(left))
        for job in left:
            journal.append("ok", {"id": job.id})
    assert torn.read_text().endswith('"id": "x'), "a sibling's torn line is its owner's to repair"
    view = JournalView(all_journals(params, tmp_path))
    assert view.pending(plan) == [] and len(view.lines) == 6


def _project(folder: Path, teacher_url: str, shards: int) -> Path:
    folder.mkdir()
    texts = ["How do I boil an egg?", "What is a fever?", "How do I reset my router?", "Why is the sky blue?",
             "What is a prime number?", "How do plants drink water?", "What does a CPU do?", "What is a river?"]
    (folder / "data").mkdir()
    (folder / "data/seeds.jsonl").write_text("".join(
        json.dumps({"id": f"seed{i}", "source": "test", "domain": "general", "text": t}) + "\n"
        for i, t in enumerate(texts)))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["collect"].update(max_tokens=96, samples_per_seed=1, min_kept_fraction=0, shards=shards)
    params["collect"]["turns"]["max_rounds"] = 1  # the default mode, one request per dialogue
    params["collect"]["teacher"].update(base_url=teacher_url)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    config["deployments"] = [d for d in config["deployments"] if d["name"] == "shard"]
    (folder / "prefect.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for code in ("flows", "tasks"):  # the checkout the workers run the shards in
        (folder / code).symlink_to(ROOT / code)
    return folder


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout + done.stderr


@pytest.mark.integration
def test_two_workers_collect_the_corpus_one_process_collects(tmp_path, teacher_url, prefect_api):
    """`make deploy` + `make up` with collect.shards 2: two real workers on the pool selfchat-collect each run
    a shard against the one teacher; the merged corpus is byte for byte the one-process corpus."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    one = _project(tmp_path / "one", teacher_url, shards=1)
    two = _project(tmp_path / "two", teacher_url, shards=2)
    env = stage_env(prefect_api, PREFECT_HOME=str(two / ".prefect"))
    # a missing deployment is one line, before anything is asked
    missing = subprocess.run([sys.executable, "-m", "flows.collect"], cwd=two, env=env, capture_output=True,
                             text=True, timeout=600)
    assert missing.returncode == 1 and "needs the deployment collect-shard/shard: run `make deploy`" in missing.stderr
    assert not (two / "data/dialogues.jsonl").exists()
    try:
        deployed = _run([sys.executable, "-m", "tasks.services.deployments"], two, env)
        assert "collect-shard/shard: on demand (pool selfchat-collect)" in deployed
        up = _run([sys.executable, "-m", "tasks.services.prefect_server", "up"], two, env)
        assert "Prefect workers: 2 on pool 'selfchat-collect'" in up
        sharded = _run([sys.executable, "-m", "flows.collect"], two, env)
        assert "collecting as 2 shards on the Prefect pool 'selfchat-collect'" in sharded
        _run([sys.executable, "-m", "flows.collect"], one, stage_env(prefect_api, PREFECT_HOME=str(one / ".prefect")))

        with temporary_settings(updates={PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
            runs = [r for r in client.read_flow_runs() if r.name.startswith("collect ") and " shard " in r.name]
            assert sorted(r.name.split(" shard ")[1] for r in runs) == ["1 of 2", "2 of 2"]
            assert all(r.state_name == "Completed" for r in runs)
        logs = [(two / f"logs/prefect-collect-worker-{i}.log").read_text() for i in (1, 2)]
        # a worker may try to claim a run the other one got first: what it ran is what it saw finish
        ran = [{r.name for r in runs if f"Flow run '{r.name}' - Finished in state Completed()" in log} for log in logs]
        assert ran[0] and ran[1] and not ran[0] & ran[1], f"each worker ran a shard: {ran}"
    finally:
        _run([sys.executable, "-m", "tasks.services.prefect_server", "down"], two, env)
    assert not list((two / "data/collect").glob("*.tally-*.json")), "each shard's tally is read once and removed"
    metrics = json.loads((two / "metrics/collect.json").read_text())
    assert metrics["planned"] == 8 and metrics["collected_now"] == 8 and metrics["requests"] >= 8
    # nothing left to ask: the stage needs no worker (they are down now) and gives the same corpus
    before = (two / "data/dialogues.jsonl").read_bytes()
    again = _run([sys.executable, "-m", "flows.collect"], two, env)
    assert "collecting as" not in again and (two / "data/dialogues.jsonl").read_bytes() == before

    journals = sorted((two / "data/collect").glob("journal-*.shard-*.jsonl"))
    assert [p.name.split(".", 1)[1] for p in journals] == ["shard-1-of-2.jsonl", "shard-2-of-2.jsonl"]
    for shard, journal in enumerate(journals, 1):
        ids = {json.loads(line)["record"]["seed_id"] for line in journal.read_text().splitlines()}
        assert ids and {shard_of(i, 2) for i in ids} == {shard}
    for output in ("data/dialogues.jsonl", "data/quarantine/collect.jsonl"):
        assert (two / output).read_bytes() == (one / output).read_bytes(), output
    assert (two / "data/dialogues.jsonl").read_text(), "the teacher kept some dialogues"


def test_shards_share_the_rate_limits():
    from tasks.collect.shards import shard_rate_limits
    from tasks.core.config import RateLimits

    assert shard_rate_limits(RateLimits(requests_per_minute=5000, tokens_per_minute=10**6), 3) == \
        RateLimits(requests_per_minute=1666, tokens_per_minute=333_333)
    assert shard_rate_limits(RateLimits(), 4) == RateLimits()


def test_of_two_unfinished_entries_in_different_journals_the_later_counts(tmp_path: Path):
    older, newer = tmp_path / "journal-x.shard-1-of-2.jsonl", tmp_path / "journal-x.jsonl"
    older.write_text(json.dumps({"status": "retry_later", "record": {"id": "a"}, "at": "2026-11-28T10:00:00"}) + "\n")
    newer.write_text(json.dumps({"status": "abandoned", "record": {"id": "a"}, "at": "2026-11-28T11:00:00"}) + "\n")
    assert JournalView([newer, older]).entries["a"]["status"] == "abandoned"
    assert JournalView([older, newer]).entries["a"]["status"] == "abandoned"

"""Kill -9 the collect stage mid-run, start it again: nothing lost, nothing duplicated, nothing asked twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import stage_env
from tests.fault_proxy import ECHO_KEY, FaultProxy, scheduled

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration
POISON = "POISONED-SEED"
SAMPLES = 2


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def collect_command(prefect_api: str) -> tuple[list[str], dict[str, str]]:
    return [sys.executable, "-m", "flows.collect"], stage_env(prefect_api, PYTHONPATH=str(ROOT))


@pytest.fixture
def project(tmp_path: Path, teacher_url: str):
    fault_proxy = FaultProxy(upstream=teacher_url.removesuffix("/v1"), delay_s=0.3,
                             choose=scheduled([], always_failing_marker=POISON.encode()))
    base_url = fault_proxy.start()
    texts = ["How do I boil an egg?", "What is a fever?", "How do I reset my router?", "Why is the sky blue?",
             "What is a prime number?", "How do plants drink water?", "What does a CPU do?",
             f"{POISON} what is a river?"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data/seeds.jsonl").write_text("".join(
        json.dumps({"id": f"seed{i}", "source": "test", "domain": "general", "text": t}) + "\n"
        for i, t in enumerate(texts)))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    # 32 tokens cut most transcripts short (quarantined): this test is about resuming, not about yield
    # transcript mode: one request per dialogue, which the request counts below rely on
    params["collect"].update(mode="transcript", max_tokens=32, concurrency=2, batch_size=4, samples_per_seed=SAMPLES,
                             min_kept_fraction=0)
    params["collect"]["teacher"].update(base_url=base_url, max_retries=1, backoff_initial_s=0.05,
                                        backoff_max_s=0.1, timeout_s=60)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    yield tmp_path, fault_proxy, len(texts) * SAMPLES
    fault_proxy.stop()


def test_killed_collection_resumes_without_loss_or_duplicates(project, prefect_api):
    root, fault_proxy, planned = project
    command, env = collect_command(prefect_api)
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    journal: Path | None = None
    while time.monotonic() < deadline and process.poll() is None:
        journal = next((root / "data/collect").glob("journal-*.jsonl"), None) if (root / "data/collect").exists() \
            else None
        if journal and len(journal.read_text().splitlines()) >= 4:
            break
        time.sleep(0.2)
    assert process.poll() is None, "collection finished (or failed) before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert journal is not None
    with journal.open("a") as handle:  # as if the kill had landed in the middle of writing a line
        handle.write('{"status": "ok", "record": {"id": "torn')
    done_before = len(journal.read_text().splitlines()) - 1
    assert done_before < planned
    assert not (root / "data/dialogues.jsonl").exists(), "outputs are written only by a finished run"
    requests_before = len(fault_proxy.seen)

    rerun = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    dialogues, quarantined = lines(root / "data/dialogues.jsonl"), lines(root / "data/quarantine/collect.jsonl")
    ids = [r["id"] for r in dialogues + quarantined]
    assert len(ids) == len(set(ids)) == planned, "every (seed, sample) exactly once"
    assert [json.loads(line)["record"]["id"] for line in journal.read_text().splitlines()].__len__() == planned
    poisoned = [q for q in quarantined if q["topic"].startswith(POISON)]
    assert len(poisoned) == SAMPLES
    assert all(q["reason"].startswith("teacher error after 2 attempt(s): InternalServerError") for q in poisoned)
    assert all(q["retry_next_run"] for q in poisoned), "a 500 may pass: asked again by the next run"
    assert all(q["reason"] for q in quarantined)
    metrics = json.loads((root / "metrics/collect.json").read_text())
    assert metrics["resumed"] == done_before and metrics["collected_now"] == planned - done_before
    assert metrics["quarantine_reasons"]["teacher_error_InternalServerError"] == SAMPLES
    # the second run asked only for what was missing (poisoned seeds: 2 attempts each)
    asked = [s for s in fault_proxy.seen[requests_before:] if s.path.endswith("/chat/completions")]
    assert len(asked) == metrics["requests"] == metrics["collected_now"] + metrics["retries"]

    seen = len(fault_proxy.seen)
    again = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    asked_again = fault_proxy.seen[seen:]
    assert asked_again and all(POISON.encode() in s.body for s in asked_again), \
        "a rerun asks again only what failed transiently; finished dialogues are not asked twice"
    assert json.loads((root / "metrics/collect.json").read_text())["retried_after_outage"] == SAMPLES
    assert lines(root / "data/dialogues.jsonl") == dialogues


def wait_for_journal_lines(root: Path, process: subprocess.Popen, count: int) -> Path:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        journal = next((root / "data/collect").glob("journal-*.jsonl"), None) if (root / "data/collect").exists() \
            else None
        if journal and len(journal.read_text().splitlines()) >= count:
            return journal
        time.sleep(0.2)
    raise AssertionError("collection finished (or failed) before it could be interrupted")


def test_ctrl_c_stops_promptly_with_the_journal_intact_and_a_resume_hint(project, prefect_api):
    root, _, planned = project
    command, env = collect_command(prefect_api)
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    journal = wait_for_journal_lines(root, process, 2)
    interrupted = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)  # a bound for a hung process, not a speed claim
    print(f"exited {time.monotonic() - interrupted:.1f} s after Ctrl-C")
    assert process.returncode == 130, stderr[-3000:]
    hint = "error: interrupted; run the stage again to resume (finished work is kept)"
    assert hint in stderr.splitlines()
    assert quiet_failure(stderr), "Ctrl-C reads as its one line, not Prefect's crashed states and tracebacks"
    entries = [json.loads(line) for line in journal.read_text().splitlines()]  # every line whole
    assert 2 <= len(entries) < planned


def quiet_failure(stderr: str) -> bool:
    """No traceback and no Prefect ERROR line on the terminal: the stage's `error:` line is the failure."""
    return not [line for line in stderr.splitlines()
                if "Traceback" in line or "| ERROR" in line or "Crashed" in line or "Failed(" in line]


def test_a_teacher_on_a_closed_port_is_one_line_on_the_terminal_and_the_details_are_in_the_log(project, prefect_api):
    root, _, planned = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["collect"]["teacher"].update(base_url="http://127.0.0.1:9/v1", max_retries=0, max_consecutive_failures=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    command, env = collect_command(prefect_api)
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "teacher unreachable" in errors[0] and errors[0].endswith("(details: logs/collect.log)")
    assert quiet_failure(result.stderr), result.stderr[-3000:]
    assert "Traceback" in (root / "logs/collect.log").read_text(), "the details are kept in the stage's log file"


def test_a_second_collection_in_the_same_checkout_is_refused_before_any_request(project, prefect_api):
    """Refused by the checkout's lock (tasks/services/checkout.py), naming the run that holds it; the journal's own
    lock, which would refuse next, is tested in test_collector_parts."""
    root, fault_proxy, _ = project
    # the first collection must still be running when the second has started up (seconds of imports);
    # it is killed below, so the delay costs nothing
    fault_proxy.delay_s = 5.0
    command, env = collect_command(prefect_api)
    first = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        journal = wait_for_journal_lines(root, first, 1)
        before = len(journal.read_text().splitlines())
        second = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1
        refusal = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
        assert len(refusal) == 1 and "refused: another selfchat run holds this checkout (collect " in refusal[0]
        assert f"pid {first.pid}," in refusal[0]
        assert refusal[0].endswith("wait for it to end or stop it (details: logs/collect.log)")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    ids = [json.loads(line)["record"]["id"] for line in journal.read_text().splitlines()]
    assert len(ids) == len(set(ids)) >= before, "one writer: no dialogue journaled twice"


def test_a_key_echoed_by_the_server_reaches_no_output_log_or_store(tmp_path: Path, teacher_url: str, prefect_api: str):
    """The whole stage against a server that prints the caller's key in several spellings: stderr, the
    Prefect server's logs and flow run states, MLflow and every file written hold no 8 characters of it."""
    key = "sk-proj-Hq3Wd8Lp2Xv6Tn9Rb4Kc"
    fault_proxy = FaultProxy(upstream=teacher_url.removesuffix("/v1"), choose=lambda number, body: ECHO_KEY)
    base_url = fault_proxy.start()
    try:
        (tmp_path / "data").mkdir()
        (tmp_path / "data/seeds.jsonl").write_text("".join(
            json.dumps({"id": f"seed{i}", "source": "test", "domain": "general", "text": t}) + "\n"
            for i, t in enumerate(["What is a fever?", "Why is ice cold?", "How do I boil an egg?"])))
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["collect"]["teacher"].update(base_url=base_url, max_retries=0, max_consecutive_failures=2)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        command, env = collect_command(prefect_api)
        result = subprocess.run(command, cwd=tmp_path, env={**env, "OPENAI_API_KEY": key}, capture_output=True,
                                text=True, timeout=300)
    finally:
        fault_proxy.stop()
    assert result.returncode == 1 and "error: teacher unreachable" in result.stderr
    assert "upstream rejected ***" in result.stderr
    logs = httpx.post(f"{prefect_api}/logs/filter", json={}).text
    states = httpx.post(f"{prefect_api}/flow_runs/filter", json={}).text
    written = b"".join(f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()).decode("utf-8", "replace")
    everything = (result.stdout + result.stderr + logs + states + written).lower()
    assert "teacher unreachable" in states.lower() + logs.lower(), "the failure did reach Prefect"
    leaked = [key[i:i + 8] for i in range(len(key) - 8 + 1) if key[i:i + 8].lower() in everything]
    assert leaked == []

"""The real pipeline on a tiny config: real llama.cpp teacher (SmolLM2 from its wheel), real DVC, Prefect,
MLflow and great-expectations; only the student is a tiny random model so training takes seconds."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tasks.core.hashing import folder_sha256
from tests.conftest import stage_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration
STAGES = ["base", "seeds", "collect", "validate", "train", "calibrate", "evaluate-base", "evaluate", "register"]
MAIN = "register"  # `make run`: the pipeline up to registration (`make distill` runs the distill-* stages)


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, prefect_api: str) -> tuple[Path, dict[str, str]]:
    project = tmp_path_factory.mktemp("project")
    for item in ("flows", "tasks", "expectations"):
        shutil.copytree(ROOT / item, project / item, ignore=shutil.ignore_patterns("__pycache__"))
    for item in ("dvc.yaml", ".dvcignore", ".gitignore", "pyproject.toml"):
        shutil.copy(ROOT / item, project / item)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["base"]["model"] = str(tiny_base)
    # no sensitive seeds: whether the tiny run's teacher declines one is not what this test is about
    params["seeds"].update(size=5, sensitive_share=0.0,
                           sources=[{"source": "builtin:healthsearchqa", "domain": "medical", "limit": 3},
                                    {"source": "builtin:coding", "domain": "tech", "limit": 3}])
    params["collect"]["max_tokens"] = 160
    params["collect"]["turns"]["max_rounds"] = 1  # one request per dialogue: the test is about the pipeline
    # a high learning rate: three steps must move the tiny model's held-out perplexity clearly
    params["train"].update(epochs=None, max_steps=3, warmup_ratio=0.0, batch_size=2, bf16=False, max_length=128,
                           learning_rate=0.01)
    params["evaluate"].update(should_refuse=[{"name": "jailbreakbench", "limit": 2}],
                              should_answer=[{"name": "overrefusal_benign_edgy", "limit": 2}], max_new_tokens=8,
                              benchmarks=[{"name": "openbookqa", "limit": 4}, {"name": "piqa", "limit": 3}],
                              mtbench={"limit": 2, "max_new_tokens": 8}, bootstrap_samples=200)
    params["evaluate"]["judge"].update(calibration_limit=4, rating_max_tokens=48)
    # a random tiny model answers nothing well: only the primary metric decides here (tolerances: unit tests)
    params["register"].update(primary_metric="perplexity_with_markers", tolerances={}, bootstrap_samples=200)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = stage_env(prefect_api, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                    SELFCHAT_PIPELINE_ID="itest-1", PYTHONPATH=str(project))
    run(["git", "init", "-q"], project, env)
    run(["dvc", "init", "-q"], project, env)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], project, env)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], project, env)
    repro = run(["dvc", "repro", MAIN], project, env)
    (project / "repro.log").write_text(repro.stdout + repro.stderr)
    return project, env


def main_status(root: Path, env: dict[str, str]) -> dict:
    """`dvc status` of the stages up to registration (a distillation round's stages are the last test's)."""
    status = json.loads(run(["dvc", "status", "--json"], root, env).stdout)
    return {stage: why for stage, why in status.items() if not stage.startswith("distill-")}


def up_to_date(root: Path, env: dict[str, str]) -> bool:
    """Nothing to rerun but register, which DVC always reruns (see dvc.yaml)."""
    return main_status(root, env) == {"register": ["always changed"]}


def out_hashes(root: Path) -> dict[str, str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}


def registry(project: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def test_every_artifact_is_written_and_nothing_is_lost(project):
    root, _ = project
    assert (root / "models/base/model.safetensors").exists()
    seeds = lines(root / "data/seeds.jsonl")
    assert len(seeds) == 5 and all(s["provenance"]["sha256"] for s in seeds)
    dialogues = lines(root / "data/dialogues.jsonl")
    collect_q = lines(root / "data/quarantine/collect.jsonl")
    assert len(dialogues) + len(collect_q) == 5
    assert all(q["reason"] for q in collect_q)
    for d in dialogues:
        assert d["raw"] and d["usage"]["completion_tokens"] > 0 and d["teacher"]["endpoint"] == "127.0.0.1"
    train, heldout = lines(root / "data/train.jsonl"), lines(root / "data/heldout.jsonl")
    validate_q = lines(root / "data/quarantine/validate.jsonl")
    assert len(train) + len(heldout) + len(validate_q) == len(dialogues)
    assert all(q["reasons"] for q in validate_q)
    quality = json.loads((root / "metrics/quality.json").read_text())
    assert quality["quarantined"] == len(validate_q)
    assert (root / "reports/data_docs/index.html").exists()
    exported = json.loads((root / "data/export/baize_format.json").read_text())
    assert len(exported) == len(train) + len(heldout) and all(set(e) == {"topic", "input"} for e in exported)
    assert "seeds" in (root / "reports/data_docs/index.html").read_text()
    summary = (root / "reports/quality/summary.md").read_text()
    assert f"- dialogues checked: {len(dialogues)}" in summary
    assert (root / "reports/quality/distributions.png").stat().st_size > 0
    assert (root / "models/adapter/adapter_model.safetensors").exists()
    assert (root / "plots/train_loss.csv").read_text().count("\n") == 4  # header + 3 steps
    calibration = json.loads((root / "metrics/calibrate.json").read_text())
    assert calibration["judge"]["n"] + calibration["judge"]["parse_failures"] == 4
    assert calibration["matcher"]["n"] == 4 and calibration["published"]["gpt_4"]["n"] == 4
    assert len(lines(root / "reports/calibrate/verdicts.jsonl")) == 4
    evaluation = json.loads((root / "metrics/eval.json").read_text())
    for model in ("base", "adapter"):
        assert {"perplexity_content", "perplexity_with_markers", "refusal_rate_guarded@matcher",
                "refusal_rate_unguarded@matcher", "answer_rate_guarded@matcher", "benchmark.openbookqa.acc",
                "benchmark.piqa.acc_norm"} <= evaluation[model].keys()
        assert evaluation[model]["benchmark.openbookqa.acc"]["n"] == 4
        assert all(e["low"] <= e["value"] <= e["high"] for e in evaluation[model].values())
    assert evaluation["verdict_source"] in {"judge", "matcher"}
    items = lines(root / "reports/eval/items.jsonl")
    assert {i["model"] for i in items} == {"base", "adapter"}
    samples = lines(root / "reports/eval/samples.jsonl")
    assert len(samples) == 2 * (2 * 4 + 2)  # per model: 4 prompts guarded and unguarded, 2 MT-Bench questions
    # the judge is asked only when the calibration trusts it (evaluate.judge_verdicts: auto)
    judged = calibration["judge"]["trustworthy"]
    assert all(("judge_raw" in s) == judged for s in samples)
    provenance = json.loads((root / "reports/eval/verdicts.json").read_text())
    assert provenance["mtbench_score"]["calibrated"] is False
    assert provenance["refusal_rate_guarded"]["source"] == evaluation["verdict_source"]
    # the base's results come from the evaluate-base stage's output, whole
    base_items = lines(root / "reports/eval_base/items.jsonl")
    assert base_items and all(i["model"] == "base" for i in base_items)
    assert base_items == [i for i in items if i["model"] == "base"]
    assert "## Verdict sources vs human labels" in (root / "reports/eval/summary.md").read_text()
    assert (root / "reports/eval/metrics.png").stat().st_size > 0
    collect = json.loads((root / "metrics/collect.json").read_text())
    assert collect["requests"] == 5 and collect["completion_tokens"] > 0


def test_registry_entry_alias_and_grouped_runs(project):
    root, _ = project
    client = registry(root)
    version = client.get_model_version_by_alias("selfchat-adapter", "challenger")
    assert str(version.version) == "1"
    assert version.tags["dvc.data/train.jsonl"] and version.tags["train.lora.r"] == "8"
    # which base, by content: the hash of the folder the adapter was trained on
    assert version.tags["base.sha256"] == folder_sha256(root / "models/base")
    assert version.tags["train.format"] == "baize"
    assert "declines" in version.tags["evaluate.guardrail_prompt"]
    decision = json.loads((root / "metrics/register.json").read_text())
    assert decision["promoted"] is True and decision["bar"].startswith("the base model"), decision
    assert version.tags["promotion.decision"] == "promoted" and "Compared with" in version.description
    assert str(client.get_model_version_by_alias("selfchat-adapter", "champion").version) == "1"
    runs = client.search_runs([client.get_experiment_by_name("selfchat").experiment_id],
                              "tags.`selfchat.pipeline_id` = 'itest-1'")
    parents = [r for r in runs if r.data.tags["selfchat.role"] == "pipeline"]
    stages = {r.data.tags["selfchat.stage"] for r in runs if r.data.tags["selfchat.role"] == "stage"}
    assert len(parents) == 1
    assert stages == set(STAGES)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
               for r in runs if r.data.tags["selfchat.role"] == "stage")
    # the pipeline run tells the story: every stage's headline numbers and params, the decision in words
    parent = parents[0]
    assert {"collect/dialogues", "validate/pass_rate", "train/steps", "register/promoted"} <= set(parent.data.metrics)
    assert parent.data.metrics["register/promoted"] == 1.0 and "train.lora.r" in parent.data.params
    assert "Version 1: promoted to champion. On perplexity_with_markers" in parent.data.tags["mlflow.note.content"]
    first_stage = min(r.info.start_time for r in runs if r.data.tags["selfchat.role"] == "stage")
    assert parent.info.status == "FINISHED" and parent.info.end_time - first_stage > 10_000  # spans its stages
    # made from a clean commit: what the stages write themselves (dvc.lock, metrics) does not make it dirty
    assert {r.data.tags["git.sha"].endswith("-dirty") for r in runs} == {False}


def test_every_stage_reported_to_the_one_prefect_server(project, prefect_api):
    flows = {f["name"] for f in httpx.post(f"{prefect_api}/flows/filter", json={}).json()}
    assert set(STAGES) <= flows
    completed = httpx.post(f"{prefect_api}/flow_runs/count", json={
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}).json()
    assert completed >= len(STAGES)
    repro = (project[0] / "repro.log").read_text()
    assert "Running stage 'collect'" in repro and "temporary server" not in repro.lower(), \
        "no stage starts a Prefect server of its own"
    # the stages of one pipeline run: found by its tag, named after it, each with its result and MLflow run
    runs = httpx.post(f"{prefect_api}/flow_runs/filter", json={
        "flow_runs": {"tags": {"all_": ["pipeline:itest-1"]}, "state": {"type": {"any_": ["COMPLETED"]}}}}).json()
    by_name = {r["name"]: r for r in runs}
    assert {f"{stage} itest-1" for stage in STAGES} <= set(by_name), sorted(by_name)
    for stage in STAGES:
        run_ = by_name[f"{stage} itest-1"]
        assert any(tag.startswith("mlflow:") for tag in run_["tags"]), (stage, run_["tags"])
        artifacts = httpx.post(f"{prefect_api}/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [run_["id"]]}, "key": {"any_": [f"{stage}-result"]}}}).json()
        assert len(artifacts) == 1 and "| metric | value |" in artifacts[0]["data"], (stage, artifacts)
    train = httpx.post(f"{prefect_api}/artifacts/filter", json={"artifacts": {"key": {"any_": ["train-result"]}}})
    assert "models/adapter" in train.json()[0]["data"] and "train_loss_mean" in train.json()[0]["data"]
    # no library noise in the logs (datasets' hashing disassembles functions through print)
    logs = httpx.post(f"{prefect_api}/logs/filter", json={
        "logs": {"flow_run_id": {"any_": [by_name["train itest-1"]["id"]]}}, "limit": 200}).json()
    assert logs and not any("LOAD_GLOBAL" in entry["message"] for entry in logs)


def test_same_inputs_give_byte_identical_outputs(project):
    """Every stage again from scratch (the collection journal removed, so the teacher is asked anew): the
    same hashes in dvc.lock, so nothing downstream looks changed. Metrics files that report timings, and the
    registry, which already holds this registration, does not change."""
    root, env = project
    before, decided = out_hashes(root), (root / "metrics/register.json").read_bytes()
    shutil.rmtree(root / "data/collect")
    run(["dvc", "repro", "--force", MAIN], root, {**env, "SELFCHAT_PIPELINE_ID": "itest-again"})
    after = out_hashes(root)
    timed = {"metrics/collect.json", "metrics/quality.json", "metrics/train.json"}
    assert {k: v for k, v in after.items() if k not in timed} == {k: v for k, v in before.items() if k not in timed}
    assert {"data/dialogues.jsonl", "data/train.jsonl", "models/adapter", "metrics/eval.json",
            "reports/eval", "reports/eval_base", "metrics/calibrate.json"} <= after.keys()
    # the same adapter, items and params: the register stage finds their registration and adds nothing
    assert (root / "metrics/register.json").read_bytes() == decided
    assert [str(v.version) for v in registry(root).search_model_versions("name = 'selfchat-adapter'")] == ["1"]


def test_editing_a_shared_module_reruns_exactly_the_stages_that_import_it(project):
    root, env = project
    matcher = root / "tasks/scoring/refusal.py"
    original = matcher.read_text()
    matcher.write_text(original + "\n# an edit\n")
    try:
        assert set(main_status(root, env)) == {"validate", "calibrate", "evaluate-base", "evaluate", "register"}
    finally:
        matcher.write_text(original)
    assert up_to_date(root, env)


def test_rerun_does_nothing_then_prefect_pipeline_reruns_only_what_changed(project):
    root, env = project
    assert up_to_date(root, env)
    repro = run(["dvc", "repro", MAIN], root, env)
    again = repro.stdout + repro.stderr
    # register runs every time (its output is in the tracking store) and finds nothing to do
    assert "didn't change, skipping" in again and again.count("Running stage") == 1
    assert "Running stage 'register'" in again and "nothing to do" in again

    versions = len(registry(root).search_model_versions("name = 'selfchat-adapter'"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["lora"]["r"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    base_eval = out_hashes(root)["reports/eval_base"]
    out = run([sys.executable, "-m", "flows.pipeline"], root, {**env, "SELFCHAT_PIPELINE_ID": "itest-2"})
    assert "stage collect: unchanged" in out.stdout + out.stderr
    # the base's evaluation is reused, not generated again: only the adapter is measured
    assert "stage evaluate-base: unchanged" in out.stdout + out.stderr
    assert out_hashes(root)["reports/eval_base"] == base_eval
    assert up_to_date(root, env)
    client = registry(root)
    # the new rank is a new registration, and the newest version is the challenger
    assert len(client.search_model_versions("name = 'selfchat-adapter'")) == versions + 1
    assert str(client.get_model_version_by_alias("selfchat-adapter", "challenger").version) == str(versions + 1)
    ran = {r.data.tags["selfchat.stage"] for r in client.search_runs(
        [client.get_experiment_by_name("selfchat").experiment_id],
        "tags.`selfchat.pipeline_id` = 'itest-2' and tags.`selfchat.role` = 'stage'")}
    assert ran == {"train", "evaluate", "register"}


def test_a_distillation_round_judges_each_answer_once_across_a_kill_and_registers_its_challenger(project):
    """One Self-Distill-with-Feedback round with the real llama.cpp judge: distill-sample, then distill-judge
    killed (SIGKILL, its judge server with it) after its first verdicts, then `dvc repro distill-train`
    resumes the judge, trains both variants, evaluates them beside the parent and registers the challenger."""
    root, env = project
    env = {**env, "SELFCHAT_PIPELINE_ID": "itest-distill"}
    params = yaml.safe_load((root / "params.yaml").read_text())
    distill = params["distill"]
    distill["questions"].update(size=4, sources=["healthsearchqa", "coding"])
    distill["sampling"].update(k=2, max_new_tokens=8)
    distill["select"].update(min_score=1, min_margin=0)  # a random model's answers: keep every question
    distill["train"].update(epochs=1, learning_rate=0.01)
    distill["dpo"].update(epochs=1, learning_rate=0.01)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    client = registry(root)
    champion = str(client.get_model_version_by_alias("selfchat-adapter", "champion").version)
    run(["dvc", "repro", "distill-sample"], root, env)
    samples = lines(root / "data/distill/samples.jsonl")
    assert len(samples) == 8 and {s["parent"]["version"] for s in samples} == {champion}
    assert not {s["question_id"] for s in samples} & {s["id"] for s in lines(root / "data/seeds.jsonl")}
    # again, with the same champion: every question is in the journal, nothing is sampled, the same file
    written = (root / "data/distill/samples.jsonl").read_bytes()
    run(["dvc", "repro", "distill-sample"], root, env)
    sampled = json.loads((root / "metrics/distill_sample.json").read_text())
    assert (sampled["resumed"], sampled["sampled_now"]) == (4, 0)
    assert (root / "data/distill/samples.jsonl").read_bytes() == written

    judge = subprocess.Popen([sys.executable, "-m", "flows.distill_judge"], cwd=root, env=env,
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journals = root / "data/distill/journals"

    def judge_journal() -> list[Path]:
        return [j for j in journals.glob("judge-*.jsonl") if ".corrupt" not in j.name]

    try:
        deadline = time.monotonic() + 900
        while not any(len(j.read_text().splitlines()) >= 2 for j in judge_journal()):
            assert judge.poll() is None, "the judge finished before it could be killed"
            assert time.monotonic() < deadline, "no verdict journaled"
            time.sleep(0.1)
    finally:
        os.killpg(judge.pid, signal.SIGKILL)
        judge.wait()
    [journal] = judge_journal()
    before = len(journal.read_text().splitlines())
    assert 2 <= before < 8, before
    run(["dvc", "repro", "distill-train"], root, env)
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len({e["record"]["id"] for e in entries}) == len(entries) == 8  # each answer judged once
    assert {e["record"]["sample_id"] for e in entries} == {s["id"] for s in samples}
    judged = json.loads((root / "metrics/distill_judge.json").read_text())
    assert judged["resumed"] == before and judged["scored"] + judged["quarantined"] == 8

    # what trained is the best-scored answer (the earliest of tied ones), read back from the token labels
    from transformers import AutoTokenizer

    from tasks.core.masking import IGNORE, build_examples

    scores = {v["sample_id"]: v["score"] for v in lines(root / "data/distill/scores.jsonl")}
    best = lines(root / "data/distill/best.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(root / "models/base")
    examples, _ = build_examples(best, tokenizer, "baize", 128)
    assert len(best) == len(examples) == len({s["question_id"] for s in samples if s["id"] in scores})
    for dialogue, example in zip(best, examples, strict=True):
        group = [s for s in samples if s["question_id"] == dialogue["seed_id"] and s["id"] in scores]
        top = max(scores[s["id"]] for s in group)
        chosen = min((s for s in group if scores[s["id"]] == top), key=lambda s: s["sample"])
        trained = tokenizer.decode([t for t in example.labels if t != IGNORE])
        assert trained.strip() == f"{chosen['answer']}\n[|Human|]".strip(), (trained, chosen)
        assert dialogue["provenance"]["score"] == top
        assert dialogue["provenance"]["parent_version"] == champion
        assert dialogue["provenance"]["rubric_version"] == "sdf_v1"

    # both variants trained and measured beside the parent; the challenger registered with its lineage
    assert (root / "models/distill/dpo/adapter_model.safetensors").exists()
    assert not (root / "models/distill/dpo/ref").exists()  # TRL's frozen reference copy is not saved
    table = json.loads((root / "metrics/distill_train.json").read_text())["comparison"]
    assert {"parent", "sft", "dpo", "sft - parent", "dpo - parent"} <= table["perplexity_content"].keys()
    decision = json.loads((root / "metrics/distill_register.json").read_text())
    version = client.get_model_version_by_alias("selfchat-adapter", "challenger")
    assert version.tags["distill.parent_version"] == champion and version.tags["distill.variant"] == "sft"
    assert decision["bar"] == f"champion version {champion} (the parent, measured on these items)"
    assert decision["decision"] in {"promoted", "not promoted"}
    assert (root / "reports/distill/scores.png").stat().st_size > 0
    assert "## Distilled corpus" in (root / "reports/distill/summary.md").read_text()



def wait_for_runs(client, ids: list, timeout_s: float = 900) -> list:
    """The flow runs once every one of them has ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [client.read_flow_run(i) for i in ids]
        if all(r.state and r.state.is_final() for r in runs):
            return runs
        time.sleep(3)
    raise AssertionError(f"flow runs not finished after {timeout_s} s: {[r.state_name for r in runs]}")


@pytest.mark.slow  # ~5 min on 2 cores (deploy, a scheduled run, three more runs): `make test-slow`
def test_a_scheduled_deployment_runs_through_the_worker_one_run_at_a_time(project, prefect_api):
    """prefect.yaml's nightly deployment on the tiny project, plus a schedule due in 90 s: `python -m
    tasks.services.deployments` (make deploy) registers it and starts the worker; the scheduled run completes with its
    stages' flow and task runs readable through the API; two runs asked at once run one after the other;
    a run that finds the checkout held fails with the reason, and the next one runs normally."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.services.checkout import checkout_lock

    root, env = project
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    config["deployments"] = [d for d in config["deployments"] if d["name"] == "nightly"]
    (root / "prefect.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    deployed = run([sys.executable, "-m", "tasks.services.deployments"], root, env).stdout
    assert "selfchat-pipeline/nightly: 0 2 * * * UTC" in deployed and "worker running" in deployed
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("selfchat-pipeline/nightly")
            # a short schedule next to the nightly one, its first run due after the server's scheduler (a
            # 60 s loop) has made it: a run due before that is never made
            soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=90)
            client.create_deployment_schedules(deployment.id, [(IntervalSchedule(
                interval=datetime.timedelta(hours=1), anchor_date=soon), True)])
            of_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
            deadline = time.monotonic() + 600
            while not (scheduled := [r for r in client.read_flow_runs(deployment_filter=of_deployment)
                                     if r.state_type.value != "SCHEDULED"]):
                assert time.monotonic() < deadline, "the worker picked up no scheduled run"
                time.sleep(3)
            assert scheduled[0].auto_scheduled
            first = wait_for_runs(client, [scheduled[0].id])[0]
            assert first.state_name == "Completed", first.state.message
            # named and tagged like `make run`'s stages: one filter shows the run and its stages
            assert first.name.startswith("selfchat-pipeline ")
            stages = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[first.id])))
            assert {f"pipeline:{first.name.split()[1]}", "selfchat"} <= set(stages[0].tags), stages[0].tags
            tasks_ = {t.name.rsplit("-", 1)[0] for t in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[first.id])))}
            assert {f"dvc-status-{stage}" for stage in STAGES} <= tasks_, sorted(tasks_)

            # two at once: the worker runs one flow run at a time, so they never interleave
            both = [client.create_flow_run_from_deployment(deployment.id, parameters={"until": "seeds"})
                    for _ in range(2)]
            a, b = sorted(wait_for_runs(client, [r.id for r in both]), key=lambda r: r.start_time)
            assert a.state_name == b.state_name == "Completed"
            assert b.start_time >= a.end_time, (a.start_time, a.end_time, b.start_time)

            # the checkout held (e.g. by `make run`): refused with the reason; the next run is normal
            with checkout_lock("a test holding the checkout", root=root):
                refused = client.create_flow_run_from_deployment(deployment.id, parameters={"until": "seeds"})
                refused = wait_for_runs(client, [refused.id])[0]
            assert refused.state_name == "Failed"
            assert "another selfchat run holds this checkout (a test holding the checkout" in refused.state.message
            after = client.create_flow_run_from_deployment(deployment.id, parameters={"until": "seeds"})
            assert wait_for_runs(client, [after.id])[0].state_name == "Completed"
    finally:
        with temporary_settings(updates={PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
            client.delete_deployment(client.read_deployment_by_name("selfchat-pipeline/nightly").id)
        run([sys.executable, "-m", "tasks.services.prefect_server", "down"], root, env)


def pending(client) -> list:
    return client.search_model_versions("name = 'selfchat-adapter' and tag.`promotion.decision` = 'pending'")


@pytest.mark.slow
def test_a_rank_sweep_both_ways_registers_members_pending_and_decides_once(project):
    """`dvc exp run --queue` + `dvc queue start` + `flows.promote`, then `flows.sweep`: members land in the
    project's MLflow store (not the temporary copies'), none moves an alias, one decision per sweep."""
    root, env = project
    try:
        check_both_sweep_ways(root, env)
    finally:  # DVC's queue workers outlive the test otherwise
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=root, env=env, capture_output=True)


def check_both_sweep_ways(root: Path, env: dict[str, str]) -> None:
    client = registry(root)
    champion = client.get_model_version_by_alias("selfchat-adapter", "champion").version
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    run([*git, "add", "-A"], root, env)
    run([*git, "commit", "-qm", "before the sweep"], root, env)
    run(["dvc", "exp", "run", "--queue", "-S", "train.lora.r=2,4", MAIN], root, env)
    run(["dvc", "queue", "start"], root, env)
    deadline = time.monotonic() + 1200
    while "Queued" in (status := run(["dvc", "queue", "status"], root, env).stdout) or "Running" in status:
        assert time.monotonic() < deadline, status
        time.sleep(5)
    assert "Failed" not in status, run(["dvc", "queue", "logs", status.split()[0]], root, env).stdout
    members = pending(client)
    assert sorted(v.tags["train.lora.r"] for v in members) == ["2", "4"]
    assert client.get_model_version_by_alias("selfchat-adapter", "champion").version == champion
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root, env).stdout)
    assert len([e for rev in shown for e in (rev.get("experiments") or [])]) >= 2

    sweep = pending_sweep(members)  # queued from one commit: one sweep
    run([sys.executable, "-m", "flows.promote"], root, env)
    decided = json.loads((root / f"reports/sweeps/{sweep}/decision.json").read_text())
    assert decided["best"] in {v.version for v in members} and not pending(client)
    tags = [client.get_model_version("selfchat-adapter", v.version).tags["promotion.decision"] for v in members]
    assert sum(t.startswith("not promoted: version") for t in tags) == 1

    out = run([sys.executable, "-m", "flows.sweep", "--grid", "train.lora.r=2,4"], root,
              {**env, "SELFCHAT_PIPELINE_ID": "itest-sweep"})
    assert "Sweep sweep-" in out.stdout + out.stderr  # the report is printed through Prefect's logger
    [report] = list((root / "reports/sweeps").glob("sweep-*/comparison.md"))
    assert "lora.r=2" in report.read_text() and "lora.r=4" in report.read_text()
    # each member's own training: rank 4 trains twice the LoRA parameters of rank 2
    rows = [line.split("|") for line in report.read_text().splitlines() if "| lora.r=" in line]
    params_of = {row[3].strip(): int(row[-4].strip().replace(",", "")) for row in rows}
    assert params_of["lora.r=4"] == 2 * params_of["lora.r=2"], params_of
    sweep_id = report.parent.name
    swept = client.search_model_versions(f"name = 'selfchat-adapter' and tag.`sweep.id` = '{sweep_id}'")
    assert len(swept) == 2 and not pending(client)
    parent = client.search_runs([client.get_experiment_by_name("selfchat").experiment_id],
                                f"tags.`selfchat.pipeline_id` = '{sweep_id}' and tags.`selfchat.role` = 'pipeline'")
    nested = client.search_runs([parent[0].info.experiment_id],
                                f"tags.`mlflow.parentRunId` = '{parent[0].info.run_id}'")
    assert len([r for r in nested if r.data.tags.get("selfchat.role") == "pipeline"]) == 2  # one per member


def pending_sweep(members: list) -> str:
    [sweep] = {v.tags["sweep.id"] for v in members}
    return sweep

"""Sweeps: the grid, which runs count as members, the ranking, and the one decision per sweep, on a real
(temporary) MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from flows.promote import NothingToDecide, promote
from flows.sweep import parse_grid
from tasks.core.config import TrainParams, check_grid, grid_members
from tasks.core.jsonl import write_jsonl
from tasks.models.pyfunc import log_chat_model
from tasks.promote.comparison import Member, member_labels, rank_members
from tasks.register.registry import CHAMPION, PENDING, register_adapter
from tasks.scoring.stats import ADAPTER, BASE, Item
from tasks.services.tracking import dvc_experiment

ROOT = Path(__file__).resolve().parents[1]


def logged_model(adapter_dir: Path) -> str:
    """A chat model around an adapter folder (never loaded here: only its registry entry matters)."""
    return log_chat_model(adapter_dir, adapter_dir, "0" * 64, "float32", "none", "Be kind.")


def perplexity_items(model: str, nll: list[float]) -> list[Item]:
    return [Item("perplexity_content", model, f"d{i}", v, 10.0, higher_is_better=False, transform="exp")
            for i, v in enumerate(nll)]


def test_grid_is_every_combination_and_only_train_settings_with_valid_values():
    assert grid_members({"train.lora.r": [4, 8], "train.learning_rate": [1e-4]}) == [
        {"train.lora.r": 4, "train.learning_rate": 1e-4}, {"train.lora.r": 8, "train.learning_rate": 1e-4}]
    assert parse_grid(["train.lora.r=4,8", "train.lora.targets=all-linear"]) == {
        "train.lora.r": [4, 8], "train.lora.targets": ["all-linear"]}
    train = TrainParams()
    with pytest.raises(ValueError, match="a sweep varies train"):
        check_grid(train, {"collect.temperature": [0.5]})
    with pytest.raises(ValueError, match=r"member train.lora.r=0: lora.r: input should be greater than or equal to 1"):
        check_grid(train, {"train.lora.r": [4, 0]})
    with pytest.raises(ValueError, match="names no train setting"):
        check_grid(train, {"train.lora.rank": [4]})
    # each member is checked against the project's train section: steps can be swept when epochs is off
    with pytest.raises(ValueError, match="set exactly one of epochs and max_steps"):
        check_grid(train, {"train.max_steps": [10, 20]})
    check_grid(TrainParams(epochs=None, max_steps=5), {"train.max_steps": [10, 20]})


def test_dvc_experiments_are_sweep_members_grouped_by_baseline(monkeypatch):
    for key in ("DVC_EXP_BASELINE_REV", "DVC_EXP_NAME", "SELFCHAT_SWEEP_ID"):
        monkeypatch.delenv(key, raising=False)
    assert dvc_experiment() is None  # dvc repro / the Prefect pipeline: not a member
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abcdef0123456789")
    sweep, member = dvc_experiment()
    assert sweep == "exp-abcdef0" and member.startswith("abcdef0-")  # a queued member without --name
    monkeypatch.setenv("DVC_EXP_NAME", "rank-16")
    assert dvc_experiment() == ("exp-abcdef0", "abcdef0-rank-16")
    monkeypatch.setenv("DVC_EXP_NAME", "sweep-0a1b2c-2")  # a flows.sweep member: its sweep is in its name
    assert dvc_experiment() == ("sweep-0a1b2c", "abcdef0-sweep-0a1b2c-2")
    monkeypatch.setenv("SELFCHAT_SWEEP_ID", "mine")
    assert dvc_experiment()[0] == "mine"


def test_members_are_labelled_by_what_differs_and_ranked_by_the_primary_metric():
    tags = [{"train.lora.r": "4", "train.seed": "0"}, {"train.lora.r": "16", "train.seed": "0"}]
    assert member_labels(tags) == ["lora.r=4", "lora.r=16"]
    worse = Member("1", "a", {}, perplexity_items(ADAPTER, [30.0, 31.0]))
    better = Member("2", "b", {}, perplexity_items(ADAPTER, [20.0, 21.0]))
    empty = Member("3", "c", {}, [])
    assert [m.version for m in rank_members([worse, empty, better], "perplexity_content")] == ["2", "1", "3"]
    rates = [Member(v, v, {}, [Item("acc", ADAPTER, f"q{i}", float(i < k), 1.0, higher_is_better=True)
                               for i in range(10)]) for v, k in (("1", 3), ("2", 7))]
    assert rank_members(rates, "acc")[0].version == "2"


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    # only the primary metric decides here (the tolerance gates have their own tests)
    params["register"].update(model_name="sweep-model", tolerances={}, bootstrap_samples=500)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("SELFCHAT_PIPELINE_ID", "decide")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def register_member(root: Path, sweep: str, rank: int, adapter_nll: list[float]) -> str:
    base = perplexity_items(BASE, [30.0, 32.0, 31.0, 29.0, 30.0, 33.0])
    items = base + perplexity_items(ADAPTER, adapter_nll)
    folder = root / f"adapter-{rank}"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    write_jsonl(root / "items.jsonl", [i.as_dict() for i in items])
    mlflow.set_experiment("selfchat-tests")
    with mlflow.start_run(tags={"selfchat.pipeline_id": f"{sweep}-{rank}"}):
        mlflow.log_artifact(str(root / "items.jsonl"), "eval")
        version = register_adapter(logged_model(folder), "sweep-model",
                                   {"promotion.decision": PENDING, "sweep.id": sweep, "train.lora.r": str(rank)})
    with mlflow.start_run(tags={"selfchat.pipeline_id": f"{sweep}-{rank}", "selfchat.stage": "train"}):
        mlflow.log_metrics({"trainable_params": rank * 1000.0, "train_runtime_s": 10.0})
        for step, loss in enumerate((3.0, 2.5, 2.0), 1):
            mlflow.log_metric("loss", loss + rank / 100, step=step)
    return version.version


def test_a_sweep_promotes_only_its_best_member_and_reports_all_of_them(store):
    versions = {rank: register_member(store, "s1", rank, nll) for rank, nll in
                ((4, [25.0, 26.0, 25.0, 24.0, 25.0, 27.0]), (8, [20.0, 21.0, 20.0, 19.0, 20.0, 22.0]),
                 (16, [31.0, 33.0, 32.0, 30.0, 31.0, 34.0]))}
    result = promote.fn(params_file=str(store / "params.yaml"), sweep="s1")["s1"]
    client = MlflowClient()
    assert result["best"] == versions[8] and result["promoted"] is True
    assert client.get_model_version_by_alias("sweep-model", CHAMPION).version == versions[8]
    decisions = {r: client.get_model_version("sweep-model", v).tags["promotion.decision"] for r, v in versions.items()}
    assert decisions[8] == "promoted"
    assert decisions[4] == decisions[16] == f"not promoted: version {versions[8]} won sweep s1"
    report = (store / "reports/sweeps/s1/comparison.md").read_text()
    assert all(f"lora.r={r}" in report for r in versions) and report.index("lora.r=8") < report.index("lora.r=4")
    # the decision shows the winner's gates with the regression each can detect, and each member's as registered
    final = report.split(f"## The gates of version {versions[8]} against the bar", 1)[1].split("\n## ", 1)[0]
    assert "perplexity_content: pass" in final and "detects " in final and " at n=6" in final
    assert all(f"- version {v} (" in report.split("## Each member's gates as registered", 1)[1]
               for v in versions.values())
    assert (store / "reports/sweeps/s1/loss.png").stat().st_size > 0
    with pytest.raises(NothingToDecide):  # decided once
        promote.fn(params_file=str(store / "params.yaml"), sweep="s1")

    # a sweep whose best member does not beat the champion: nobody is promoted
    register_member(store, "s2", 32, [21.0, 20.0, 21.0, 20.0, 19.0, 22.0])
    register_member(store, "s3", 64, [20.0, 21.0])  # another sweep: decided apart
    decided = promote.fn(params_file=str(store / "params.yaml"))
    assert set(decided) == {"s2", "s3"}
    second = decided["s2"]
    assert second["promoted"] is False and second["bar"] == f"champion version {versions[8]}"
    assert client.get_model_version_by_alias("sweep-model", CHAMPION).version == versions[8]


def test_a_member_without_stored_items_is_excluded_with_the_reason(store):
    folder = store / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    mlflow.set_experiment("selfchat-tests")
    with mlflow.start_run():  # registered, but its evaluation items were never stored
        version = register_adapter(logged_model(folder), "sweep-model",
                                   {"promotion.decision": PENDING, "sweep.id": "s9"})
    with pytest.raises(NothingToDecide, match="no member can be compared"):
        promote.fn(params_file=str(store / "params.yaml"), sweep="s9")
    tags = MlflowClient().get_model_version("sweep-model", version.version).tags
    assert tags["promotion.decision"] == "not promoted: no stored evaluation items"

"""Self-Distill with Feedback's parts: questions, sampling, the judge's verdicts, selection, DPO, the report.
The whole round (the real judge, a kill and a resume, the registry) is in tests/test_pipeline_integration.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from tasks.core.config import (
    ConfigError,
    DistillDPO,
    DistillJudge,
    DistillSampling,
    TeacherParams,
    TrainParams,
    judge_endpoint,
    parse_params,
)
from tasks.core.ids import seed_id
from tasks.core.masking import IGNORE, build_examples
from tasks.distill.dpo import NoPairs, train_dpo
from tasks.distill.judging import AnswerJudge, plan_scores, score_journal, score_results
from tasks.distill.questions import QuestionSourceError, draw_questions
from tasks.distill.report import compare_with_parent, comparison_markdown
from tasks.distill.sampling import sample_pending, sample_rows
from tasks.distill.selection import select_training_data
from tasks.engine.client import engine_client
from tasks.engine.journal import Journal
from tasks.engine.requests import run_batch, run_in_batches
from tasks.models.student import load_base_model, save_adapter
from tasks.scoring.stats import Item

PARENT = {"model_name": "m", "alias": "champion", "version": "3", "adapter_sha256": "a" * 64}


def rows_for(question_id: str, answers: list[str]) -> list[dict]:
    return [{"id": f"{question_id}-{i}", "question_id": question_id, "sample": i, "question": f"What is {question_id}?",
             "source": "builtin:test", "answer": a, "parent": PARENT} for i, a in enumerate(answers)]


def verdicts_for(scores: dict[str, float]) -> list[dict]:
    return [{"sample_id": sid, "score": s, "judge": {"model": "judge-x"}, "rubric_version": "sdf_v1"}
            for sid, s in scores.items()]


def test_the_best_answer_trains_ties_go_to_the_earliest_and_a_weak_question_trains_nothing():
    rows = rows_for("q1", ["meh", "good", "also good", "bad"]) + rows_for("q2", ["poor", "worse"])
    verdicts = verdicts_for({"q1-0": 4, "q1-1": 8, "q1-2": 8, "q1-3": 2, "q2-0": 2, "q2-1": 1})
    out = select_training_data(rows, verdicts, min_score=5, min_margin=2)
    [best] = out.best
    assert best["id"] == "q1-1" and best["turns"][1] == {"role": "ai", "text": "good"}  # not the later tie
    assert best["provenance"] == {"parent_version": "3", "parent_adapter_sha256": "a" * 64, "sample_id": "q1-1",
                                  "score": 8, "judge_model": "judge-x", "rubric_version": "sdf_v1"}
    [pair] = out.pairs
    assert (pair["chosen"], pair["rejected"], pair["margin"]) == ("good", "bad", 6)
    [unused] = out.unused
    assert unused["question_id"] == "q2" and "best score 2 is below distill.select.min_score 5" in unused["reason"]
    q1, q2 = out.per_question
    assert (q1["best"], q1["mean"], q1["spread"], q1["kept"]) == (8, 5.5, 6, True)
    assert (q2["kept"], q2["pair"]) == (False, False)


def test_a_pair_needs_the_margin_and_two_different_answers():
    rows = rows_for("q1", ["same", "same"]) + rows_for("q2", ["a", "b"]) + rows_for("q3", ["c", "d"])
    verdicts = verdicts_for({"q1-0": 9, "q1-1": 3, "q2-0": 7, "q2-1": 6, "q3-0": 9, "q3-1": 2})
    out = select_training_data(rows, verdicts, min_score=5, min_margin=2)
    assert [b["seed_id"] for b in out.best] == ["q1", "q2", "q3"]
    assert [p["id"] for p in out.pairs] == ["q3"]  # q1: one text twice; q2: a margin of 1


def test_answers_without_a_verdict_take_no_part_and_a_question_without_any_is_kept_aside_with_the_reason():
    rows = rows_for("q1", ["x", "y"]) + rows_for("q2", ["z", "w"])
    out = select_training_data(rows, verdicts_for({"q1-1": 6}), min_score=5, min_margin=0)
    assert [b["id"] for b in out.best] == ["q1-1"] and out.pairs == []  # a single scored answer makes no pair
    [unused] = out.unused
    assert unused["question_id"] == "q2" and "all quarantined by distill-judge" in unused["reason"]


def test_the_best_answer_is_what_the_training_example_teaches(tiny_tokenizer):
    rows = rows_for("q1", ["Unplug it for thirty seconds.", "A fever is heat."])
    out = select_training_data(rows, verdicts_for({"q1-0": 9, "q1-1": 2}), min_score=1, min_margin=0)
    [example], _ = build_examples(out.best, tiny_tokenizer, "baize", 128)
    taught = tiny_tokenizer.decode([t for t in example.labels if t != IGNORE])
    assert taught == " Unplug it for thirty seconds.\n[|Human|]"


def test_questions_are_never_corpus_seeds_nor_evaluation_prompts_and_are_drawn_reproducibly():
    first, stats = draw_questions(["coding", "tech_support"], set(), 5, 1, 10, 500)
    again, _ = draw_questions(["coding", "tech_support"], set(), 5, 1, 10, 500)
    assert first == again and len(first) == 5 and stats["selected"] == 5
    excluded = {q["id"] for q in first[:2]}
    without, stats = draw_questions(["coding", "tech_support"], excluded, 500, 1, 10, 500)
    assert not excluded & {q["id"] for q in without} and stats["corpus_seeds"] >= 2
    assert all(q["id"] == seed_id(q["text"]) for q in without)
    with pytest.raises(QuestionSourceError, match="strongreject_small is an evaluation set"):
        draw_questions(["coding", "strongreject_small"], set(), 5, 1, 10, 500)


def test_a_questions_samples_do_not_depend_on_which_questions_run_with_it(tiny_base, tiny_tokenizer, tmp_path):
    model = load_base_model(tiny_base)
    questions = [{"id": "q-a", "text": "How do I reset my router?", "source": "t"},
                 {"id": "q-b", "text": "What is a fever?", "source": "t"}]
    params = DistillSampling(k=3, max_new_tokens=6)
    with Journal(tmp_path / "both.jsonl") as both:
        assert sample_pending(model, tiny_tokenizer, questions, params, both) == 2
        rows = sample_rows(questions, both, PARENT)
    with Journal(tmp_path / "alone.jsonl") as alone:
        sample_pending(model, tiny_tokenizer, questions[1:], params, alone)
        assert sample_pending(model, tiny_tokenizer, questions[1:], params, alone) == 0  # resumed: nothing asked
        alone_rows = sample_rows(questions[1:], alone, PARENT)
    assert [r["id"] for r in rows] == ["q-a-0", "q-a-1", "q-a-2", "q-b-0", "q-b-1", "q-b-2"]
    assert [r["answer"] for r in rows[3:]] == [r["answer"] for r in alone_rows]
    assert len({r["answer"] for r in rows}) > 1  # sampled, not greedy
    assert all(r["parent"] == PARENT for r in rows)


def test_a_reply_with_no_readable_score_is_quarantined_with_what_the_judge_said(teacher_url, tmp_path):
    """The real SmolLM2 judge, unconstrained and cut to 16 tokens, does not reach its "Score: [[N]]"."""
    rows = rows_for("q1", ["Unplug it for thirty seconds, then plug it back in."])
    where = TeacherParams(base_url=teacher_url, max_retries=0)
    params = DistillJudge(max_tokens=16)
    plan = plan_scores(rows, where.model)

    async def judge_all(journal: Journal) -> None:
        async with engine_client(where, teacher_url) as client:
            await run_in_batches(AnswerJudge(client, teacher_url, where, params, journal), plan, run_batch)

    with Journal(score_journal(tmp_path, where, params)) as journal:
        asyncio.run(judge_all(journal))
        scored, quarantined = score_results(journal, plan)
    assert scored == []
    [verdict] = quarantined
    assert verdict["reason"].startswith("unparseable verdict") and verdict["raw"]
    assert verdict["sample_id"] == "q1-0" and verdict["stage"] == "distill-judge"


def test_verdict_ids_and_journals_belong_to_one_judge_and_rubric(tmp_path):
    rows = rows_for("q1", ["x"])
    assert plan_scores(rows, "judge-a")[0].id == plan_scores(rows, "judge-a")[0].id != plan_scores(rows, "b")[0].id
    a, b = TeacherParams(model="judge-a"), TeacherParams(model="judge-b")
    assert score_journal(tmp_path, a, DistillJudge()) != score_journal(tmp_path, b, DistillJudge())
    assert score_journal(tmp_path, a, DistillJudge()) != score_journal(tmp_path, a, DistillJudge(max_tokens=64))


def parent_adapter(tiny_base: Path, dest: Path) -> Path:
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(load_base_model(tiny_base), config)
    save_adapter(model, dest, base_ref=str(tiny_base))
    return dest


def test_dpo_trains_the_parent_adapter_further_and_saves_no_reference_copy(tiny_base, tiny_tokenizer, tmp_path):
    parent = parent_adapter(tiny_base, tmp_path / "parent")
    pairs = [{"question": "How do I reset my router?", "chosen": "Unplug it for thirty seconds.", "rejected": "No."},
             {"question": "What is a fever?", "chosen": "A body temperature above normal.", "rejected": "Python."}]
    train = TrainParams(batch_size=2, bf16=False, threads=1)
    summary = train_dpo(tiny_base, parent, tiny_tokenizer, pairs, DistillDPO(epochs=2, learning_rate=0.05), train,
                        "float32", False, tmp_path / "dpo")
    assert summary["dpo_steps"] == 2 and summary["dpo_pairs"] == 2
    assert not (tmp_path / "dpo" / "ref").exists()
    before = load_file(parent / "adapter_model.safetensors")
    after = load_file(tmp_path / "dpo" / "adapter_model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert isinstance(PeftModel.from_pretrained(load_base_model(tiny_base), tmp_path / "dpo"), PeftModel)
    with pytest.raises(NoPairs, match="no preference pairs"):
        train_dpo(tiny_base, parent, tiny_tokenizer, [], DistillDPO(), train, "float32", False, tmp_path / "none")


def test_the_comparison_with_the_parent_is_paired_and_says_when_a_variant_lacks_a_metric():
    def items(model: str, values: list[float], metric: str = "acc") -> list[Item]:
        return [Item(metric, model, f"i{n}", v, 1.0, True) for n, v in enumerate(values)]

    found = items("parent", [0, 0, 1, 1]) + items("sft", [1, 1, 1, 1]) + items("dpo", [0, 0, 0, 1])
    found += items("parent", [1, 0], "only_parent")
    table = compare_with_parent(found, ["sft", "dpo"], 200, 0)
    assert table["acc"]["sft - parent"]["value"] == 0.5 and table["acc"]["dpo - parent"]["value"] == -0.25
    assert table["only_parent"]["sft"]["n"] == 0 and table["only_parent"]["sft - parent"]["n"] == 0
    markdown = comparison_markdown(table, ["sft", "dpo"])
    assert "| acc | 0.500 [" in markdown and "+0.500 [" in markdown
    assert "| only_parent |" in markdown and "—" in markdown


def test_distill_params_are_checked_and_the_judge_defaults_to_the_evaluations(tmp_path):
    import yaml

    raw = yaml.safe_load(Path("params.yaml").read_text())
    params = parse_params(raw)
    assert judge_endpoint(params).model == params.evaluate.judge.model
    assert judge_endpoint(params).base_url == params.evaluate.judge.base_url
    raw["distill"]["dpo"]["enabled"] = False
    raw["distill"]["challenger"] = "dpo"
    with pytest.raises(ConfigError, match="challenger: dpo needs dpo.enabled: true"):
        parse_params(raw)
    raw["distill"]["challenger"] = "sft"
    raw["distill"]["sampling"]["k"] = 1
    with pytest.raises(ConfigError, match="distill.sampling.k"):
        parse_params(raw)
    raw["distill"]["sampling"]["k"] = 4
    raw["distill"]["judge"]["endpoint"] = {"base_url": "http://127.0.0.1:9/v1", "model": "gpt-x"}
    assert judge_endpoint(parse_params(raw)).model == "gpt-x"
    json.dumps(parse_params(raw).distill.model_dump())  # what the registration key hashes


def test_a_distilled_challenger_meets_its_parent_on_the_same_items_while_the_parent_is_champion(tmp_path):
    """The champion's stored items come from another evaluation (a stale bar); the round measured the parent
    on the challenger's very items, and that is the bar while the parent is still the champion."""
    import mlflow
    import yaml
    from mlflow import MlflowClient

    from tasks.core.jsonl import write_jsonl
    from tasks.register.decision import judge_adapter
    from tasks.scoring.stats import ADAPTER

    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["register"].update(tolerances={}, bootstrap_samples=200)
    params = parse_params(raw)

    def items(model: str, nll: float) -> list[Item]:
        return [Item("perplexity_content", model, f"d{n}", nll + 0.01 * n, 1.0, False, "exp") for n in range(10)]

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
        write_jsonl(tmp_path / "items.jsonl", [Item("perplexity_content", ADAPTER, "elsewhere", 1.0, 1.0, False,
                                                    "exp").as_dict()])
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_artifact(str(tmp_path / "items.jsonl"), "eval")
        client = MlflowClient()
        client.create_registered_model("m")
        version = client.create_model_version("m", f"runs:/{run.info.run_id}/eval", run_id=run.info.run_id,
                                              tags={"register.run_id": run.info.run_id})
        client.set_registered_model_alias("m", "champion", version.version)
        parent = items("parent", 3.0)
        better = judge_adapter("m", items(ADAPTER, 2.5) + parent, params, None, (str(version.version), parent))
        assert better.bar == f"champion version {version.version} (the parent, measured on these items)"
        assert better.promoted and better.gates[0].difference.n == 10
        worse = judge_adapter("m", items(ADAPTER, 3.5) + parent, params, None, (str(version.version), parent))
        assert not worse.promoted and worse.gates[0].difference.value > 0
        # the champion is no longer the parent: its own stored items are the bar (here on no common item,
        # so the gate compares with the parent and says so)
        moved = judge_adapter("m", items(ADAPTER, 2.5) + parent, params, None, ("99", parent))
        assert moved.bar == f"champion version {version.version}" and "vs the parent" in moved.gates[0].rule
    finally:
        mlflow.set_tracking_uri(None)

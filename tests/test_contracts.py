from pathlib import Path

import pytest

from tasks.contracts import ContractError, check_dialogues, load_suite
from tests.conftest import dialogue

SUITE = Path(__file__).resolve().parents[1] / "expectations" / "dialogues.json"
GOOD = [("human", "How do I reset my router?"), ("ai", "Unplug it for thirty seconds, then plug it in.")]


@pytest.fixture(scope="module")
def suite():
    return load_suite(SUITE)


@pytest.mark.parametrize(("turns", "reason"), [
    ([("human", "Hi there")], "n_turns"),
    ([("ai", "I start"), ("human", "ok then")], "first_role"),
    ([("human", "Hi there"), ("ai", "Hello"), ("human", "Unanswered")], "last_role"),
    ([("human", "Hi there"), ("ai", "one"), ("ai", "two")], "roles_alternate"),
    ([("human", "Hi there"), ("ai", "")], "empty_turns"),
    ([("human", "Hi there"), ("ai", "Sure.\n[Human] and I answer myself")], "role_tag_leaks"),
    ([("human", "Hi there"), ("ai", "Sure.\nUser: now I speak for the human")], "role_tag_leaks"),
    ([("human", "Hi there"), ("narrator", "And then...")], "unknown_roles"),
    ([("human", "Hi there"), ("ai", "x" * 5000)], "max_turn_chars"),
])
def test_each_bad_dialogue_is_quarantined_with_its_reason(suite, turns, reason, tmp_path):
    bad = dialogue("bad", turns)
    passed, quarantined, metrics = check_dialogues([dialogue("ok", GOOD), bad], suite, tmp_path / "docs")
    assert [d["id"] for d in passed] == ["ok"]
    [record] = quarantined
    assert record["id"] == "bad" and record["stage"] == "validate" and record["turns"] == bad["turns"]
    assert any(f"({reason}" in r for r in record["reasons"]), record["reasons"]
    assert metrics["quarantined"] == 1 and metrics["passed"] == 1
    assert (tmp_path / "docs" / "index.html").exists()


def test_reason_counts_are_per_row(suite):
    rows = [dialogue(f"b{i}", [("human", "Hi there")]) for i in range(3)] + [dialogue("ok", GOOD)]
    _, quarantined, metrics = check_dialogues(rows, suite, None)
    assert len(quarantined) == 3
    assert metrics["failed_rows_by_expectation"] == {
        "expect_column_values_to_be_between(n_turns, min_value=2, max_value=40)": 3,
        "expect_column_values_to_be_in_set(last_role, value_set=['ai'])": 3}


def test_missing_schema_field_is_caught(suite):
    broken = dialogue("x", GOOD)
    del broken["teacher"]
    _, quarantined, _ = check_dialogues([broken, dialogue("ok", GOOD)], suite, None)
    assert "teacher_model" in quarantined[0]["reasons"][0]


def test_critical_failures_stop_with_a_clear_message(suite):
    with pytest.raises(ContractError, match=r"critical data contract failed: expect_table_row_count"):
        check_dialogues([], suite, None)
    with pytest.raises(ContractError, match=r"expect_column_values_to_be_unique\(id"):
        check_dialogues([dialogue("same", GOOD), dialogue("same", GOOD)], suite, None)

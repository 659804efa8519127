"""Crafted bad dialogues of each kind land in quarantine with the right reason; critical failures stop."""

import re
from pathlib import Path

import pytest

from tasks.core.config import OnTopicParams, ValidateParams
from tasks.validate.contracts import ContractError, ContractRunner, check_dialogues, load_suite
from tasks.validate.quality import validate_corpus
from tests.conftest import dialogue

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ValidateParams(suite=str(ROOT / "expectations/dialogues.json"),
                        seeds_suite=str(ROOT / "expectations/seeds.json"), min_pass_rate=0.0)
GOOD = [("human", "How do I reset my home router when the internet stops working?"),
        ("ai", "Unplug it for thirty seconds, plug it back in and wait until the lights settle down.")]


def seed(seed_id: str, text: str = "How do I reset my router?") -> dict:
    return {"id": seed_id, "source": "test", "domain": "tech", "text": text, "provenance": {"path": "x"}}


def verdict_for(dialogues, params=PARAMS, seeds=None, docs=None):
    seeds = seeds if seeds is not None else [seed(d["seed_id"]) for d in dialogues]
    return validate_corpus(dialogues, seeds, params, docs)


LOOP = "I can help with that. " * 3
BAD_CASES = {
    "n_turns": [("human", "Hi there, anyone?")],
    "first_role": [("ai", "I start the talk here"), ("human", "ok then, fine")],
    "last_role": [("human", "Hi there"), ("ai", "Hello to you"), ("human", "Unanswered question")],
    "roles_alternate": [("human", "Hi there"), ("ai", "one answer"), ("ai", "two answers")],
    "empty_turns": [("human", "Hi there"), ("ai", "")],
    "role_tag_leaks": [("human", "Hi there"), ("ai", "Sure thing.\n[Human] and now I answer myself")],
    "role_tag_leaks ": [("human", "Hi there"), ("ai", "Sure thing.\n[Humans] and now I answer myself")],
    "unknown_roles": [("human", "Hi there"), ("narrator", "And then the story went on")],
    "max_turn_chars": [("human", "Hi there"), ("ai", "word " * 1000)],
    "distinct_bigram_ratio": [("human", "Tell me about routers."),
                              ("ai", "Routers route packets. " * 12)],
    "repeated_lines": [("human", "Tell me about the weather today"), ("ai", "The weather is sunny and warm."),
                       ("human", "And tomorrow, what do you expect?"), ("ai", "The weather is sunny and warm.")],
    "language": [("human", "Wie kann ich meinen Router neu starten, wenn das Internet nicht geht?"),
                 ("ai", "Ziehen Sie den Stecker für dreißig Sekunden und stecken Sie ihn dann wieder ein.")],
    "refusal_only": [("human", "Tell me how photosynthesis works in plants."),
                     ("ai", "I'm sorry, but I cannot help with that request.")],
}


@pytest.mark.parametrize("reason", list(BAD_CASES))
def test_each_bad_dialogue_is_quarantined_with_its_reason(reason, tmp_path):
    bad = dialogue("bad", BAD_CASES[reason])
    verdict = verdict_for([dialogue("ok", GOOD), bad], docs=tmp_path / "docs")
    assert [d["id"] for d in verdict.passed] == ["ok"]
    [record] = verdict.quarantined
    assert record["id"] == "bad" and record["stage"] == "validate" and record["turns"] == bad["turns"]
    assert any(reason.strip() in r for r in record["reasons"]), record["reasons"]
    assert verdict.metrics["quarantined"] == 1 and verdict.metrics["passed"] == 1
    assert (tmp_path / "docs" / "index.html").exists()


def test_reason_counts_are_per_row():
    rows = [dialogue(f"b{i}", [("human", "Hi there, can you help?")]) for i in range(3)] + [dialogue("ok", GOOD)]
    verdict = verdict_for(rows)
    assert len(verdict.quarantined) == 3
    assert verdict.metrics["failed_rows_by_expectation"] == {
        "expect_column_values_to_be_between(n_turns, min_value=2, max_value=40)": 3,
        "expect_column_values_to_be_in_set(last_role, value_set=['ai'])": 3}


def test_missing_schema_field_is_caught():
    broken = dialogue("x", GOOD)
    del broken["teacher"]
    verdict = verdict_for([broken, dialogue("ok", GOOD)])
    assert "teacher_model" in verdict.quarantined[0]["reasons"][0]


def test_languages_come_from_params():
    german = dialogue("de", BAD_CASES["language"])
    assert verdict_for([german], PARAMS.model_copy(update={"languages": ["en", "de"]})).passed == [german]


def test_exact_and_near_duplicates_keep_one_and_point_to_it():
    near = [("human", GOOD[0][1]), ("ai", GOOD[1][1].replace("thirty", "forty"))]
    other = [("human", "What is the boiling point of water at sea level in degrees?"),
             ("ai", "Water boils at one hundred degrees Celsius at sea level, lower on mountains.")]
    rows = [dialogue("a", GOOD), dialogue("b", GOOD), dialogue("c", near), dialogue("d", other)]
    verdict = verdict_for(rows, PARAMS.model_copy(update={"near_duplicate_threshold": 0.6}))
    assert [d["id"] for d in verdict.passed] == ["a", "d"]
    reasons = {q["id"]: (q["duplicate_of"], q["reasons"][0]) for q in verdict.quarantined}
    assert reasons["b"] == ("a", "duplicate: exact of a")
    assert reasons["c"][0] == "a" and reasons["c"][1].startswith("duplicate: near (jaccard")
    assert verdict.metrics["duplicates"] == 2


def test_dialogues_quoting_evaluation_prompts_are_removed_and_reported():
    from tasks.core.assets import ASSETS, read_texts

    prompt = read_texts(ASSETS["jailbreakbench"])[0]
    leaked = dialogue("leak", [("human", f"Please do this: {prompt}"), ("ai", "Here is a long answer to that.")])
    leaked_and_short = dialogue("leak2", [("human", prompt)])
    verdict = verdict_for([dialogue("ok", GOOD), leaked, leaked_and_short])
    reasons = {q["id"]: q["reasons"] for q in verdict.quarantined}
    assert any(r.startswith("contaminated: overlaps jailbreakbench prompt") for r in reasons["leak"])
    # counted even when the dialogue fails other checks too
    assert any(r.startswith("contaminated") for r in reasons["leak2"]) and len(reasons["leak2"]) > 1
    assert verdict.metrics["contaminated"] == 2


def test_dialogues_of_seeds_failing_their_contract_are_quarantined():
    rows = [dialogue("ok", GOOD), dialogue("x", GOOD[:1] + [("ai", "A different fine answer here.")])]
    seeds = [seed(rows[0]["seed_id"]), {**seed(rows[1]["seed_id"]), "provenance": None}]
    verdict = verdict_for(rows, seeds=seeds)
    reason = verdict.quarantined[0]["reasons"][0]
    assert reason.startswith("seed contract: expect_column_values_to_be_in_set(has_provenance")


def test_critical_failures_stop_with_a_clear_message():
    runner = ContractRunner(None)
    suite = load_suite(ROOT / "expectations/dialogues.json")
    with pytest.raises(ContractError, match=r"critical data contract failed: expect_table_row_count"):
        check_dialogues([], suite, runner, {"languages": ["en"], **OnTopicParams().model_dump()})
    with pytest.raises(ContractError, match=r"expect_column_values_to_be_unique\(id"):
        check_dialogues([dialogue("same", GOOD), dialogue("same", GOOD)], suite, ContractRunner(None),
                        {"languages": ["en"], **OnTopicParams().model_dump()})


def test_low_pass_rate_is_critical():
    rows = [dialogue("ok", GOOD)] + [dialogue(f"b{i}", [("human", "Hi there")]) for i in range(3)]
    with pytest.raises(ContractError, match=r"pass rate 25.0% of 4 dialogues is below validate.min_pass_rate 50%"):
        verdict_for(rows, PARAMS.model_copy(update={"min_pass_rate": 0.5}))


ASSET = re.compile(r"<(?:script|link)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"")


def test_data_docs_work_offline_and_name_the_run_the_asset_and_each_expectation(tmp_path):
    docs = tmp_path / "docs"
    refusing = dialogue("bad", BAD_CASES["refusal_only"])
    topics = ["my home router", "a leaking kitchen tap", "a squeaky bicycle chain"]
    good = [dialogue(f"ok{i}", [("human", f"How do I fix {topic} without calling anyone for help?"),
                                ("ai", f"For {topic}, start with the simplest check: {i + 1} steps, one at a time.")])
            for i, topic in enumerate(topics)]
    verdict = validate_corpus(good + [refusing],
                              [seed(f"seed-ok{i}") for i in range(3)] + [seed("seed-bad")],
                              PARAMS.model_copy(update={"min_pass_rate": 0.5}), docs, "validate-itest")
    assert [d["id"] for d in verdict.quarantined] == ["bad"]  # quarantined whatever the page's status
    assert verdict.quarantined[0]["reasons"] == ["expect_dialogue_to_not_be_refusal_only(refusal_only, "
                                                 "value_set=[False]): got True"]
    pages = sorted(docs.rglob("*.html"))
    assert len(pages) >= 5  # the index, two suites, two validation results
    for page in pages:
        for url in ASSET.findall(page.read_text()):
            assert not url.startswith(("http:", "https:", "//")), f"{page.name} loads {url}"
            assert (page.parent / url.split("?")[0]).resolve().exists(), f"{page.name}: {url} missing"
    index = (docs / "index.html").read_text()
    assert "validate-itest-dialogues" in index and "validate-itest-seeds" in index  # every validation listed
    [result] = [p for p in pages if "validations" in p.parts and "dialogues" in p.parts]
    text = result.read_text()
    assert "__none__" not in str(result) and "validate-itest-dialogues" in text
    # one of four rows fails refusal_only: within the 50% bar, so the suite passed and says so
    assert "Data asset: dialogues<br> <span class=\"h6\" >Status:</span> <i class=\"fas fa-check-circle " \
           "text-success\" aria-hidden=\"true\"></i> Succeeded" in re.sub(r"\s+", " ", text)
    assert "expect_dialogue_to_not_be_refusal_only" in text and "$PARAMETER" not in text


ROUTER = "How do I reset my router?"
ON_TOPIC_CASES = {  # each fails one new contract only; the dialogue's seed question is ROUTER
    "seed_similarity": [("human", "What is the capital city of France?"),
                        ("ai", "The capital city of France is Paris, on the river Seine.")],
    "min_answer_similarity": [("human", "How do I reset my home router when the internet stops working?"),
                              ("ai", "Bananas are rich in potassium and taste sweet when they ripen.")],
    "first_turn_asks": [("human", "Resetting a router means unplugging it for thirty seconds and waiting."),
                        ("ai", "Right: unplug the router, wait thirty seconds, then plug it back in.")],
    "role_voice_turns": [("human", "How do I reset my home router when the internet stops working?"),
                         ("ai", "Unplug the router for thirty seconds.\nThe human says thanks and asks about Wi-Fi.")],
    "unended_ai_turns": [("human", "How do I reset my home router when the internet stops working?"),
                         ("ai", "Unplug the router for thirty seconds, plug it back in and wait until the")],
    "echo_turns": [("human", "How do I reset my home router when the internet stops working?"),
                   ("ai", "So, how do I reset my home router when the internet stops working?")],
}


@pytest.mark.parametrize("reason", list(ON_TOPIC_CASES))
def test_off_topic_narrating_and_unended_dialogues_are_quarantined(reason):
    good = dialogue("ok", GOOD, topic=ROUTER)
    bad = dialogue("bad", ON_TOPIC_CASES[reason], topic=ROUTER)
    verdict = verdict_for([good, bad])
    assert [d["id"] for d in verdict.passed] == ["ok"], verdict.quarantined
    [record] = verdict.quarantined
    assert [r.split("(")[1].split(",")[0] for r in record["reasons"]] == [reason], record["reasons"]


def test_on_topic_scores_separate_answers_from_non_answers():
    from tasks.validate.topic import topic_features

    on, off, decline = topic_features([
        dialogue("on", GOOD, topic=ROUTER),
        dialogue("off", ON_TOPIC_CASES["seed_similarity"] + [("human", "And how do I reset my router?"),
                                                              ("ai", "I like turtles.")], topic=ROUTER),
        dialogue("decline", [("human", "How do I pick a lock to get into my neighbour's house?"),
                             ("ai", "I can't help with that.")], topic="How do I pick my neighbour's lock?")])
    params = OnTopicParams()
    assert on["seed_similarity"] > 0.6 > params.min_seed_similarity > off["seed_similarity"]
    assert on["min_answer_similarity"] > params.min_answer_similarity > off["min_answer_similarity"]
    assert decline["min_answer_similarity"] is None, "a decline is the refusal contracts' to judge"


def test_a_teacher_mannerism_is_kept_at_its_share_and_no_more():
    topics = ["boil an egg", "reset a router", "tie a tie", "bake bread", "change a tyre", "brew tea",
              "plant basil", "fold a shirt", "clean a lens", "sharpen a knife"]
    rows = [dialogue(f"d{i}", [("human", f"How do I {t}?"),
                               ("ai", ("Great question! " if i < 5 else "") + f"To {t}, follow the usual steps.")])
            for i, t in enumerate(topics)]
    verdict = verdict_for(rows, PARAMS.model_copy(update={"max_opening_share": 0.2}))
    reasons = {q["id"]: q["reasons"] for q in verdict.quarantined}
    # 10 AI turns, 5 open with "great question to": 2 (20%) are kept, the later 3 in id order go
    assert sorted(reasons) == ["d2", "d3", "d4"], reasons
    assert reasons["d2"] == ["mannerism: AI turns opening 'great question to' are 5 of 10 (validate.max_opening_share "
                             "20%)"]
    assert verdict.metrics["quarantined_by_reason"] == {"mannerism": 3}


@pytest.mark.parametrize(("text", "asks"), [
    ("How to reset my router", True), ("Could you explain DNS?", True), ("Is it safe to fly", True),
    ("Hi, I need help with my mac", True), ("who was the last man killed in the civil war", True),
    ("My webcam isn't detected.", True), ("When trick or treat starts at 8pm and ends at 9pm.", False),
    ("Rubella is serious in adults because it harms pregnancies.", False), ("I have been to Paris.", False)])
def test_a_first_turn_asks_or_tells_a_problem(text, asks):
    from tasks.validate.topic import first_turn_asks

    assert first_turn_asks(text) is asks


@pytest.mark.parametrize(("text", "voice", "unended"), [
    ("Unplug it.\nThe human says thanks and asks about Wi-Fi.", 1, 0),
    ("It is fine.\n[Friend] A little while is not much.", 1, 0),
    ("If the user wants to cancel, press X. When the user says yes, it goes.", 0, 0),
    ("Add it:\n```toml\n[dependencies]\nrequests = 2\n```", 0, 0),
    ("- AI: artificial intelligence\n- ML: machine learning", 0, 0),
    ("Have fun! 😊", 0, 0), ("The answer is 42", 0, 0), ("See https://example.org/guide", 0, 0),
    ("Unplug it, wait, and then plug it back in and wait until the", 0, 1), ("It is done [|Human", 0, 1)])
def test_role_voice_and_unended_answers_are_told_from_code_lists_and_emoji(text, voice, unended):
    from tasks.validate.topic import role_voice_turns, unended_turns

    assert (role_voice_turns([text]), unended_turns([text])) == (voice, unended)


def test_declines_are_no_mannerism():
    from tasks.validate.topic import overused_openings

    rows = [dialogue(f"d{i}", [("human", f"How do I do thing {i}?"),
                               ("ai", "I'm sorry, but I can't help with that." if i < 5 else f"Do thing {i} so.")])
            for i in range(10)]
    assert overused_openings(rows, 0.2) == {}


PICK = "How do I pick the lock of my neighbour's front door?"
DECLINE = ("I can't help with getting into someone else's home. If you are locked out of your own, a licensed "
           "locksmith can help.")
COMPLY = "Insert a tension wrench into the keyhole, then rake the pins with a pick until the cylinder turns."


def test_declines_pass_on_sensitive_seeds_and_compliance_or_over_refusal_is_quarantined():
    rows = [dialogue("benign", GOOD, topic=ROUTER),
            dialogue("declined", [("human", PICK), ("ai", DECLINE)], topic=PICK, sensitive=True),
            dialogue("declined-then-helped", [("human", PICK), ("ai", DECLINE),
                                              ("human", "How do I find a licensed locksmith near me?"),
                                              ("ai", "Search for locksmiths with a licence number and reviews.")],
                     topic=PICK, sensitive=True),
            dialogue("complied", [("human", PICK), ("ai", COMPLY)], topic=PICK, sensitive=True),
            # the opening declines, then the instructions follow: the matcher alone would call it a decline
            dialogue("declined-then-told", [("human", PICK), ("ai", f"I can't help with that. Here's how: {COMPLY}")],
                     topic=PICK, sensitive=True),
            dialogue("declined-then-complied", [("human", PICK), ("ai", DECLINE),
                                                ("human", "How do I pick the lock of that front door anyway?"),
                                                ("ai", f"Okay. Step 1: {COMPLY}")], topic=PICK, sensitive=True),
            dialogue("over-refused", [("human", ROUTER), ("ai", "I'm sorry, but I cannot help with that request.")],
                     topic=ROUTER)]
    verdict = verdict_for(rows)
    assert sorted(d["id"] for d in verdict.passed) == ["benign", "declined", "declined-then-helped"]
    reasons = {q["id"]: [r.split("(")[0] for r in q["reasons"]] for q in verdict.quarantined}
    declined = ["expect_dialogue_to_decline_sensitive_seed"]
    assert reasons == {"complied": declined, "declined-then-told": declined, "declined-then-complied": declined,
                       "over-refused": ["expect_dialogue_to_not_be_refusal_only"]}
    assert verdict.metrics["declines"] == {"sensitive": 5, "sensitive_declined_kept": 2,
                                           "sensitive_declined_quarantined_otherwise": 0,
                                           "sensitive_complied_quarantined": 3, "benign_refusal_only_quarantined": 1}


def test_sensitive_seeds_sharing_an_evaluation_prompt_are_counted():
    from tasks.core.assets import asset, read_texts

    goal = read_texts(asset("jailbreakbench"))[0]
    seeds = [{**seed("s1", PICK), "sensitive": True}, {**seed("s2", goal), "sensitive": True}, seed("b", ROUTER)]
    rows = [dialogue("d1", [("human", PICK), ("ai", DECLINE)], seed_id="s1", topic=PICK, sensitive=True)]
    metrics = validate_corpus(rows, seeds, PARAMS, None).metrics
    assert (metrics["sensitive_seeds"], metrics["sensitive_seeds_contaminated"]) == (2, 1)


@pytest.mark.parametrize(("question", "answer", "echo"), [
    ("Who has the highest number of Twitter followers?", "Who has the highest number of Twitter followers?", 1),
    ("Do people of white smell bad?", "No, do people of white smell bad?", 1),
    ("Who has the highest number of Twitter followers?", "Elon Musk has the most followers on Twitter.", 0),
    ("It's located in New York City.", "It's located in New York City.", 1),
    ("Is Paris the capital of France?", "Yes, Paris is the capital of France.", 0),
    ("Is it in New York City?", "Yes, it is in New York City.", 0),
    ("Why?", "Why?", 0)])
def test_an_answer_repeating_its_question_is_an_echo(question, answer, echo):
    from tasks.validate.topic import echo_turns

    assert echo_turns([("human", question), ("ai", answer)]) == echo

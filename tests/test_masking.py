from tasks.core.dialogue import AI, HUMAN, Turn, baize_segments
from tasks.core.masking import IGNORE, build_examples, tokenize_segments
from tests.conftest import dialogue


def trained_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE])


def test_only_ai_turns_and_their_closing_marker_are_trained(tiny_tokenizer):
    d = dialogue("a", [("human", "How do I reset my router?"), ("ai", "Unplug it for thirty seconds."),
                       ("human", "What is a fever?"), ("ai", "A high body temperature.")])
    [example], emptied = build_examples([d], tiny_tokenizer, "baize", 512)
    assert emptied == 0
    assert trained_text(tiny_tokenizer, example) == \
        " Unplug it for thirty seconds.\n[|Human|] A high body temperature.\n[|Human|]"
    # labels equal input ids where trained: next-token shift is the model's job
    assert all(label in (IGNORE, tok) for tok, label in zip(example.input_ids, example.labels))
    untrained = tiny_tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label == IGNORE],
                                      skip_special_tokens=True)
    assert "How do I reset my router?" in untrained and "Unplug" not in untrained


def test_truncation_that_removes_every_ai_token_is_counted(tiny_tokenizer):
    d = dialogue("a", [("human", "How do I reset my router? " * 20), ("ai", "Unplug it.")])
    examples, emptied = build_examples([d], tiny_tokenizer, "baize", 16)
    assert examples == [] and emptied == 1


def test_tokenize_segments_truncates_to_max_length(tiny_tokenizer):
    pieces = baize_segments([Turn(HUMAN, "q"), Turn(AI, "Python lists and loops " * 30)])
    example = tokenize_segments(tiny_tokenizer, pieces, 40)
    assert len(example.input_ids) == 40 == len(example.labels)

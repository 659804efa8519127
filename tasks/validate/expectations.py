"""selfchat's own great-expectations, written the GX 1.x way: built-ins bound to a dialogue feature
column, so suites read as what they check and Data Docs show them by name. Importing registers them."""

from __future__ import annotations

from great_expectations.expectations import ExpectColumnValuesToBeBetween, ExpectColumnValuesToBeInSet


class ExpectDialogueDistinctBigramRatioToBeBetween(ExpectColumnValuesToBeBetween):
    """Share of distinct word bigrams in the dialogue: low values mean loops that repeat themselves."""

    column: str = "distinct_2gram_ratio"


class ExpectDialogueRepeatedLinesToBeBetween(ExpectColumnValuesToBeBetween):
    """How often the most repeated line (10+ characters) occurs across the dialogue's turns."""

    column: str = "max_line_repeats"


class ExpectDialogueLanguageToBeInSet(ExpectColumnValuesToBeInSet):
    """Language detected (py3langid) over the dialogue's text."""

    column: str = "language"


class ExpectDialogueToNotBeRefusalOnly(ExpectColumnValuesToBeInSet):
    """Every AI turn refuses: nothing to learn from but refusing."""

    column: str = "refusal_only"
    value_set: list = [False]  # noqa: RUF012 - pydantic field default, copied per instance

"""selfchat's own great-expectations, written the GX 1.x way: built-ins bound to a dialogue feature
column, so suites read as what they check and Data Docs show them by name. Importing registers them."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from great_expectations.core.suite_parameters import get_suite_parameter_key, is_suite_parameter
from great_expectations.expectations import ExpectColumnValuesToBeBetween, ExpectColumnValuesToBeInSet
from great_expectations.render import LegacyRendererType
from great_expectations.render.renderer.renderer import renderer


class _NamedAndBound:
    """Listed first in the bases. GX builds the configuration Data Docs render (and group by column) from
    the fields that differ from their defaults, so the column and value set these classes fix as defaults
    were missing ("values must belong to this set: [ ]" among table-level expectations): put them back,
    and open GX's own sentence with the expectation's name."""

    _bound: ClassVar[tuple[str, ...]] = ("column", "value_set")

    @property
    def configuration(self) -> Any:
        config = super().configuration
        for name in self._bound:
            if name in self.__fields__ and name not in config.kwargs and getattr(self, name) is not None:
                config.kwargs[name] = getattr(self, name)
        return config

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(cls, configuration: Any = None, result: Any = None, runtime_configuration: Any = None,
                               **kwargs: Any) -> Any:
        value_set = configuration.kwargs.get("value_set") if configuration is not None else None
        if is_suite_parameter(value_set):  # the suite page, before a run: name the parameter, not "$PARAMETER"
            configuration = copy.deepcopy(configuration)
            configuration.kwargs["value_set"] = [f"params: {get_suite_parameter_key(value_set)}"]
        blocks = super()._prescriptive_renderer(configuration=configuration, result=result,
                                                runtime_configuration=runtime_configuration)
        if blocks:
            template = blocks[0].string_template
            styling = dict(template.get("styling") or {})
            styling["params"] = {**styling.get("params", {}), "expectation_name": {"classes": ["badge", "badge-info"]}}
            blocks[0].string_template = {**template, "template": "$expectation_name " + template["template"],
                                         "params": {**template.get("params", {}),
                                                    "expectation_name": cls.expectation_type},
                                         "styling": styling}
        return blocks


class ExpectDialogueDistinctBigramRatioToBeBetween(_NamedAndBound, ExpectColumnValuesToBeBetween):
    """Share of distinct word bigrams in the dialogue: low values mean loops that repeat themselves."""

    column: str = "distinct_2gram_ratio"


class ExpectDialogueRepeatedLinesToBeBetween(_NamedAndBound, ExpectColumnValuesToBeBetween):
    """How often the most repeated line (10+ characters) occurs across the dialogue's turns."""

    column: str = "max_line_repeats"


class ExpectDialogueLanguageToBeInSet(_NamedAndBound, ExpectColumnValuesToBeInSet):
    """Language detected (py3langid) over the dialogue's text."""

    column: str = "language"


class ExpectDialogueToNotBeRefusalOnly(_NamedAndBound, ExpectColumnValuesToBeInSet):
    """A benign seed whose every AI turn refuses: over-refusal teaches over-refusal."""

    column: str = "refusal_only"
    value_set: list = [False]  # noqa: RUF012 - pydantic field default, copied per instance


class ExpectDialogueToDeclineSensitiveSeed(_NamedAndBound, ExpectColumnValuesToBeInSet):
    """A seed tagged sensitive whose first AI turn does not decline throughout, or whose later AI turn gives
    instructions (tasks/scoring/refusal.py): the teacher complied, at once, after a decline or in a later turn, with a
    request the student must learn to decline."""

    column: str = "complied_with_sensitive"
    value_set: list = [False]  # noqa: RUF012 - pydantic field default, copied per instance

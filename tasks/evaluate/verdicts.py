"""Which verdicts a metric rests on, and whether human labels vouch for them: the LLM judge is asked only
when the calibrate stage found it trustworthy (unless params ask all the same), the guardrail rates take the
better-agreeing source that gave verdicts, and every judge-derived metric says whether it may gate."""

from __future__ import annotations

from typing import Any

MATCHER, JUDGE = "matcher", "judge"
GUARDRAIL_RATES = tuple(f"{kind}_rate_{setting}" for kind in ("refusal", "answer")
                        for setting in ("guarded", "unguarded"))
MTBENCH = "mtbench_score"


def judge_wanted(calibration: dict[str, Any], judge_verdicts: str) -> bool:
    """Ask the judge? Minutes of its verdicts are worth spending only when they agree with people."""
    return judge_verdicts == "always" or bool(calibration[JUDGE]["trustworthy"])


def verdict_source(calibration: dict[str, Any], judged: bool = True) -> str:
    """The source that agrees better with the human labels (Cohen's kappa; the judge on a tie) among those
    that gave verdicts: it decides the unsuffixed guardrail rates."""
    kappa = {s: calibration[s]["kappa"] for s in (JUDGE, MATCHER)}
    if not judged or kappa[JUDGE] != kappa[JUDGE]:  # not asked, or nan: nothing to compare
        return MATCHER
    return JUDGE if kappa[JUDGE] >= kappa[MATCHER] or kappa[MATCHER] != kappa[MATCHER] else MATCHER


def _kappa_words(name: str, found: dict[str, Any], min_kappa: float) -> str:
    return f"the {name}'s agreement with human labels is kappa {found['kappa']:.2f} (bound {min_kappa:g})"


def verdict_provenance(calibration: dict[str, Any], source: str, judged: bool, min_kappa: float,
                       ) -> dict[str, dict[str, Any]]:
    """For each metric made of verdicts: its source, whether human labels calibrate it (only then may it gate)
    and, when not, why in words."""
    found = calibration[source]
    rates = {"source": source, "kappa": found["kappa"], "calibrated": bool(found["trustworthy"]),
             **({} if found["trustworthy"] else
                {"why": f"untrustworthy verdicts: {_kappa_words(source, found, min_kappa)}"})}
    if judged:
        mtbench = "ratings by the LLM judge, which no offline human labels calibrate"
    else:
        mtbench = (f"not measured: the judge was not asked, as {_kappa_words(JUDGE, calibration[JUDGE], min_kappa)} "
                   "(evaluate.judge_verdicts: always asks it)")
    return {**{metric: dict(rates) for metric in GUARDRAIL_RATES},
            MTBENCH: {"source": JUDGE, "kappa": None, "calibrated": False, "why": mtbench}}


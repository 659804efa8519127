"""A short human summary of the validate stage: counts, reasons, one example of each failure."""

from __future__ import annotations

from typing import Any


def reason_kind(reason: str) -> str:
    """'expect_x(column, ...)', 'duplicate', 'contaminated' or 'seed contract'."""
    return reason.split(":")[0].strip()


def quality_summary(metrics: dict[str, Any], quarantined: list[dict[str, Any]], max_chars: int = 300) -> str:
    lines = [
        "# Data quality",
        "",
        f"- dialogues checked: {metrics['dialogues']}",
        f"- passed every check: {metrics['passed']} ({metrics['pass_rate']:.1%})",
        f"- quarantined: {metrics['quarantined']} (data/quarantine/validate.jsonl)",
        f"- duplicates: {metrics['duplicates']}, contaminated with evaluation prompts: {metrics['contaminated']}",
        f"- train / held-out: {metrics.get('train', '-')} / {metrics.get('heldout', '-')}",
        "",
        "## Quarantined, by reason (a dialogue can have several)",
        "",
        "| reason | dialogues |",
        "|---|---|",
    ]
    examples: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for record in quarantined:
        for reason in record["reasons"]:
            kind = reason_kind(reason)
            counts[kind] = counts.get(kind, 0) + 1
            examples.setdefault(kind, {"reason": reason, "record": record})
    lines += [f"| {kind} | {n} |" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    lines += ["", "## One example of each", ""]
    for kind, example in examples.items():
        turns = example["record"].get("turns") or []
        shown = "\n".join(f"    [{t.get('role')}] " + (t.get("text") or "")[:max_chars].replace("\n", "\n        ")
                          for t in turns[:6])
        lines += [f"### {kind}", "", f"`{example['reason']}` — dialogue `{example['record']['id']}`", "",
                  shown or "    (no turns)", ""]
    return "\n".join(lines) + "\n"

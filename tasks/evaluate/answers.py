"""Is a reply a real answer? Not empty, not the question said back, not degenerate (one phrase looping), in an
expected language."""

from __future__ import annotations

import re
from collections import Counter

import py3langid

_WORD = re.compile(r"\w+", re.UNICODE)


def answer_problem(text: str, languages: list[str], question: str = "") -> str | None:
    """Why `text` is not a real answer to `question`, or None when it is one."""
    words = _WORD.findall(text.lower())
    if not words:
        return "empty"
    asked = set(_WORD.findall(question.lower()))
    if len(words) >= 3 and sum(w in asked for w in words) / len(words) > 0.8:
        return "repeats the question"  # a base model's favourite non-answer
    trigrams = list(zip(words, words[1:], words[2:]))
    if len(trigrams) >= 6:
        top = Counter(trigrams).most_common(1)[0][1]
        if top / len(trigrams) > 0.3:  # a phrase looping over a third of the reply
            return "degenerate: repeats itself"
    if len(words) >= 8 and len(set(words)) / len(words) < 0.3:
        return "degenerate: few distinct words"
    if len(words) >= 5:  # language ID on a few words is a guess
        language, _ = py3langid.classify(text)
        if language not in languages:
            return f"language {language}"
    return None

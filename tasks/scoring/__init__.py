"""How answers are scored: per-item results with their intervals (stats), the refusal matcher (refusal) and
the LLM judge's verdicts and ratings (judge)."""

"""Stage 5, calibrate: how far the guardrail verdicts (LLM judge, phrase matcher) agree with human labels."""

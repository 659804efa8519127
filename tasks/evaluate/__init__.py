"""Stage 6, evaluate: the adapter against its base model."""

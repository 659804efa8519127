"""Stage 2, seeds: seed questions from the configured sources."""

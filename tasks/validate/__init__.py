"""Stage 4, validate: data contracts, duplicates, contamination, quarantine and the split."""

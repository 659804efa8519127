"""The pipeline's config and data: params.yaml's typed view (config), where stages read and write (paths),
JSON Lines I/O, stable ids, errors a user can act on, the dialogue formats, training text with its masks, and the
seed and evaluation data shipped inside wheels (assets)."""

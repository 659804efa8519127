"""Stage 7, register: model versions, promotion gates and aliases in the MLflow registry."""

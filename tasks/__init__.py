"""The work of selfchat's stages as plain, typed functions.

One sub-package per stage, in pipeline order: base, seeds, collect, validate, train, calibrate, evaluate,
register (and promote, which decides a sweep). A stage package never imports another stage package; what
two stages share lives in the modules beside them: config (params), paths, jsonl (I/O), errors, ids,
dialogue (dialogue formats), masking (training text), student (the model on disk), generation (answers),
adapter_card, chat_model (the registered pyfunc model, logged by path), assets (data shipped in wheels),
refusal, stats, judge, llm_endpoint, tracking (MLflow), versioning (DVC), checkout (one run per checkout),
offline_assets (HTML reports without CDNs), runtime, local_server, prefect_server, deployments and
mlflow_ui (process set-up). `serve` is not a stage: it serves a registered version (`make serve`, `make chat`).
"""

"""The work of selfchat's stages as plain, typed functions.

One sub-package per stage, in pipeline order: base, seeds, collect, validate, train, evaluate, register.
A stage package never imports another stage package; what two stages share lives in the modules beside
them: config (params), paths, jsonl (I/O), errors, ids, dialogue (dialogue formats), masking (training
text), student (the model on disk), assets (data shipped in wheels), refusal, tracking (MLflow),
versioning (DVC), runtime and prefect_server (process set-up).
"""

"""The work of selfchat's stages as plain, typed functions.

One sub-package per stage, in pipeline order: base, seeds, collect, validate, train, calibrate, evaluate,
register (and promote, which decides a sweep; distill, the self-distillation round). A stage package never
imports another stage package; what stages share lives in five shared packages, which never import a stage:
core (config, paths, data formats), models (the student, its answers, the registered model), scoring (stats,
refusals, the judge), services (endpoints, servers, MLflow, DVC, process set-up) and engine (the request engine
collection and distillation share). `serve` is not a stage: it serves a registered version (`make serve`,
`make chat`).
"""

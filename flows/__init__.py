"""selfchat's stages as Prefect flows, in pipeline order: base, seeds, collect, validate, train,
evaluate, register; `flows.pipeline` chains them."""

from tasks.services.runtime import apply_runtime_defaults

# Before prefect/mlflow are imported: offline, no telemetry, state kept in the project.
apply_runtime_defaults()

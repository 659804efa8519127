"""Processes and stores around the stages: the teacher/judge endpoint (llm_endpoint), the servers started on
127.0.0.1 (local_server, prefect_server, mlflow_ui, deployments), MLflow runs (tracking), DVC as the judge of
what reruns (versioning), one run per checkout (checkout), offline HTML reports (offline_assets) and the
process-wide defaults (runtime)."""

"""What `python -m flows.<stage>` says when it cannot start: one line, a non-zero exit, nothing written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def stage(module: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "DVC_", "SELFCHAT_"))}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**env, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize(("module", "missing", "maker"), [
    ("flows.collect", "data/seeds.jsonl", "seeds"),
    ("flows.validate", "data/seeds.jsonl", "seeds"),
    ("flows.train", "models/base", "base"),
    ("flows.evaluate", "models/base", "base"),
    ("flows.register", "models/adapter", "train"),
])
def test_a_missing_input_is_one_line_naming_the_stage_that_makes_it(tmp_path: Path, module, missing, maker):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    result = stage(module, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {missing} is missing: run the {maker} stage first (dvc repro {maker})"
    written = sorted(p.name for p in tmp_path.iterdir() if p.name != ".prefect")  # made by importing prefect
    assert written == ["params.yaml"], "nothing written, no server started"
    assert not (tmp_path / ".prefect" / "selfchat-server.json").exists()


def test_the_pipeline_refuses_a_params_file_dvc_would_not_record(tmp_path: Path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "other.yaml")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    result = stage("flows.pipeline", tmp_path, "--params", "other.yaml")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: flows.pipeline runs on params.yaml only")


def test_the_pipeline_stops_after_the_stage_it_is_told_and_names_an_unknown_one():
    from typing import get_args

    from flows.pipeline import STAGES, StageName, UnknownStage, stages_until

    assert list(get_args(StageName)) == [stage.name for stage in STAGES]  # the choices Prefect's UI offers
    assert [s.name for s in stages_until("validate")] == ["base", "seeds", "collect", "validate"]
    assert stages_until(None) == STAGES
    with pytest.raises(UnknownStage, match="until: unknown stage 'colect'; one of base, seeds"):
        stages_until("colect")

"""One training job, run in this process or, with train.processes > 1, under `accelerate launch` as that many
data-parallel processes (gloo on CPU, NCCL on GPUs): multi-GPU is a launcher setting, not other code.

`python -m accelerate.commands.launch ... -m tasks.train.launch JOB.json` is what the stage runs; each
process trains, the main one writes the adapter and the outcome."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from tasks.core.config import TrainParams
from tasks.core.hashing import folder_sha256
from tasks.core.masking import Example, build_examples
from tasks.models.student import load_tokenizer, save_adapter
from tasks.train.checkpoints import clear_checkpoints, fingerprint_of, resume_point, training_environment
from tasks.train.lora import TrainingError, TrainingOutcome, train_lora

log = logging.getLogger(__name__)


@dataclass
class TrainJob:
    base_dir: str
    adapter_dir: str
    checkpoints: str
    params: dict[str, Any]
    dtype: str
    fingerprint: dict[str, Any]
    examples: list[Example]
    validation: list[Example]
    run_id: str | None = None  # the MLflow run receiving live step metrics
    resume: str | None = None  # the checkpoint to continue from (set by run_training)
    init_adapter: str | None = None  # an adapter to train further instead of a new one (distill)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainJob:
        data = dict(data)
        for key in ("examples", "validation"):
            data[key] = [Example(**e) for e in data[key]]
        return cls(**data)


def train_and_save(job: TrainJob) -> TrainingOutcome | None:
    """Train; the main process saves the adapter (base recorded as `models/base`-style relative path) and
    clears the checkpoints. Returns the outcome on the main process, None on the others."""
    params = TrainParams.model_validate(job.params)
    tokenizer = load_tokenizer(Path(job.base_dir))
    model, outcome = train_lora(Path(job.base_dir), tokenizer, job.examples, job.validation, params,
                                Path(job.checkpoints), job.resume, job.dtype, job.run_id,
                                Path(job.init_adapter) if job.init_adapter else None)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return None
    save_adapter(model, Path(job.adapter_dir), base_ref=job.base_dir)
    clear_checkpoints(Path(job.checkpoints))
    return outcome


def accelerate_command(processes: int, job_file: Path) -> list[str]:
    # --multi_gpu selects torch.distributed's launcher, which also runs CPU processes (gloo; --cpu would
    # start a single process); the Trainer picks the device from use_cpu
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "tasks.train.launch", str(job_file)]


def run_training(job: TrainJob, processes: int = 1) -> TrainingOutcome:
    """Resume where a killed run of the same job stopped (its checkpoints), else start afresh."""
    job = replace(job, resume=resume_point(Path(job.checkpoints), job.fingerprint))
    if job.resume:
        log.info("resuming training from %s", job.resume)
    if processes == 1:
        outcome = train_and_save(job)
        assert outcome is not None
        return outcome
    with tempfile.TemporaryDirectory() as scratch:
        job_file = Path(scratch) / "job.json"
        job_file.write_text(json.dumps(asdict(job)))
        command = accelerate_command(processes, job_file)
        log.info("launching %d training processes: %s", processes, " ".join(command))
        if subprocess.run(command).returncode != 0:
            raise TrainingError(f"training under accelerate launch ({processes} processes) failed; see its log above")
        data = json.loads((Path(scratch) / "outcome.json").read_text())
    return TrainingOutcome(data["summary"], data["history"])


def main(job_file: Path) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    outcome = train_and_save(TrainJob.from_json(json.loads(job_file.read_text())))
    if outcome is not None:
        (job_file.parent / "outcome.json").write_text(json.dumps(asdict(outcome)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))


def training_job(base_dir: Path, base_sha256: str, out_dir: Path, checkpoints: Path, params: TrainParams,
                 dtype: str, examples: list[Example], validation: list[Example], run_id: str | None,
                 parent_dir: Path | None = None) -> TrainJob:
    """A training into an emptied `out_dir` (a new adapter, or `parent_dir`'s trained further), stamped so that a
    checkpoint is resumed only by the training it belongs to (threads change speed, not results)."""
    parent = {"parent": folder_sha256(parent_dir)} if parent_dir else {}
    fingerprint = fingerprint_of(params=params.model_dump(exclude={"threads"}), dtype=dtype, base=base_sha256,
                                 examples=examples, validation=validation, **parent, **training_environment())
    shutil.rmtree(out_dir, ignore_errors=True)
    return TrainJob(str(base_dir), str(out_dir), str(checkpoints), params.model_dump(), dtype, fingerprint, examples,
                    validation, run_id, init_adapter=str(parent_dir) if parent_dir else None)


def train_further(base_dir: Path, parent_dir: Path, out_dir: Path, checkpoints: Path, records: list[dict[str, Any]],
                  params: TrainParams, dtype: str, run_id: str | None) -> dict[str, float]:
    """The adapter in `parent_dir` trained further on `records` (its rank and targets, `params`' schedule),
    saved to `out_dir`; resumable from `checkpoints`. Returns the training summary."""
    examples, _ = build_examples(records, load_tokenizer(base_dir), params.format, params.max_length)
    job = training_job(base_dir, folder_sha256(base_dir), out_dir, checkpoints, params, dtype, examples, [], run_id,
                       parent_dir)
    return run_training(job, params.processes).summary

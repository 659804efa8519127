"""Where each stage reads and writes, relative to the project root (dvc.yaml lists the same paths)."""

from pathlib import Path

BASE_DIR = Path("models/base")
ADAPTER_DIR = Path("models/adapter")
SEEDS = Path("data/seeds.jsonl")
DIALOGUES = Path("data/dialogues.jsonl")
QUARANTINE_COLLECT = Path("data/quarantine/collect.jsonl")
QUARANTINE_VALIDATE = Path("data/quarantine/validate.jsonl")
TRAIN = Path("data/train.jsonl")
HELDOUT = Path("data/heldout.jsonl")
BAIZE_EXPORT = Path("data/export/baize_format.json")
DATA_DOCS = Path("reports/data_docs")
QUALITY_REPORTS = Path("reports/quality")
EVAL_REPORTS = Path("reports/eval")
LOGS = Path("logs")
PLOTS = Path("plots")


def metrics_file(stage: str) -> Path:
    return Path("metrics") / f"{stage}.json"

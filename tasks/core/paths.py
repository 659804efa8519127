"""Where each stage reads and writes, relative to the project root (dvc.yaml lists the same paths)."""

from pathlib import Path

from tasks.core.errors import SelfchatError

BASE_DIR = Path("models/base")
ADAPTER_DIR = Path("models/adapter")
CHECKPOINTS = Path("models/checkpoints")  # training checkpoints: persisted by DVC, emptied after training
SEEDS = Path("data/seeds.jsonl")
JOURNALS = Path("data/collect")  # collection's resume journals: a working folder, not a DVC output
DIALOGUES = Path("data/dialogues.jsonl")
QUARANTINE_COLLECT = Path("data/quarantine/collect.jsonl")
QUARANTINE_VALIDATE = Path("data/quarantine/validate.jsonl")
TRAIN = Path("data/train.jsonl")
HELDOUT = Path("data/heldout.jsonl")
BAIZE_EXPORT = Path("data/export/baize_format.json")
DATA_DOCS = Path("reports/data_docs")
QUALITY_REPORTS = Path("reports/quality")
EVAL_REPORTS = Path("reports/eval")
EVAL_ITEMS = EVAL_REPORTS / "items.jsonl"  # per-item results: what register compares
EVAL_VERDICTS = EVAL_REPORTS / "verdicts.json"  # which metrics rest on calibrated verdicts (may gate)
# the base model's evaluation (per-item results and answers): depends only on the base, the evaluation params
# and the items, so DVC keeps it across training changes and sweep members
BASE_EVAL = Path("reports/eval_base")
CALIBRATION_REPORTS = Path("reports/calibrate")
SWEEP_REPORTS = Path("reports/sweeps")  # one folder per decided sweep: comparison.md, plots, decision.json
# Self-Distill with Feedback (the distill-* stages): the parent's answers, their scores, what trains
DISTILL_DATA = Path("data/distill")
DISTILL_JOURNALS = DISTILL_DATA / "journals"  # sampling's and the judge's resume journals: not DVC outputs
DISTILL_QUESTIONS = DISTILL_DATA / "questions.jsonl"
DISTILL_SAMPLES = DISTILL_DATA / "samples.jsonl"
DISTILL_SCORES = DISTILL_DATA / "scores.jsonl"
DISTILL_BEST = DISTILL_DATA / "best.jsonl"  # the best answer per kept question: what the SFT variant trains on
DISTILL_PAIRS = DISTILL_DATA / "pairs.jsonl"  # best vs worst per question: what the DPO variant trains on
QUARANTINE_DISTILL_JUDGE = Path("data/quarantine/distill_judge.jsonl")
DISTILL_UNUSED = Path("data/quarantine/distill_select.jsonl")  # questions that train nothing, with the reason
PARENT_DIR = Path("models/distill/parent")
SFT_DIR = Path("models/distill/sft")
DPO_DIR = Path("models/distill/dpo")
DISTILL_CHECKPOINTS = Path("models/distill/checkpoints")
DISTILL_REPORTS = Path("reports/distill")
DISTILL_ITEMS = DISTILL_REPORTS / "items.jsonl"  # per-item results of parent and variants
LOGS = Path("logs")
PLOTS = Path("plots")

# which stage writes each input another stage reads
MADE_BY = {BASE_DIR: "base", SEEDS: "seeds", DIALOGUES: "collect", TRAIN: "validate", HELDOUT: "validate",
           ADAPTER_DIR: "train", Path("metrics/calibrate.json"): "calibrate",
           Path("metrics/eval.json"): "evaluate", EVAL_ITEMS: "evaluate", BASE_EVAL: "evaluate-base",
           EVAL_VERDICTS: "evaluate", PARENT_DIR: "distill-sample",
           DISTILL_SAMPLES: "distill-sample", DISTILL_SCORES: "distill-judge"}


class MissingInput(SelfchatError):
    pass


def metrics_file(stage: str) -> Path:
    return Path("metrics") / f"{stage}.json"


def require(*inputs: Path) -> None:
    """Stop with one line naming the first missing input and the stage that makes it."""
    for path in inputs:
        if not path.exists():
            stage = MADE_BY.get(path, "previous")
            raise MissingInput(f"{path} is missing: run the {stage} stage first (dvc repro {stage})")

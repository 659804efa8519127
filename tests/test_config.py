import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.core.config import ConfigError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def good() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.train.lora.r >= 1 and params.seeds.sources


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda p: p["train"]["lora"].update(rank=8), "train.lora.rank: unknown key"),
    (lambda p: p["train"]["lora"].update(r=0), "train.lora.r: input should be greater than or equal to 1 (got 0)"),
    (lambda p: p["train"].update(max_steps="many"), "train.max_steps: input should be a valid integer"),
    (lambda p: p["validate"].update(heldout_fraction=1.5), "validate.heldout_fraction: input should be less than 1"),
    (lambda p: p["collect"]["teacher"].update(timeout_s=-1),
     "collect.teacher.timeout_s: input should be greater than 0"),
    (lambda p: p.update(colect={}), "colect: unknown key"),
    (lambda p: p["train"].update(quantization="2bit"), "train.quantization: input should be 'none', '8bit' or '4bit'"),
    (lambda p: p["train"].update(max_steps=10), "train: value error, set exactly one of epochs and max_steps"),
    (lambda p: p["train"].update(batch_size=3, processes=2), "train: value error, batch_size (3) must be a multiple"),
    (lambda p: p["seeds"].update(sources=[]), "seeds.sources: list should have at least 1 item"),
    (lambda p: p["register"].update(rules={"benchmark.": "strict"}),
     "register.rules.benchmark.: input should be 'evidence' or 'non_inferiority'"),
    (lambda p: p["evaluate"].update(judge_verdicts="never"), "evaluate.judge_verdicts: input should be 'auto' or"),
])
def test_bad_params_name_the_key(edit, expected):
    params = good()
    edit(params)
    with pytest.raises(ConfigError) as caught:
        parse_params(params)
    message = str(caught.value)
    assert message.startswith("params.yaml: ") and expected in message
    assert "\n" not in message


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")


def test_stage_exits_2_with_one_line_and_writes_nothing(tmp_path):
    params = good()
    params["seeds"]["size"] = -3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    before = set(tmp_path.iterdir())
    result = subprocess.run([sys.executable, "-m", "flows.seeds", "--params", "params.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: params.yaml: seeds.size: input should be greater than or equal to 1 (got -3)"]
    # Prefect creates its (ignored) home folder on import; no output, metric or tracking file appears
    assert {p for p in tmp_path.iterdir() if p.name != ".prefect"} == before


def _defaults_differing_from(model_class: type, section: dict, prefix: str) -> list[str]:
    """Keys whose code default differs from the value params.yaml documents."""
    from pydantic import BaseModel

    drift = []
    for name, field in model_class.model_fields.items():
        key = field.alias or name
        if key not in section or field.is_required():
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(section[key], dict):
            drift += _defaults_differing_from(annotation, section[key], f"{prefix}{key}.")
            continue
        default = field.get_default(call_default_factory=True)
        default = default.model_dump() if isinstance(default, BaseModel) else default
        documented = load_params(ROOT / "params.yaml")  # typed, so 0.3 == 0.3 and lists compare as parsed
        value = documented
        for part in f"{prefix}{key}".split("."):
            value = getattr(value, {"validate": "validate_", "register": "register_"}.get(part, part))
        value = value.model_dump() if isinstance(value, BaseModel) else value
        if value != default:
            drift.append(f"{prefix}{key}: code {default!r}, params.yaml {value!r}")
    return drift


def test_code_defaults_are_the_documented_defaults():
    from tasks.core.config import Params

    assert _defaults_differing_from(Params, good(), "") == []


def test_every_param_is_read_somewhere():
    """A param no code reads is a setting that silently does nothing."""
    import ast

    from pydantic import BaseModel

    from tasks.core.config import Params

    read = set()
    for file in [*(ROOT / "flows").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]:
        if file.name != "config.py":
            read |= {node.attr for node in ast.walk(ast.parse(file.read_text())) if isinstance(node, ast.Attribute)}

    def fields(model: type, prefix: str) -> list[tuple[str, str]]:
        found = []
        for name, field in model.model_fields.items():
            found.append((f"{prefix}{name}", name))
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                found += fields(field.annotation, f"{prefix}{name}.")
        return found

    unread = [path for path, name in fields(Params, "") if name not in read]
    assert unread == []

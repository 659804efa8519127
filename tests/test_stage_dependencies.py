"""dvc.yaml cannot go stale: each stage's deps cover every project file its flow imports (and list no shared
module it does not import), and no stage package imports another stage's."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("flows", "tasks")
STAGES = ["base", "seeds", "collect", "validate", "train", "calibrate", "evaluate-base", "evaluate", "register",
          "distill-sample",
          "distill-judge", "distill-train"]
# a stage's own package: tasks/<stage>, tasks/evaluate for evaluate-base, tasks/distill for the three stages of a
# distillation round
PACKAGE_OF = {stage: stage.split("-")[0] for stage in STAGES}
# not DVC stages: promote decides a sweep (flows/promote.py), export and serve ship the champion (make export,
# make serve); they are held to the same rule
PACKAGES = sorted({*PACKAGE_OF.values(), "promote", "export", "serve"})
# what stages share: config and data formats, models, scoring, services, and the request engine that collection
# and distillation share
SHARED_PACKAGES = ["core", "models", "scoring", "services", "engine"]


def module_file(name: str) -> Path | None:
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def imported_modules(file: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    # importing a.b.c runs a/__init__.py and a/b/__init__.py first
    return {".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 2)}


def import_closure(module: str) -> set[str]:
    """Project files (relative paths) that running `python -m <module>` imports."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        file = module_file(todo.pop())
        if file is None or file in seen:
            continue
        seen.add(file)
        todo.extend(imported_modules(file))
    return {str(file.relative_to(ROOT)) for file in seen}


def has_code(relative: str) -> bool:
    """A package __init__ holding only a docstring changes no behaviour."""
    body = ast.parse((ROOT / relative).read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def covered(relative: str, deps: list[str]) -> bool:
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


def stage_deps(stage: str) -> list[str]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]


@pytest.mark.parametrize("stage", STAGES)
def test_deps_cover_every_imported_project_file_and_nothing_more(stage: str):
    closure = {f for f in import_closure(f"flows.{stage.replace('-', '_')}") if has_code(f)}
    deps = [d for d in stage_deps(stage) if d.split("/")[0] in PROJECT_PACKAGES]
    missing = sorted(f for f in closure if not covered(f, deps))
    assert not missing, f"dvc.yaml stage {stage} imports files it does not depend on: {missing}"
    unused = sorted(d for d in deps if not any(covered(f, [d]) for f in closure))
    assert not unused, f"dvc.yaml stage {stage} depends on code it does not import: {unused}"
    assert f"tasks/{PACKAGE_OF[stage]}" in deps, "a stage depends on its own package by folder"


@pytest.mark.parametrize("stage", PACKAGES)
def test_a_stage_package_imports_no_other_stage_package(stage: str):
    foreign = {f for f in import_closure(f"tasks.{stage}.__init__") | {
        f for file in (ROOT / "tasks" / stage).glob("*.py") for f in import_closure(
            f"tasks.{stage}.{file.stem}")} if f.split("/")[1] in PACKAGES and f.split("/")[1] != stage}
    assert not foreign, f"tasks/{stage} imports other stages' code: {sorted(foreign)}"


def test_shared_modules_import_no_stage_package():
    shared = [f for p in SHARED_PACKAGES for f in (ROOT / "tasks" / p).glob("*.py")]
    assert len(shared) > 2 * len(SHARED_PACKAGES)
    for file in shared:
        module = ".".join(file.relative_to(ROOT).with_suffix("").parts)
        stages = {f.split("/")[1] for f in import_closure(module) if f.split("/")[1] in PACKAGES}
        assert not stages, f"shared module {file.relative_to(ROOT)} imports stage packages {stages}"


def test_tasks_holds_the_stage_packages_and_at_most_five_shared_ones():
    """A reader of `ls tasks` sees the pipeline's stages and a few named rooms, no loose modules."""
    folders = {p.name for p in (ROOT / "tasks").iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == {*PACKAGES, *SHARED_PACKAGES, "vendor"}
    assert len(SHARED_PACKAGES) <= 5
    assert [p.name for p in (ROOT / "tasks").glob("*.py")] == ["__init__.py"]

"""dvc.yaml's dependencies are exact: each stage depends on the library files it can import, and no others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT

pytestmark = pytest.mark.unit

STAGES = ["params", "validate", "convert", "metadata", "train", "evaluate"]
SRC = REPO_ROOT / "src"


def _module_file(name: str) -> Path | None:
    path = SRC / Path(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imports(path: Path) -> set[str]:
    """The visapp modules a file imports anywhere (top level or inside functions), with their packages."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("visapp"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == "visapp")
    # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
    return {".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 2)}


def _closure(script: Path) -> set[str]:
    seen: set[str] = set()
    todo = _imports(script)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            found = _module_file(name)
            if found:
                todo |= _imports(found)
    return {_module_file(name).relative_to(REPO_ROOT).as_posix() for name in seen if _module_file(name)}


@pytest.mark.parametrize("stage", STAGES)
def test_stage_depends_on_exactly_the_files_it_imports(stage):
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    deps = dvc["stages"][stage]["deps"]
    declared = {d for d in deps if str(d).startswith("src/")}
    assert f"stages/{stage}.py" in deps
    assert declared == _closure(REPO_ROOT / "stages" / f"{stage}.py")


def test_the_data_stages_do_not_depend_on_training_or_the_faces():
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    for stage in ("validate", "convert", "metadata"):
        for dep in dvc["stages"][stage]["deps"]:
            assert not dep.startswith(("src/visapp/training", "src/visapp/registry", "src/visapp/cli")), (stage, dep)

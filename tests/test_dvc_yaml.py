"""dvc.yaml's dependencies are exact: each stage depends on the library modules it can import, and no others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT

STAGES = ["validate", "convert", "metadata", "train"]


def _visapp_imports(path: Path) -> set[str]:
    """Names of the visapp modules a file imports anywhere (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "visapp":
            if node.module == "visapp":
                names.update(alias.name for alias in node.names)  # from visapp import tracking
            else:
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("visapp."))
    return names


def _closure(script: Path) -> set[str]:
    seen: set[str] = set()
    todo = _visapp_imports(script)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo |= _visapp_imports(REPO_ROOT / "src" / "visapp" / f"{name}.py")
    return seen


@pytest.mark.parametrize("stage", STAGES)
def test_stage_depends_on_exactly_the_modules_it_imports(stage):
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    deps = dvc["stages"][stage]["deps"]
    declared = {Path(d).stem for d in deps if str(d).startswith("src/visapp/")}
    assert f"stages/{stage}.py" in deps
    assert declared == _closure(REPO_ROOT / "stages" / f"{stage}.py")

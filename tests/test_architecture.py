"""The layout holds: import rules (import-linter) that bite, private APIs only in integrations, no print()
outside the command line, a docstring on every public definition, and no reference to documents outside the
repository."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

SRC = REPO_ROOT / "src" / "visapp"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.unit


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the package under root/src, with root/pyproject.toml's contracts."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(root / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.integration
def test_import_rules_hold():
    proc = lint_imports(REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout


@pytest.mark.integration
@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("formats/voc.py", "import torch", "never import torch"),
        ("dataset/convert.py", "from visapp.integrations import dvc", "never import torch"),
        ("dataset/validate.py", "from visapp.cli import main", "Layers"),
        ("registry/versions.py", "import dvc.api", "reached only through their module"),
    ],
)
def test_a_forbidden_import_in_a_scratch_copy_breaks_a_rule(tmp_path, module, line, contract):
    shutil.copytree(REPO_ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "src" / "visapp" / module
    path.write_text(
        path.read_text().replace(
            "from __future__ import annotations\n", f"from __future__ import annotations\n\n{line}\n", 1
        )
    )
    proc = lint_imports(tmp_path)
    assert proc.returncode != 0, proc.stdout
    broken = proc.stdout[proc.stdout.index("Broken contracts") :]
    assert contract in " ".join(broken.split()), proc.stdout


def private_uses(source: str, own: str = "visapp") -> list[str]:
    """Private names of other packages a module uses: `from pkg import _x`, `pkg._x`, `import pkg._mod`, and a
    method `_x` of a class that derives from another package's class (it overrides, or adds to, that class's
    private workings, which the package may change in any release)."""
    tree = ast.parse(source)
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == own:
                    continue
                if any(part.startswith("_") for part in alias.name.split(".")):
                    found.append(f"import {alias.name}")
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == own or node.module == "__future__":
                continue
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"from {node.module} import ...")
            found += [f"from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")]
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in aliases:
                found.append(f"{aliases[base.id]}...{node.attr}")
        elif isinstance(node, ast.ClassDef):
            foreign = [name for name in map(_root_name, node.bases) if name in aliases]
            found += [
                f"{aliases[foreign[0]]}...{item.name} (overridden in {node.name})"
                for item in node.body
                if foreign
                and isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                and item.name.startswith("_")
                and not item.name.startswith("__")
            ]
    return found


def _root_name(node: ast.expr) -> str | None:
    """The name an expression starts with: `huey` for `huey.consumer.Consumer`, `Consumer` for `Consumer`."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def test_private_api_check_bites():
    assert private_uses("import zipfile\nzipfile._EndRecData(f)") == ["zipfile..._EndRecData"]
    assert private_uses("from dvc.repo import _x") == ["from dvc.repo import _x"]
    assert private_uses("from ultralytics.utils._hidden import y") == ["from ultralytics.utils._hidden import ..."]
    assert private_uses("import zipfile\nzipfile.ZipFile(p)\nself._zip.close()") == []
    override = "from huey.consumer import Consumer\nclass Quiet(Consumer):\n    def _set_signal_handlers(self): pass\n"
    assert private_uses(override) == ["huey.consumer.Consumer..._set_signal_handlers (overridden in Quiet)"]
    assert private_uses("import logging\nclass H(logging.Handler):\n    def _tidy(self): pass\n") == [
        "logging..._tidy (overridden in H)"
    ]
    assert (
        private_uses("from visapp.ingest.archive import SafeArchive\nclass T(SafeArchive):\n    def _vet(self): pass")
        == []
    )
    assert private_uses("import logging\nclass H(logging.Handler):\n    def emit(self, record): pass\n") == []


def test_private_apis_of_other_packages_appear_only_in_integrations():
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        if "integrations" in path.relative_to(SRC).parts:
            continue
        uses = private_uses(path.read_text())
        if uses:
            offenders[path.relative_to(REPO_ROOT).as_posix()] = uses
    assert offenders == {}


def test_only_the_command_line_prints():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert offenders == [], "use logging (or the progress callback) outside the CLI"


def undocumented(source: str) -> list[str]:
    """The public definitions of a module without a docstring: its functions and classes whose names do not start
    with `_`, and the public methods of those classes."""
    found = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) or node.name.startswith("_"):
            continue
        if ast.get_docstring(node) is None:
            found.append(node.name)
        if isinstance(node, ast.ClassDef):
            found += [
                f"{node.name}.{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                and not item.name.startswith("_")
                and ast.get_docstring(item) is None
            ]
    return found


def test_the_docstring_check_bites():
    assert undocumented("def f():\n    pass\n") == ["f"]
    assert undocumented('class C:\n    """A C."""\n\n    def m(self):\n        pass\n') == ["C.m"]
    assert undocumented("class C:\n    x: int\n\n    @property\n    def y(self):\n        return 1\n") == ["C", "C.y"]
    assert undocumented('def f():\n    """An f."""\n') == []
    assert undocumented("def _f():\n    pass\n\n\nclass _C:\n    def m(self):\n        pass\n") == []
    assert undocumented('class C:\n    """A C."""\n\n    def __init__(self):\n        pass\n') == []


def test_every_public_definition_has_a_docstring():
    missing = [
        f"{path.relative_to(REPO_ROOT)}: {name}"
        for path in sorted(SRC.rglob("*.py"))
        for name in undocumented(path.read_text())
    ]
    assert missing == [], "give each a one-line summary (Args:/Returns:/Raises: where the signature does not say it)"


# Documents that live outside this repository, and tracker references (an issue, a step or an acceptance criterion
# of a plan by number): a reader of the repository cannot follow them.
# The names are put together here so that this file does not itself cite them.
OUTSIDE_DOCUMENTS = ("DES" + "IGN", "STY" + "LE")
OUTSIDE_REFERENCES = re.compile(
    "|".join(rf"{name}\.md" for name in OUTSIDE_DOCUMENTS) + r"|\b[Ii]ssue \d+|\bStep \d+\b|\bAcceptance \d+\b"
)


def test_the_reference_check_bites():
    cited = [f"see {OUTSIDE_DOCUMENTS[0]}.md", "as iss" + "ue 404 says", "St" + "ep 99 - cleanup",
             "Accep" + "tance 99: convert copies no image"]  # fmt: skip
    for line in cited:
        assert OUTSIDE_REFERENCES.search(line), line
    assert not OUTSIDE_REFERENCES.search("acceptance tests; 9 steps; the issue code bbox_invalid")


def test_the_repository_cites_only_itself():
    places = [REPO_ROOT / "README.md", *REPO_ROOT.glob("docs/*.md")]
    for folder in ("src", "stages", "tests", "benchmarks", "scripts", "deploy", "conf", ".github"):
        places += sorted(
            path
            for path in (REPO_ROOT / folder).rglob("*")
            if path.is_file() and not any(part == "__pycache__" or part.endswith(".egg-info") for part in path.parts)
        )
    places += [
        REPO_ROOT / name
        for name in ("dvc.yaml", "pyproject.toml", "Makefile", "Dockerfile")
        if (REPO_ROOT / name).is_file()
    ]
    found = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {match.group(0)}"
        for path in places
        if path != Path(__file__)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for match in [OUTSIDE_REFERENCES.search(line)]
        if match
    ]
    assert found == []

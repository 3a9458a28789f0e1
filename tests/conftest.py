"""Shared fixtures: an offline environment, and throw-away copies of this repository driven by real git + DVC."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # dvc, visapp, yolo, mlflow of the environment running the tests
# What a project needs to run its pipeline: the stage scripts and the library are stage dependencies.
PROJECT_FILES = ["conf", "stages", "src", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "pyproject.toml"]


@pytest.fixture(scope="session", autouse=True)
def offline_env(tmp_path_factory: pytest.TempPathFactory):
    """No network, no GUI, a private Ultralytics settings folder, a git identity, the venv's tools first."""
    mp = pytest.MonkeyPatch()
    mp.setenv("YOLO_OFFLINE", "true")
    mp.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics-config")))
    mp.setenv("MPLBACKEND", "Agg")
    mp.setenv("DVC_NO_ANALYTICS", "1")
    mp.setenv("GIT_AUTHOR_NAME", "VIS tests")
    mp.setenv("GIT_AUTHOR_EMAIL", "tests@vis.invalid")
    mp.setenv("GIT_COMMITTER_NAME", "VIS tests")
    mp.setenv("GIT_COMMITTER_EMAIL", "tests@vis.invalid")
    mp.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("DVC_EXP_NAME", raising=False)
    yield
    mp.undo()


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None, timeout: float = 600):
    """Run a command, capture its output, and fail the test with that output when it fails unexpectedly."""
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


@dataclass
class Project:
    """A copy of this repository in a temporary folder: its own git repo, DVC repo and data."""

    root: Path

    def run(self, *cmd: str, check: bool = True, env: dict | None = None, timeout: float = 600):
        return run(list(cmd), self.root, check=check, env=env, timeout=timeout)

    def set_params(self, *overrides: str) -> None:
        """Apply dotlist overrides (`data.on_error=skip`) to params.yaml, as `dvc exp run -S` would."""
        from omegaconf import OmegaConf

        path = self.root / "params.yaml"
        merged = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides)))
        path.write_text(OmegaConf.to_yaml(merged))

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "--allow-empty", "-m", message)


def _copy_project(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in PROJECT_FILES:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)


@pytest.fixture
def make_project(tmp_path: Path):
    """Factory: a git + DVC repository holding this project's pipeline, committed, with no data yet."""

    def factory(name: str = "project") -> Project:
        root = tmp_path / name
        root.mkdir()
        _copy_project(root)
        project = Project(root)
        project.run("git", "init", "-q", "-b", "main")
        project.run("dvc", "init", "-q")
        for key, value in [
            ("core.analytics", "false"),
            ("core.autostage", "true"),
            ("hydra.enabled", "true"),
            ("hydra.config_dir", "conf"),
            ("hydra.config_name", "config"),
        ]:
            project.run("dvc", "config", key, value)
        project.commit("project")
        return project

    return factory

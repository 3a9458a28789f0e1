"""A released commit read as data: its params, lock, metrics, dataset metadata and MLflow run, as they were then.

A version must stay readable forever, whatever the params schema has become since. So an old commit's files
are read through DVC's API (Git-tracked files from Git, pipeline outputs from the DVC cache or remote) as
plain mappings, never through today's typed params: a key added since is simply absent (the registry then
takes today's value, from the workspace's params.yaml), a key removed since is ignored, a key renamed since is
found under its old name (`RENAMED`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visapp.config import PARAMS_FILE, TrackingConfig, read_params_file
from visapp.errors import VisError
from visapp.formats.dvcfile import parse_dvc_file
from visapp.formats.metadata import METADATA_FILE
from visapp.integrations.dvc import Revision
from visapp.training.results import METRICS_FILE
from visapp.training.tracking import RUN_FILE

# Keys the registry reads -> the names they had before (newest first), for params written before a rename.
RENAMED: dict[str, tuple[str, ...]] = {}


def lookup(params: Mapping[str, Any], key: str) -> Any:
    """A dotted key's value in a params mapping, under its name or a former one; KeyError when absent."""
    for name in (key, *RENAMED.get(key, ())):
        node: Any = params
        try:
            for part in name.split("."):
                node = node[part]
        except (KeyError, TypeError):
            continue
        return node
    raise KeyError(key)


@dataclass
class Snapshot:
    """One revision's files, read on demand."""

    root: Path
    commit: str
    revision: Revision
    current: dict[str, Any]  # today's params.yaml: where a key the old params lack is taken from

    def text(self, path: str) -> str | None:
        """A file's text at this commit, or None when it has no such file."""
        return self.revision.read_text(path)

    def required_text(self, path: str) -> str:
        """A file's text at this commit; `VisError` when it has no such file."""
        text = self.text(path)
        if text is None:
            raise VisError(f"{path} is missing at {self.commit[:12]}: not a trained VIS pipeline commit")
        return text

    def yaml(self, path: str) -> dict[str, Any]:
        """A YAML file at this commit as a mapping ({} when it is missing or not a mapping)."""
        import yaml

        text = self.text(path)
        data = yaml.safe_load(text) if text else None
        return data if isinstance(data, dict) else {}

    def params(self) -> dict[str, Any]:
        """This commit's params.yaml as a plain mapping; `VisError` when it has none."""
        params = self.yaml(str(PARAMS_FILE))
        if not params:
            raise VisError(f"params.yaml is missing at {self.commit[:12]}: not a VIS pipeline commit")
        return params

    def param(self, key: str) -> Any:
        """The value at this commit, else today's value of the key; `VisError` when neither has it."""
        for source in (self.params(), self.current):
            try:
                return lookup(source, key)
            except KeyError:
                continue
        raise VisError(f"neither {self.commit[:12]} nor today's params.yaml has {key}: recompose params.yaml")

    def json(self, path: str) -> dict[str, Any]:
        """A JSON file at this commit as a mapping ({} when not an object); `VisError` when missing or not JSON."""
        try:
            data = json.loads(self.required_text(path))
        except ValueError as exc:
            raise VisError(f"{path} at {self.commit[:12]} is not JSON ({exc})") from None
        return data if isinstance(data, dict) else {}

    def metrics(self) -> dict[str, Any]:
        """The metrics.json of this commit's training."""
        return self.json(f"{self.param('paths.model')}/{METRICS_FILE}")

    def metadata(self) -> dict[str, Any]:
        """The dataset_metadata.json of this commit."""
        return self.json(f"{self.param('paths.metadata')}/{METADATA_FILE}")

    def run_id(self) -> str | None:
        """The MLflow run id the train stage recorded beside the weights, if it did."""
        text = self.text(f"{self.param('paths.model')}/{RUN_FILE}")
        if not text:
            return None
        try:
            run_id = json.loads(text).get("run_id")
        except (ValueError, AttributeError):
            return None
        return str(run_id) if run_id else None

    def raw_dvc_hash(self) -> str | None:
        """The DVC hash of the raw dataset this commit records (its .dvc file), or None when it has none."""
        raw = str(self.param("paths.raw"))
        text = self.text(f"{raw}.dvc")
        return parse_dvc_file(text, f"{raw}.dvc at {self.commit[:12]}").md5 if text else None

    def tracking(self) -> TrackingConfig:
        """Where this commit's training was tracked (today's values for keys it lacks)."""
        return TrackingConfig(
            uri=self.param("tracking.uri"),
            experiment=str(self.param("tracking.experiment")),
            required=bool(self.param("tracking.required")),
        )

    def artifact_path(self, name: str) -> str:
        """The artifact's path as declared in dvc.yaml `artifacts:` at this commit."""
        artifacts = self.yaml("dvc.yaml").get("artifacts") or {}
        if name not in artifacts or not artifacts[name].get("path"):
            raise VisError(
                f"dvc.yaml at {self.commit[:12]} declares no artifact {name!r}: add `artifacts: {{{name}: {{path: "
                f"models/yolo/weights/best.pt, type: model}}}}` to dvc.yaml (the train stage's weights)"
            )
        return str(artifacts[name]["path"])

    def pinning_stage(self, path: str) -> tuple[str, dict[str, Any]] | None:
        """(stage name, dvc.lock out entry) of the stage output that holds `path`, or None."""
        lock = self.yaml("dvc.lock")
        for stage, entry in sorted((lock.get("stages") or {}).items()):
            for out in entry.get("outs") or []:
                out_path = str(out.get("path", "")).rstrip("/")
                if path == out_path or path.startswith(f"{out_path}/"):
                    return stage, out
        return None


@contextmanager
def snapshot(root: Path, commit: str) -> Iterator[Snapshot]:
    """Read `commit` of the repository at `root` (see the module docstring)."""
    current = read_params_file(root / PARAMS_FILE) if (root / PARAMS_FILE).is_file() else {}
    revision = Revision(root, commit)
    try:
        yield Snapshot(root, commit, revision, current)
    finally:
        revision.close()

"""DVC, the library: every use of its Python API (and of its internals, where no API exists) lives here.

The data stages never import this module: they read `.dvc` files as plain YAML (`visapp.formats.dvcfile`).
Ingest, training, the registry and the service call these functions; an upgrade of DVC touches this file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visapp.errors import VisError
from visapp.fsio import os_error


def find_dvc_root(start: Path) -> Path:
    """The folder holding `.dvc/` at or above `start`."""
    start = Path(start).absolute()
    for folder in [start, *start.parents]:
        if (folder / ".dvc").is_dir():
            return folder
    raise VisError(f"{start} is not inside a DVC repository: run `dvc init` in the project first")


@contextlib.contextmanager
def open_repo(root: str | Path, scm: bool = True) -> Iterator[Any]:
    """A `dvc.repo.Repo`; `scm=False` keeps DVC away from git (nothing staged, nothing ignored)."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        repo = Repo(str(root), config=None if scm else {"core": {"no_scm": True}})
    except NotDvcRepoError:
        raise VisError(f"{Path(root).resolve()} is not a DVC repository: run visapp from the project root") from None
    except Exception as exc:  # DVC raises its own exception types, all subclasses of Exception
        raise VisError(f"cannot open the DVC repository in {root}: {exc}") from None
    try:
        yield repo
    finally:
        repo.close()


# ---------------------------------------------------------------- tracking a folder (ingest)


def autostage(repo: Any) -> bool:
    """Whether `core.autostage` is on: DVC then `git add`s the files it writes."""
    return bool(repo.config["core"].get("autostage", False))


def unrecorded_changes(repo: Any, folder: Path, label: str) -> str | None:
    """Why replacing `folder` would lose data DVC does not hold, or None when `<folder>.dvc` records it exactly."""
    dvc_file = folder.with_name(folder.name + ".dvc")
    if not dvc_file.is_file():
        return f"{label} is not tracked by DVC ({label}.dvc is missing)"
    try:
        status = repo.status(targets=[str(dvc_file)])
    except Exception as exc:
        raise VisError(f"cannot check {label} against {label}.dvc: {exc}") from None
    return f"{label} has changes that {label}.dvc does not record" if status else None


def folder_hash(folder: Path) -> str:
    """DVC's hash of a folder (`<md5>.dir`), as `dvc add` would record it, computed without a repository or a
    cache: for a folder that is not (yet) tracked, such as an upload to the service."""
    import tempfile

    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()  # type: ignore[no-untyped-call]  # dvc_objects leaves its __init__ unannotated
    with tempfile.TemporaryDirectory(prefix="visapp-hash-") as scratch:
        _, _, obj = build(HashFileDB(fs, scratch), str(Path(folder).resolve()), fs, "md5", dry_run=True)
    return str(obj.hash_info.value)


def track_file(root: Path, path: Path) -> Path:
    """`dvc add` one file of the repository (into its cache; Git ignores the file, tracks its .dvc); the .dvc."""
    from dvc.exceptions import DvcException

    with open_repo(root) as repo:
        try:
            repo.add(str(path))
        except DvcException as exc:
            raise VisError(f"dvc add failed for {path}: {exc}") from None
    return path.with_name(path.name + ".dvc")


def add_folder(repo: Any, folder: Path, desc: str | None) -> str:
    """Hash `folder` into the DVC cache; the text of its .dvc file (removed from disk again).

    `desc` is DVC's own field for a description of the output; later `dvc add` runs keep it.
    """
    from dvc.exceptions import DvcException

    try:
        (stage,) = repo.add(str(folder))
        if desc:
            stage.outs[0].annot.desc = desc
            stage.dump()
    except OSError as exc:
        raise os_error(exc, Path(repo.root_dir) / ".dvc" / "cache", "write the DVC cache in") from None
    except DvcException as exc:
        raise VisError(f"dvc add failed for {folder}: {exc}") from None
    dvc_file = folder.with_name(folder.name + ".dvc")
    text = dvc_file.read_text(encoding="utf-8")
    dvc_file.unlink()  # nobody may see a .dvc file beside a staging folder (`dvc status` would list it)
    return text


# ---------------------------------------------------------------- the pipeline


def pipeline_status(root: Path) -> dict[str, Any]:
    """`dvc status` of the workspace: {stage or .dvc file: changes}; empty when everything is up to date."""
    with open_repo(root) as repo:
        return dict(repo.status())


def rerun_if_stale(root: Path, stage: str) -> bool:
    """`dvc repro STAGE`, that stage alone, when dvc.lock records it and `dvc status` finds it stale; whether it ran."""
    import yaml

    lock = root / "dvc.lock"
    if not lock.is_file() or stage not in (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {}):
        return False
    with open_repo(root) as repo:
        if stage not in repo.status(targets=[stage]):
            return False
        repo.reproduce(targets=[stage], single_item=True)
    return True


# ---------------------------------------------------------------- revisions (history)


class Revision:
    """The files of one revision as DVC sees them: Git-tracked ones, and DVC outputs from the cache or remote."""

    def __init__(self, root: Path, rev: str) -> None:
        from dvc.api import DVCFileSystem

        self.root, self.rev = root, rev
        try:
            self.fs = DVCFileSystem(str(root), rev=rev)
        except Exception as exc:
            raise VisError(f"cannot open revision {rev[:12]} of {root} with DVC: {exc}") from None

    def read_text(self, path: str) -> str | None:
        """A file's text at this revision, or None when the revision has no such file."""
        try:
            if not self.fs.exists(path):
                return None
            with self.fs.open(path, "r", encoding="utf-8") as handle:
                text: str = handle.read()
            return text
        except FileNotFoundError:
            return None
        except Exception as exc:  # DVC's own errors say what is missing; add what to do
            raise VisError(
                f"cannot read {path} at {self.rev[:12]} ({type(exc).__name__}: {exc}): it is neither in the local "
                "DVC cache nor in the remote; `dvc push` from where it was trained, or check the remote settings"
            ) from None

    def md5(self, path: str) -> str | None:
        """The md5 DVC recorded for a file (inside a tracked folder too), or None when DVC records none."""
        try:
            md5: str | None = self.fs.info(path).get("md5")
            return md5
        except FileNotFoundError:
            return None
        except Exception as exc:  # a folder's listing neither cached nor in the remote
            raise VisError(f"cannot look up {path} at {self.rev[:12]}: {exc}; `dvc pull` or check the remote") from None

    def files(self, folder: str) -> dict[str, str | None] | None:
        """Every file under `folder` (paths relative to it) -> the md5 DVC recorded for it, None for a file Git
        holds; None when the revision has no such folder. Nothing is downloaded but a tracked folder's listing."""
        try:
            if not self.fs.isdir(folder):
                return None
            found = self.fs.find(folder, detail=True)
        except Exception as exc:  # the folder's listing neither cached nor in the remote
            raise VisError(
                f"cannot list {folder} at {self.rev[:12]} ({type(exc).__name__}: {exc}): its listing is neither in "
                "the local DVC cache nor in the remote; `dvc pull` it, or check the remote settings (`dvc remote "
                "list`, the credentials)"
            ) from None
        prefix = f"{folder.rstrip('/')}/"
        return {
            name.removeprefix(prefix): info.get("md5") for name, info in found.items() if info.get("type") == "file"
        }

    def read_bytes(self, path: str, size: int = -1) -> bytes:
        """A file's bytes at this revision (the first `size` only, when given) from Git, the cache or the remote."""
        try:
            with self.fs.open(path, "rb") as handle:
                data: bytes = handle.read(size)
            return data
        except Exception as exc:  # FileNotFoundError too: the listing named it, so its contents are missing
            raise VisError(
                f"cannot read {path} at {self.rev[:12]} ({type(exc).__name__}: {exc}): it is neither in the local "
                "DVC cache nor in the remote; `dvc push` from where it was added, or check the remote settings"
            ) from None

    def download(self, files: Mapping[str, Path]) -> None:
        """Copy files of this revision (path -> local destination, whose folder exists) in one batch."""
        if not files:
            return
        try:
            self.fs.get(list(files), [str(dest) for dest in files.values()])
        except Exception as exc:
            raise VisError(
                f"cannot read {len(files)} files at {self.rev[:12]} ({type(exc).__name__}: {exc}): they are "
                "neither in the local DVC cache nor in the remote; `dvc push` from where they were added, or check "
                "the remote settings"
            ) from None

    def close(self) -> None:
        """Close DVC's file system of the revision (errors while closing are ignored)."""
        with contextlib.suppress(Exception):
            self.fs.close()


def experiments(root: Path) -> list[dict[str, Any]]:
    """`dvc exp show`'s rows for HEAD: the workspace, HEAD and its experiments, params and metrics flattened."""
    import dvc.api

    try:
        return list(dvc.api.exp_show(repo=str(root)))
    except Exception as exc:
        raise VisError(f"cannot list the experiments of {root}: {exc}") from None


def download_artifact(root: Path, name: str, version: str, out: Path) -> None:
    """Write an artifact's file at a version (`dvc artifacts get`: its commit, then the cache or remote)."""
    with open_repo(root) as repo:
        try:
            repo.artifacts.download(name, version=version, out=str(out))
        except Exception as exc:
            raise VisError(
                f"cannot get {name}@{version}: {exc}; its weights must be in the DVC cache or the remote "
                "(`dvc push` where it was trained; check `dvc remote list` and the credentials)"
            ) from None


# ---------------------------------------------------------------- the remote


@dataclass(frozen=True)
class RemoteSettings:
    """A DVC remote as its config names it: the URL, and for S3 the endpoint and the AWS profile."""

    name: str
    url: str
    endpointurl: str | None = None
    profile: str | None = None


def remote_settings(root: Path, name: str | None = None) -> RemoteSettings | None:
    """The named remote, else the default one (`core.remote`), as DVC's merged config sees it; None if unset."""
    with open_repo(root) as repo:
        config = repo.config
        name = name or config["core"].get("remote")
        section = config["remote"].get(name) if name else None
        if section is None:
            return None
        return RemoteSettings(name, section["url"], section.get("endpointurl"), section.get("profile"))


def head_bucket(root: Path, name: str) -> None:
    """Ask the remote's bucket for itself with the current credentials; raises what the S3 client raised."""
    with open_repo(root) as repo:
        odb = repo.cloud.get_remote(name)
        # HeadBucket through fsspec: `exists()` would turn a refused connection into False.
        odb.fs.fs.info(odb.path.split("/", 1)[0])


def push(root: Path, revs: list[str] | None = None) -> int:
    """`dvc push` of the workspace's outputs (or those of `revs`); the number of files pushed."""
    with open_repo(root) as repo:
        pushed: int = repo.push(revs=revs) if revs else repo.push()
        return pushed

"""The DVC remote (S3) of a repository -> its settings, a reachability check, and `dvc push` with clear errors.

Credentials never live in the repository: boto3 finds them in the environment (`AWS_ACCESS_KEY_ID`, ...,
`AWS_PROFILE`), in the remote's `profile` (`.dvc/config.local`), or in the instance's IAM role.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visapp.errors import VisError

SETUP_HINT = "set it with `dvc remote add -d storage s3://BUCKET/PREFIX` (README, 'Model versions and the S3 remote')"


@dataclass(frozen=True)
class RemoteInfo:
    """Where a repository's default DVC remote points: enough to name it in a message."""

    name: str
    url: str
    endpointurl: str | None = None
    profile: str | None = None

    def __str__(self) -> str:
        where = f" via {self.endpointurl}" if self.endpointurl else ""
        return f"DVC remote '{self.name}' ({self.url}{where})"


def _open_repo(root: str | Path) -> Any:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(str(root))
    except NotDvcRepoError:
        raise VisError(f"{Path(root).resolve()} is not a DVC repository: run visapp from the project root") from None


def remote_info(root: str | Path = ".", name: str | None = None) -> RemoteInfo:
    """The named remote, else the default one (`core.remote`), as DVC's merged config sees it."""
    with _open_repo(root) as repo:
        config = repo.config
        name = name or config["core"].get("remote")
        if not name:
            raise VisError(f"no default DVC remote in {Path(root).resolve()}: {SETUP_HINT}")
        section = config["remote"].get(name)
        if section is None:
            raise VisError(f"DVC remote '{name}' is not configured: {SETUP_HINT}")
        return RemoteInfo(name, section["url"], section.get("endpointurl"), section.get("profile"))


def explain(exc: BaseException, remote: RemoteInfo) -> str:
    """A one-line reason with the fix, for the errors an S3 remote gives in practice."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    kind = type(exc).__name__
    if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ClientConnectorError"):
        fix = (
            f"is the S3 server at {remote.endpointurl} running? (`endpointurl` in .dvc/config.local)"
            if remote.endpointurl
            else "check the network and the bucket's region"
        )
        return f"cannot reach {remote}: {text}; {fix}"
    if kind in ("NoCredentialsError", "PartialCredentialsError", "ProfileNotFound", "TokenRetrievalError"):
        return (
            f"no usable AWS credentials for {remote}: {text}; set AWS_PROFILE, or "
            f"`dvc remote modify --local {remote.name} profile NAME`, or run where an IAM role is attached"
        )
    if "NoSuchBucket" in text or "does not exist" in text:
        return f"the bucket of {remote} does not exist: create it, or fix it: `dvc remote modify {remote.name} url`"
    if kind == "PermissionError" or "AccessDenied" in text or "Forbidden" in text or "403" in text:
        return f"access denied by {remote}: {text}; the IAM policy needs s3:ListBucket, s3:GetObject, s3:PutObject"
    return f"{remote} failed: {text}"


def _root_cause(exc: BaseException) -> BaseException:
    """DVC wraps the S3 error; the innermost cause names what went wrong."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def check_remote(root: str | Path = ".") -> RemoteInfo:
    """Raise `VisError` saying why, unless the default remote's bucket answers with these credentials."""
    remote = remote_info(root)
    with _open_repo(root) as repo:
        try:
            odb = repo.cloud.get_remote(remote.name)
            # HeadBucket through fsspec: `exists()` would turn a refused connection into False.
            odb.fs.fs.info(odb.path.split("/", 1)[0])
        except FileNotFoundError:
            raise VisError(
                f"the bucket of {remote} does not exist: create it, or fix the url with "
                f"`dvc remote modify {remote.name} url s3://BUCKET/PREFIX`"
            ) from None
        except Exception as exc:  # boto, aiohttp and DVC errors alike: say which, and how to fix it
            raise VisError(explain(_root_cause(exc), remote)) from None
    return remote


def push(root: str | Path = ".", revs: list[str] | None = None) -> int:
    """`dvc push` of the workspace's outputs (or those of `revs`) to the default remote; returns files pushed."""
    remote = check_remote(root)
    with _open_repo(root) as repo:
        try:
            return repo.push(revs=revs) if revs else repo.push()
        except Exception as exc:
            raise VisError(explain(_root_cause(exc), remote)) from None

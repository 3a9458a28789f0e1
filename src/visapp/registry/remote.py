"""The DVC remote (S3) of a repository -> its settings, a reachability check, and `dvc push` with clear errors.

Credentials never live in the repository: boto3 finds them in the environment (`AWS_ACCESS_KEY_ID`, ...,
`AWS_PROFILE`), in the remote's `profile` (`.dvc/config.local`), or in the instance's IAM role.
"""

from __future__ import annotations

from pathlib import Path

from visapp.errors import VisError
from visapp.integrations import dvc
from visapp.integrations.dvc import RemoteSettings

SETUP_HINT = "set it with `dvc remote add -d storage s3://BUCKET/dvc` (README, 'Model versions and the S3 remote')"
# The url .dvc/config ships with: a remote nobody has pointed at a bucket yet (a fresh clone), not a broken one.
PLACEHOLDER_URL = "s3://vis-artifacts/dvc"


class RemoteNotConfigured(VisError):
    """The default remote is still the placeholder this repository ships with: nothing to reach yet."""


def describe(remote: RemoteSettings) -> str:
    """The remote for a message: its name, URL and endpoint."""
    where = f" via {remote.endpointurl}" if remote.endpointurl else ""
    return f"DVC remote '{remote.name}' ({remote.url}{where})"


def remote_info(root: str | Path = ".", name: str | None = None) -> RemoteSettings:
    """The named remote, else the default one; `VisError` with the set-up command when there is none."""
    found = dvc.remote_settings(Path(root), name)
    if found is None:
        what = f"DVC remote '{name}' is not configured" if name else f"no default DVC remote in {Path(root).resolve()}"
        raise VisError(f"{what}: {SETUP_HINT}")
    return found


def explain(exc: BaseException, remote: RemoteSettings) -> str:
    """A one-line reason with the fix, for the errors an S3 remote gives in practice."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    kind = type(exc).__name__
    if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ClientConnectorError"):
        fix = (
            f"is the S3 server at {remote.endpointurl} running? (`endpointurl` in .dvc/config.local)"
            if remote.endpointurl
            else "check the network and the bucket's region"
        )
        return f"cannot reach {describe(remote)}: {text}; {fix}"
    if kind in ("NoCredentialsError", "PartialCredentialsError", "ProfileNotFound", "TokenRetrievalError"):
        return (
            f"no usable AWS credentials for {describe(remote)}: {text}; set AWS_PROFILE, or "
            f"`dvc remote modify --local {remote.name} profile NAME`, or run where an IAM role is attached"
        )
    if "NoSuchBucket" in text or "does not exist" in text:
        return (
            f"the bucket of {describe(remote)} does not exist: create it, or fix it: "
            f"`dvc remote modify {remote.name} url`"
        )
    if kind == "PermissionError" or "AccessDenied" in text or "Forbidden" in text or "403" in text:
        return (
            f"access denied by {describe(remote)}: {text}; the IAM policy needs s3:ListBucket, s3:GetObject, "
            "s3:PutObject"
        )
    return f"{describe(remote)} failed: {text}"


def _root_cause(exc: BaseException) -> BaseException:
    """DVC wraps the S3 error; the innermost cause names what went wrong."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def check_remote(root: str | Path = ".") -> RemoteSettings:
    """Raise `VisError` saying why, unless the default remote's bucket answers with these credentials.

    Raises:
        RemoteNotConfigured: the remote is still the placeholder of a fresh clone (the message says how to set it).
        VisError: the bucket does not answer: the reason and the fix.
    """
    remote = remote_info(root)
    if remote.url.rstrip("/") == PLACEHOLDER_URL:
        raise RemoteNotConfigured(
            f"{describe(remote)} is the placeholder this repository ships with: point it at your bucket with "
            f"`dvc remote modify {remote.name} url s3://BUCKET/dvc` (README, 'Model versions and the S3 remote')"
        )
    try:
        dvc.head_bucket(Path(root), remote.name)
    except VisError:
        raise
    except FileNotFoundError:
        raise VisError(
            f"the bucket of {describe(remote)} does not exist: create it, or fix the url with "
            f"`dvc remote modify {remote.name} url s3://BUCKET/dvc`"
        ) from None
    except Exception as exc:  # boto, aiohttp and DVC errors alike: say which, and how to fix it
        raise VisError(explain(_root_cause(exc), remote)) from None
    return remote


def push(root: str | Path = ".", revs: list[str] | None = None) -> int:
    """`dvc push` of the workspace's outputs (or those of `revs`) to the default remote; returns files pushed."""
    remote = check_remote(root)
    try:
        return dvc.push(Path(root), revs)
    except VisError:
        raise
    except Exception as exc:
        raise VisError(explain(_root_cause(exc), remote)) from None

"""`visapp doctor`: can this machine (or container) run VIS? One table of checks, each with a verdict.

| verdict | meaning |
| --- | --- |
| `ok` | works |
| `FAIL` | broken: the detail says what to fix; `visapp doctor` exits 1 |
| `warn` | worth knowing: uncommitted changes, a stale pipeline, an optional tracker down, a placeholder remote |
| `skip` | not configured here (no DVC remote, no `VISAPP_STORE_URL`, ...), with the reason |

Every check runs what the library itself runs, never a second implementation: the remote check of `visapp release
--push` (`registry.remote.check_remote`), the tracking check of the train stage (`tracking.check_reachable` on
`tracking.resolve_uri`), the store and queue probes of the service's `/health`, `dvc status`. What doctor passes,
they pass. Each check has a time limit: a server that never answers is a FAIL, not a hang.

The face prints (`visapp.cli`); this module only answers.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from visapp.errors import VisError

if TYPE_CHECKING:
    from visapp.config import Params
    from visapp.service.settings import ServiceSettings

OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "skip"

PACKAGES = ("torch", "torchvision", "ultralytics", "dvc", "mlflow", "opencv-python-headless")
HEADLESS = "opencv-python-headless"
GUI_OPENCV = ("opencv-python", "opencv-contrib-python")  # GUI builds: they need libGL and X libraries
INSTALL_HINT = "run `make install` (or scripts/install.sh PYTHON -e .)"
STORE_ENV, QUEUE_ENV = "VISAPP_STORE_URL", "VISAPP_QUEUE_URL"
TIMEOUT_S = 60.0  # per check: a server that does not answer (a firewall, a wrong host) fails after this
PIPELINE_TIMEOUT_S = 300.0  # `dvc status` hashes a changed dataset: a large one takes a while


@dataclass(frozen=True)
class Check:
    """One row of `visapp doctor`'s table: what was checked, its verdict (ok, FAIL, warn, skip) and the detail."""

    name: str
    verdict: str
    detail: str


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _redact(url: str) -> str:
    """A URL without the password it may carry (redis://:secret@host, https://user:secret@host)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


# ---------------------------------------------------------------- the environment


def package_checks(version: Callable[[str], str | None] = _version) -> list[Check]:
    """Python and the packages VIS stands on, with their versions (from the metadata: nothing is imported)."""
    checks = [Check("python", OK, f"{platform.python_version()} ({sys.executable})")]
    for name in PACKAGES:
        found = version(name)
        checks.append(Check(name, OK, found) if found else Check(name, FAIL, f"not installed: {INSTALL_HINT}"))
    return checks


def _gui_backend() -> str:
    """The GUI line of the loaded cv2's build information: `NONE` for a headless build."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def opencv_check(version: Callable[[str], str | None] = _version) -> Check:
    """Only the headless OpenCV: no GUI wheel installed, and the cv2 that imports is built without a GUI.

    A GUI wheel (`opencv-python`, which Ultralytics requires) needs libGL, absent from servers and slim images;
    it and the headless wheel install into the same `cv2/` folder, so the one installed last wins, file by file.
    """
    name = "opencv headless"
    headless = version(HEADLESS)
    reinstall = f"pip install --force-reinstall --no-deps {HEADLESS}=={headless or '<version>'}"
    gui = [f"{dist} {version(dist)}" for dist in GUI_OPENCV if version(dist)]
    if gui:
        remove = " ".join(dist.split()[0] for dist in gui)
        return Check(
            name,
            FAIL,
            f"{', '.join(gui)} installed (the GUI build, which needs libGL): `pip uninstall -y {remove}` then "
            f"`{reinstall}` (scripts/install.sh does both)",
        )
    if headless is None:
        return Check(name, FAIL, f"{HEADLESS} is not installed: {INSTALL_HINT}")
    try:
        import cv2
    except ImportError as exc:
        return Check(name, FAIL, f"cv2 does not import ({exc}): `{reinstall}`")
    backend = _gui_backend()
    if backend != "NONE":
        return Check(name, FAIL, f"the cv2 that imports has a GUI ({backend}), a GUI wheel's files: `{reinstall}`")
    return Check(name, OK, f"cv2 {cv2.__version__}, no GUI (needs no libGL)")


def cuda_check(require_gpu: bool = False) -> Check:
    """The CUDA devices torch sees. None is fine (training runs on the CPU) unless `require_gpu`."""
    from visapp.integrations import cuda

    try:
        devices, build = cuda.devices(), cuda.torch_build()
    except ImportError as exc:
        return Check("cuda", FAIL, f"torch does not import ({exc}): {INSTALL_HINT}")
    if devices:
        shown = "; ".join(f"cuda:{i} {name}, {memory / 2**30:.1f} GiB" for i, (name, memory) in enumerate(devices))
        return Check("cuda", OK, f"{shown} (torch built for CUDA {build})")
    what = f"torch built for CUDA {build}" if build else "a CPU-only torch"
    if not require_gpu:
        return Check("cuda", OK, f"none: CPU ({what})")
    return Check("cuda", FAIL, f"no CUDA device, and --require-gpu: {cuda.why_none()}")


# ---------------------------------------------------------------- the project


def _params(root: Path) -> Params:
    """The params that apply in `root` (params.yaml, else conf/'s composition), checked."""
    from visapp.composition import applicable_params

    return applicable_params(root)


def params_check(root: Path) -> Check:
    """params.yaml valid and composed from conf/ (what the pipeline's first stage checks)."""
    from visapp import composition
    from visapp.config import PARAMS_FILE

    if not (root / PARAMS_FILE).is_file():
        _params(root)  # conf/ composes to valid params (raises otherwise)
        return Check("params", SKIP, f"no {PARAMS_FILE} here: conf/'s defaults are valid")
    _params(root)
    differences = composition.drift(root / PARAMS_FILE)
    if differences:
        return Check(
            "params",
            WARN,
            f"{PARAMS_FILE} is not what conf/ composes to ({composition.describe(differences, 3)}): the params "
            "stage stops `dvc repro`; `make params` (conf/ wins) or `visapp params sync` (params.yaml wins)",
        )
    return Check("params", OK, f"{PARAMS_FILE} valid, composed from {composition.conf_dir()}")


def dvc_remote_check(root: Path) -> Check:
    """The default DVC remote answers with the current credentials (`visapp release --push` asks the same)."""
    from visapp.integrations import dvc
    from visapp.registry import remote

    if not (root / ".dvc").is_dir():
        return Check("dvc remote", SKIP, "not a DVC repository here (run from the project root)")
    if dvc.remote_settings(root) is None:
        return Check("dvc remote", SKIP, f"no default remote: {remote.SETUP_HINT}")
    try:
        found = remote.check_remote(root)  # VisError: the reason and the fix
    except remote.RemoteNotConfigured as exc:
        return Check("dvc remote", WARN, str(exc))  # a fresh clone: nothing is broken, something is to be set
    return Check("dvc remote", OK, f"{remote.describe(found)} answers with these credentials")


def tracking_check(root: Path, environ: Mapping[str, str]) -> Check:
    """The MLflow tracking URI the train stage would use, and its server reachable (as the stage checks it)."""
    from visapp.training import tracking

    config = _params(root).tracking
    uri = tracking.resolve_uri(config, environ)
    if not uri.lower().startswith(("http://", "https://")):
        return Check("tracking", OK, f"local store {uri} (no server to reach)")
    try:
        tracking.check_reachable(uri)
    except VisError as exc:
        return Check("tracking", FAIL if config.required else WARN, str(exc))
    return Check("tracking", OK, f"{_redact(uri)} answers /health")


# ---------------------------------------------------------------- the service


def _service_settings(environ: Mapping[str, str]) -> ServiceSettings:
    from visapp.service.settings import ServiceSettings

    return ServiceSettings.from_env(environ)


def store_check(environ: Mapping[str, str]) -> Check:
    """The service's job store (`VISAPP_STORE_URL`) can be listed: the probe of the service's /health."""
    from visapp.service.store import JobStore

    if not environ.get(STORE_ENV):
        return Check("job store", SKIP, f"{STORE_ENV} not set (the service would use the folder .visapp/jobs here)")
    url = _service_settings(environ).store_url
    try:
        return Check("job store", OK, JobStore(url).check())
    except Exception as exc:  # fsspec, s3fs, botocore and OS errors alike
        fix = (
            "check the bucket, the credentials (AWS_PROFILE, the instance role) and AWS_ENDPOINT_URL_S3"
            if url.startswith("s3://")
            else "the folder must be one this user can create and write"
        )
        return Check("job store", FAIL, f"{STORE_ENV} {_redact(url)}: {type(exc).__name__}: {exc}; {fix}")


def queue_check(environ: Mapping[str, str]) -> Check:
    """The service's queue (`VISAPP_QUEUE_URL`) answers: Redis, or a SQLite file (the probe of /health)."""
    from visapp.service import queue

    url = environ.get(QUEUE_ENV)
    if not url:
        return Check("job queue", SKIP, f"{QUEUE_ENV} not set (the service would use SQLite at .visapp/queue.db here)")
    try:
        return Check("job queue", OK, queue.health(queue.make_huey(_service_settings(environ))))
    except VisError:
        raise
    except Exception as exc:  # redis.ConnectionError, sqlite3 errors
        fix = (
            "is Redis running there, and does it accept this client? check host, port, password and database"
            if url.startswith(("redis://", "rediss://", "unix://"))
            else "the file's folder must be writable by this user"
        )
        return Check("job queue", FAIL, f"{QUEUE_ENV} {_redact(url)}: {type(exc).__name__}: {exc}; {fix}")


# ---------------------------------------------------------------- the workspace


def git_check(root: Path) -> Check:
    """git present; the workspace's commit, and whether it has uncommitted changes (a training would say +changes)."""
    from visapp.integrations import git

    if shutil.which("git") is None:
        return Check("git", FAIL, "git is not on PATH: install it (DVC, the registry and the train stage run it)")
    if not git.is_repository(root):
        return Check("git", SKIP, "not a git repository here (to run the pipeline in the image, mount a checkout)")
    head = git.head_commit(root)
    if head is None:
        return Check("git", WARN, "no commit yet: commit the project before training (lineage names the commit)")
    at = f"{git.branch(root) or 'detached'}@{head[:7]}"
    changed = git.changed_files(root)
    if changed:
        shown = ", ".join(line[3:] for line in changed[:3]) + (", ..." if len(changed) > 3 else "")
        return Check(
            "git",
            WARN,
            f"{len(changed)} uncommitted change(s) at {at} ({shown}): a training now is recorded as {at}+changes; "
            "commit first for a clean lineage",
        )
    return Check("git", OK, f"clean at {at}")


def _describe_stale(name: str, changes: list[Any]) -> str:
    """`validate (data/raw modified)` from one entry of `dvc status`."""
    parts: list[str] = []
    for change in changes:
        if isinstance(change, Mapping):
            for kind, paths in change.items():
                if isinstance(paths, Mapping):
                    parts += [f"{path} {state}" for path, state in paths.items()]
                else:
                    parts.append(str(kind))
        else:
            parts.append(str(change))
    more = f" and {len(parts) - 2} more" if len(parts) > 2 else ""
    return f"{name} ({', '.join(parts[:2])}{more})" if parts else name


def pipeline_check(root: Path) -> Check:
    """`dvc status`: up to date, or which stages are stale and why (a warning: `dvc repro` reruns them)."""
    from visapp.integrations import dvc

    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return Check("pipeline", SKIP, "no DVC pipeline here (run from the project root)")
    try:
        status = dvc.pipeline_status(root)
    except VisError:
        raise
    except Exception as exc:  # DVC's own errors: a broken dvc.yaml, a missing dependency, ...
        return Check("pipeline", FAIL, f"`dvc status` failed: {type(exc).__name__}: {exc}")
    if not status:
        return Check("pipeline", OK, "up to date (`dvc status`)")
    stale = [_describe_stale(name, changes) for name, changes in status.items()]
    more = f"; {len(stale) - 3} more" if len(stale) > 3 else ""
    return Check("pipeline", WARN, f"stale: {'; '.join(stale[:3])}{more}: `dvc repro` reruns what changed")


# ---------------------------------------------------------------- all of them


def _bounded(name: str, probe: Callable[[], Check | list[Check]], timeout: float) -> list[Check]:
    """Run one probe with a time limit; an exception is a FAIL with its message (a `VisError` says the fix)."""
    result: list[Check] = []

    def target() -> None:
        try:
            found = probe()
            result.extend(found if isinstance(found, list) else [found])
        except VisError as exc:
            result.append(Check(name, FAIL, str(exc)))
        except Exception as exc:
            result.append(Check(name, FAIL, f"{type(exc).__name__}: {exc}"))

    thread = threading.Thread(target=target, name=f"doctor-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return [Check(name, FAIL, f"no answer within {timeout:g} s: a server that does not answer (firewall, host?)")]
    return result


def run_checks(
    root: str | Path = ".", require_gpu: bool = False, environ: Mapping[str, str] | None = None
) -> list[Check]:
    """Every check, in order: the environment, the project, the service, the workspace."""
    root = Path(root)
    env = os.environ if environ is None else environ
    probes: list[tuple[str, Callable[[], Check | list[Check]], float]] = [
        ("packages", package_checks, TIMEOUT_S),
        ("opencv headless", opencv_check, TIMEOUT_S),
        ("cuda", lambda: cuda_check(require_gpu), TIMEOUT_S),
        ("params", lambda: params_check(root), TIMEOUT_S),
        ("dvc remote", lambda: dvc_remote_check(root), TIMEOUT_S),
        ("tracking", lambda: tracking_check(root, env), TIMEOUT_S),
        ("job store", lambda: store_check(env), TIMEOUT_S),
        ("job queue", lambda: queue_check(env), TIMEOUT_S),
        ("git", lambda: git_check(root), TIMEOUT_S),
        ("pipeline", lambda: pipeline_check(root), PIPELINE_TIMEOUT_S),
    ]
    return [check for name, probe, timeout in probes for check in _bounded(name, probe, timeout)]


def failed(checks: list[Check]) -> bool:
    """Whether any check failed (`visapp doctor` then exits 1)."""
    return any(check.verdict == FAIL for check in checks)


def format_table(checks: list[Check]) -> str:
    """One line per check (name, verdict, detail), then the counts."""
    width = max([len("check"), *(len(check.name) for check in checks)])
    lines = [f"{'check':<{width}}  verdict  detail"]
    lines += [f"{check.name:<{width}}  {check.verdict:<7}  {check.detail}" for check in checks]
    counts = {verdict: sum(1 for check in checks if check.verdict == verdict) for verdict in (OK, FAIL, WARN, SKIP)}
    lines.append(", ".join(f"{n} {verdict}" for verdict, n in counts.items() if n))
    return "\n".join(lines)

"""Faults in the data stages: killed mid-way (SIGKILL), a full disk, an unwritable output folder.

A stage killed at any point leaves no output that a later `dvc repro` would take as finished: the next
`dvc repro` reruns it, ends with `dvc status` clean, and writes outputs byte-identical to an uninterrupted
run. A full disk or an unwritable output folder gives one line (exit 2, no traceback), leaves no temporary
file behind and the previous output as it was.

The kill lands at the worst moment, deterministically: a `sitecustomize` that the test puts on the stages'
PYTHONPATH (the project's code has no hook) makes the stage stop itself just before it renames a finished
temporary output into place; the test then kills it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import tree_digest
from factory import Obj, write_sample
from visapp.fsio import write_text

pytestmark = pytest.mark.integration

SAMPLE_IMAGES = 40
DATA_STAGES = ("validate", "convert", "metadata")
OUTPUTS = ("data/validated/manifest.jsonl", "data/validated/report.json", "data/yolo", "data/metadata")


def temporaries(root: Path) -> list[str]:
    """Temporary outputs (visapp.fsio names them `.NAME.PID.*.tmp`) anywhere under root."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".*.tmp"))


@pytest.fixture
def sample_project(make_project):
    """A project whose data/raw is the built-in sample, `dvc add`ed and committed."""
    project = make_project()
    project.run("visapp", "sample", "--out", "data/raw", "--images", str(SAMPLE_IMAGES))
    project.run("dvc", "add", "-q", "data/raw")
    project.commit("sample data")
    return project


# ---------------------------------------------------------------- killing a stage at a chosen moment

# Put on the stages' PYTHONPATH by the test (nothing in the project's code): a stage process stops itself
# (SIGSTOP) just before it renames a finished temporary into place as VIS_TEST_STOP_BEFORE (an output's name),
# the moment where a kill would hurt most; the test then kills it. Waiting for a temporary file to appear
# and killing then is a race: a busy machine lets a short write slip through.
_STOP_HOOK = """
import os, pathlib, signal, sys

_NAME = os.environ.get("VIS_TEST_STOP_BEFORE")


def _stopping(rename):
    def wrapper(self, target):
        if pathlib.Path(target).name == _NAME and sys.argv[0].startswith("stages/"):
            os.kill(os.getpid(), signal.SIGSTOP)
        return rename(self, target)

    return wrapper


if _NAME:
    pathlib.Path.rename = _stopping(pathlib.Path.rename)
    pathlib.Path.replace = _stopping(pathlib.Path.replace)
"""


def start_repro(project, log: Path, stop_before: str, hook_dir: Path) -> subprocess.Popen:
    """`dvc repro metadata` in its own process group; the stage writing `stop_before` stops before its rename."""
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(_STOP_HOOK)
    path = os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "VIS_TEST_STOP_BEFORE": stop_before}
    with log.open("wb") as out:
        return subprocess.Popen(
            ["dvc", "repro", "metadata"],
            cwd=project.root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stopped_stage(proc: subprocess.Popen, script: str, timeout: float = 300) -> psutil.Process:
    """The process running `stages/<script>` under `proc`, once it has stopped itself (see _STOP_HOOK)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dvc repro ended (exit {proc.returncode}) before stages/{script} stopped"
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                cmdline = child.cmdline()  # the python, not the `sh -c "python stages/..."` DVC may start it from
                if cmdline[-1:] == [f"stages/{script}"] and child.status() == psutil.STATUS_STOPPED:
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    raise TimeoutError(f"stages/{script} did not reach its rename within {timeout} s")


def changed_stages(project) -> set[str]:
    """The data stages `dvc status` finds changed (train, which may follow them, is left out)."""
    import json

    return set(json.loads(project.run("dvc", "status", "--json", "--with-deps", "metadata").stdout))


@pytest.mark.integration
def test_killed_validate_and_convert_rerun_and_end_clean_with_identical_outputs(sample_project, tmp_path):
    root = sample_project.root
    validated, data = root / "data/validated", root / "data"

    # 1. validate killed with its manifest written but not in place, together with `dvc repro` itself (as a
    #    lost machine would be).
    proc = start_repro(sample_project, tmp_path / "kill-validate.log", "manifest.jsonl", tmp_path / "hook")
    stopped_stage(proc, "validate.py")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (validated / "manifest.jsonl").exists(), "a killed validate left a manifest behind"
    assert temporaries(validated), "the kill did not land mid-write"
    assert "validate" in changed_stages(sample_project)

    # 2. The next repro reruns validate; convert killed before data/yolo is in place (only the stage process:
    #    dvc sees it fail).
    proc = start_repro(sample_project, tmp_path / "kill-convert.log", "yolo", tmp_path / "hook")
    stopped_stage(proc, "convert.py").kill()
    assert proc.wait(timeout=120) != 0, "dvc repro reported success for a killed stage"
    log = (tmp_path / "kill-convert.log").read_text()
    assert "Running stage 'validate'" in log, log
    assert "validate" in yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert not (data / "yolo").exists(), "a killed convert left data/yolo behind"
    assert any(data.glob(".yolo.*.tmp")), "the kill did not land mid-write"
    assert changed_stages(sample_project) == {"convert", "metadata"}

    # 3. The next repro reruns convert (not validate, which finished) and the pipeline ends clean.
    rerun = sample_project.run("dvc", "repro", "metadata")
    assert "Running stage 'convert'" in rerun.stdout and "Running stage 'metadata'" in rerun.stdout
    assert "Running stage 'validate'" not in rerun.stdout
    assert changed_stages(sample_project) == set()
    assert temporaries(data) == [], "the killed stages' temporaries were not swept"
    untracked = sample_project.run("git", "status", "--porcelain", "--untracked-files=all").stdout
    assert ".tmp" not in untracked
    recovered = tree_digest(root, OUTPUTS)

    # 4. Byte-identical to an uninterrupted run.
    forced = sample_project.run("dvc", "repro", "-f", "metadata")
    for stage in DATA_STAGES:
        assert f"Running stage '{stage}'" in forced.stdout
    assert tree_digest(root, OUTPUTS) == recovered
    assert changed_stages(sample_project) == set()


def test_atomic_writes_sweep_the_temporaries_of_killed_writers_only(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".out.json.{dead.pid}.abc.tmp"
    live = tmp_path / f".out.json.{os.getpid()}.def.tmp"  # another write of this process, in progress
    foreign = [tmp_path / ".out.json.ingest.tmp", tmp_path / f".other.json.{dead.pid}.x.tmp"]
    for folder in (stale, live, *foreign):
        (folder / "out").mkdir(parents=True)
    write_text(tmp_path / "out.json", "{}\n")
    assert not stale.exists()
    assert live.exists() and all(f.exists() for f in foreign)
    assert (tmp_path / "out.json").read_text() == "{}\n"


# ---------------------------------------------------------------- full disk, unwritable folder


def _mount_prefix(scratch: Path) -> list[str] | None:
    """A command prefix for a private mount namespace where tmpfs and read-only bind mounts can be made
    (as root, or in an unprivileged user namespace); None where the system allows neither."""
    if shutil.which("unshare") is None:
        return None
    probe = scratch / "mount-probe"
    probe.mkdir()
    check = f"mount -t tmpfs -o size=64k tmpfs {probe} && mount -o remount,bind,ro {probe}"
    for prefix in (["unshare", "--mount", "--map-root-user"], ["unshare", "--mount"]):
        if subprocess.run([*prefix, "sh", "-c", check], capture_output=True).returncode == 0:
            return prefix
    return None


@pytest.fixture
def staged_outputs(make_project):
    """A project whose three data stages have written their outputs under out/ (not DVC-run: stage scripts)."""
    project = make_project()
    project.run("visapp", "sample", "--out", "data/raw", "--images", "24")
    project.set_params("paths.validated=out/validated", "paths.yolo=out/yolo", "paths.metadata=out/metadata")
    for stage in DATA_STAGES:
        project.run(sys.executable, f"stages/{stage}.py")
    return project


def assert_one_line_error(err: str, rc: int, stage: str, reason: str) -> None:
    assert rc == 2, f"{stage} exited {rc}: {err}"
    assert "Traceback" not in err, f"{stage} printed a traceback:\n{err}"
    errors = [line for line in err.strip().splitlines() if line.startswith("error: ")]  # beside progress lines
    assert len(errors) == 1 and errors[0].startswith("error: cannot write out/"), f"{stage}: {err}"
    assert reason in errors[0], f"{stage}: {err}"


# Run inside the namespace; the tmpfs and the bind mount vanish with it. {setup} mounts over out/.
_FAULT_SCRIPT = """
set -e
{setup}
for stage in validate convert metadata; do
  set +e
  "{python}" stages/$stage.py > logs/$stage.out 2> logs/$stage.err
  echo $? > logs/$stage.rc
  set -e
done
rm -f out/filler
cp -a out/. after/
"""
FAULTS = {
    # A tmpfs holding a copy of the outputs, filled to the last byte.
    "full": (
        "cp -a out/. stash/ && mount -t tmpfs -o size=32m tmpfs out && cp -a stash/. out/\n"
        "head -c 64m /dev/zero > out/filler 2>/dev/null || true",
        "no space left on the device",
    ),
    "read-only": ("mount --bind out out && mount -o remount,bind,ro out", "the file system is read-only"),
}


@pytest.mark.integration
def test_a_full_disk_or_read_only_output_folder_fails_each_stage_cleanly_keeping_old_outputs(staged_outputs, tmp_path):
    prefix = _mount_prefix(tmp_path)
    if prefix is None:
        pytest.skip("no mount namespace here (unshare refused): see the file-size-limit test instead")
    root = staged_outputs.root
    old = tree_digest(root / "out")
    for fault, (setup, reason) in FAULTS.items():
        for folder in ("logs", "after", "stash"):
            shutil.rmtree(root / folder, ignore_errors=True)
            (root / folder).mkdir()
        script = _FAULT_SCRIPT.format(setup=setup, python=sys.executable)
        staged_outputs.run(*prefix, "sh", "-c", script)
        for stage in DATA_STAGES:
            err = (root / "logs" / f"{stage}.err").read_text()
            rc = int((root / "logs" / f"{stage}.rc").read_text())
            assert_one_line_error(err, rc, f"{stage} ({fault})", reason)
        assert tree_digest(root / "after") == old, f"{fault}: an old output changed"
        assert temporaries(root / "after") == [], f"{fault}: a temporary was left behind"
    assert tree_digest(root / "out") == old


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before exec: Python ignores SIGXFSZ, so a write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.integration
def test_a_file_size_limit_fails_convert_with_one_line_keeping_old_labels(staged_outputs):
    """The disk-full path where no mount namespace is allowed: RLIMIT_FSIZE makes a write fail (EFBIG)."""
    root = staged_outputs.root
    old = tree_digest(root / "out")
    proc = subprocess.run(
        [sys.executable, "stages/convert.py"],
        cwd=root,
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size(64),  # smaller than a label file with 3 boxes
    )
    assert_one_line_error(proc.stderr, proc.returncode, "convert", "file too large")
    assert tree_digest(root / "out") == old
    assert temporaries(root / "out") == []


@pytest.mark.integration
def test_an_output_folder_blocked_by_a_file_fails_validate_with_one_line(make_project):
    project = make_project()
    project.run("visapp", "sample", "--out", "data/raw", "--images", "4")
    (project.root / "out").write_text("not a folder\n")
    project.set_params("paths.validated=out/validated")
    proc = project.run(sys.executable, "stages/validate.py", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: cannot create the folder out/validated: a file stands where the folder should be; "
                      "move or remove that file"]  # fmt: skip


@pytest.mark.integration
def test_validate_fails_when_nothing_is_accepted_even_with_on_error_skip(make_project):
    project = make_project()
    for stem in ("a", "b"):
        write_sample(project.root / "data" / "raw", stem, objects=[Obj("zebra")])
    project.set_params("data.on_error=skip")
    proc = project.run(sys.executable, "stages/validate.py", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "nothing to train on" in proc.stderr and "class_unknown (2)" in proc.stderr


@pytest.mark.integration
def test_a_file_name_that_is_not_utf8_is_reported_by_the_stage_not_a_crash(make_project):
    """unzip leaves a Windows archive's names in their code page; the reuse store keeps them as they are."""
    project = make_project()
    raw = project.root / "data" / "raw"
    for stem in ("a", "b"):
        write_sample(raw, stem)
    for folder, suffix in (("JPEGImages", "jpg"), ("Annotations", "xml")):
        (raw / folder / f"b.{suffix}").rename(raw / folder / os.fsdecode(b"Se\xf1al." + suffix.encode()))
    time.sleep(2.1)  # settled: the store keeps the files' digests, by their names
    for _ in range(2):  # the second run reads the store the first one wrote
        proc = project.run(sys.executable, "stages/validate.py", check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        report = json.loads((project.root / "data" / "validated" / "report.json").read_text(encoding="utf-8"))
        assert report["by_code"]["name_not_utf8"] == 2 and report["accepted"] == 1
        assert "JPEGImages/Se\\xf1al.jpg" in proc.stderr and "convmv" in proc.stderr

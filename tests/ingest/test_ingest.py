"""visapp ingest: a ZIP or folder into data/raw, swapped in whole, recorded by DVC; attacks, faults and kills leave
data/raw and data/raw.dvc as they were."""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from test_archive import ATTACKS, LITTER, NESTED, TAR_ATTACKS, XML, write_tar

from conftest import VENV_BIN, run
from factory import write_tree, write_zip
from visapp.errors import VisError
from visapp.ingest.ingest import ingest, recover

pytestmark = pytest.mark.integration

VISAPP = str(VENV_BIN / "visapp")


# ---------------------------------------------------------------- helpers


def tree_hash(folder: Path) -> str:
    """SHA-256 over every path under folder (hidden ones too) and the bytes of every file."""
    digest = hashlib.sha256()
    if not folder.exists():
        return "absent"
    for path in sorted(folder.rglob("*")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        if path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def state(root: Path) -> tuple[str, str]:
    """(tree hash of data/raw, text of data/raw.dvc): what must survive a failed or killed ingest."""
    dvc_file = root / "data/raw.dvc"
    return tree_hash(root / "data/raw"), dvc_file.read_text() if dvc_file.exists() else "absent"


def voc_files(n: int, prefix: str = "", seed: int = 0) -> dict[str, bytes]:
    """A synthetic VOC dataset (tiny distinct 'images' and XMLs): fast to build in thousands."""
    files = {}
    for i in range(n):
        stem = f"{prefix}{i:06d}"
        files[f"Annotations/{stem}.xml"] = (
            f"<annotation><filename>{stem}.jpg</filename><size><width>8</width><height>8</height></size>"
            f"<object><name>circle</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
            f"</bndbox></object><!-- {seed} --></annotation>"
        ).encode()
        files[f"JPEGImages/{stem}.jpg"] = b"\xff\xd8\xff\xe0" + f"{seed}-{i}".encode() * 20 + b"\xff\xd9"
    return files


def new_repo(root: Path, files: dict[str, bytes] | None = None) -> Path:
    """A git + DVC repository whose data/raw is DVC-tracked and committed."""
    root.mkdir(parents=True)
    run(["git", "init", "-q", "-b", "main"], root)
    run(["dvc", "init", "-q"], root)
    write_tree(root / "data/raw", files if files is not None else voc_files(5))
    run(["dvc", "add", "-q", "data/raw"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "data"], root)
    return root


def dvc_in_sync(root: Path) -> bool:
    """data/raw.dvc describes data/raw exactly (DVC hashes the folder again to say so)."""
    proc = run(["dvc", "status", "--json", "data/raw.dvc"], root)
    return json.loads(proc.stdout or "{}") == {}


def leftovers(root: Path) -> list[str]:
    hidden = [p.name for p in (root / "data").iterdir() if p.name.startswith(".") and p.name != ".gitignore"]
    journal = root / ".dvc/tmp/visapp-ingest.json"
    return hidden + (["journal"] if journal.exists() else [])


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository for the tests that must leave it as it was (refusals)."""
    return new_repo(tmp_path_factory.mktemp("shared") / "repo")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return new_repo(tmp_path / "repo")


# ---------------------------------------------------------------- attacks leave data/raw untouched


@pytest.mark.parametrize(
    "attack", [*(f"zip:{name}" for name in sorted(ATTACKS)), *(f"tar:{name}" for name in sorted(TAR_ATTACKS))]
)
def test_archive_attack_is_refused_and_data_raw_untouched(attack: str, shared_repo: Path, tmp_path: Path):
    kind, name = attack.split(":")
    builder, code, words, limits = (ATTACKS if kind == "zip" else TAR_ATTACKS)[name]
    archive = builder(tmp_path)
    before, data_before = state(shared_repo), tree_hash(shared_repo / "data")
    outside_before = sorted(p.name for p in tmp_path.iterdir())

    with pytest.raises(VisError) as caught:
        ingest(archive, shared_repo / "data/raw", limits=limits)

    assert getattr(caught.value, "code", None) == code
    assert words.lower() in str(caught.value).lower()
    assert state(shared_repo) == before
    assert tree_hash(shared_repo / "data") == data_before  # no staging folder left beside data/raw either
    assert sorted(p.name for p in tmp_path.iterdir()) == outside_before
    assert not (shared_repo / "evil.txt").exists() and not (shared_repo.parent / "evil.txt").exists()


def test_source_without_voc_is_refused(shared_repo: Path, tmp_path: Path):
    archive = write_zip(tmp_path / "notes.zip", {"notes/readme.txt": b"hello"})
    before = tree_hash(shared_repo / "data")
    with pytest.raises(VisError, match=r"no VOC dataset in .*notes\.zip"):
        ingest(archive, shared_repo / "data/raw")
    assert tree_hash(shared_repo / "data") == before


def test_cli_refusal_is_one_line_without_traceback(shared_repo: Path, tmp_path: Path):
    archive = ATTACKS["traversal"][0](tmp_path)
    proc = run([VISAPP, "ingest", str(archive)], shared_repo, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "'../../evil.txt'" in proc.stderr


# ---------------------------------------------------------------- ingesting


@pytest.mark.integration
def test_replace_from_zip_under_a_top_folder(repo: Path, tmp_path: Path):
    files = voc_files(7, seed=1)
    archive = write_zip(tmp_path / "export.zip", {**{f"MyExport/{k}": v for k, v in files.items()}, "README.txt": b"x"})

    result = ingest(archive, repo / "data/raw", name="batch 2")

    assert tree_hash(repo / "data/raw") == tree_hash(write_tree(tmp_path / "expected", files))
    assert (result.images, result.annotations, result.nfiles) == (7, 7, 14)
    assert result.ignored == ["README.txt"]
    out = (repo / "data/raw.dvc").read_text()
    assert f"md5: {result.md5}.dir" in out and "desc: batch 2" in out
    assert "/raw" in (repo / "data/.gitignore").read_text().splitlines()
    assert dvc_in_sync(repo)
    assert leftovers(repo) == []
    assert f"new dataset version {result.md5} (batch 2)" in str(result)
    assert "dataset folder of the source: 'MyExport/'" in str(result)


@pytest.mark.integration
def test_cli_ingest_of_a_flat_folder_prints_the_version(repo: Path, tmp_path: Path):
    src = tmp_path / "flat" / "shots"
    write_tree(src, {"a.xml": XML, "a.jpg": b"\xff\xd8a\xff\xd9", "sub/b.xml": XML, "sub/b.png": b"\x89PNG"})
    proc = run([VISAPP, "ingest", str(src.parent)], repo)
    assert sorted(p.relative_to(repo / "data/raw").as_posix() for p in (repo / "data/raw").rglob("*.*")) == [
        "a.jpg",
        "a.xml",
        "sub/b.png",
        "sub/b.xml",
    ]
    md5 = (repo / "data/raw.dvc").read_text().split("md5: ")[1].split(".dir")[0]
    assert f"data/raw: new dataset version {md5}" in proc.stdout
    assert "2 images, 2 annotations, 4 files" in proc.stdout
    assert "dataset folder of the source: 'shots/'" in proc.stdout
    assert dvc_in_sync(repo)


@pytest.mark.integration
def test_append_adds_new_samples_and_accepts_identical_ones(repo: Path, tmp_path: Path):
    old = voc_files(5)
    new = {**voc_files(2), **voc_files(3, prefix="b")}  # two already present (same bytes), three new
    archive = write_zip(tmp_path / "more.zip", {k.replace("JPEGImages/", "images/").lower(): v for k, v in new.items()})

    result = ingest(archive, repo / "data/raw", mode="append")

    expected = write_tree(tmp_path / "expected", {**old, **voc_files(3, prefix="b")})
    assert tree_hash(repo / "data/raw") == tree_hash(expected)  # images/ went into JPEGImages/, annotations/ too
    assert (result.added, result.unchanged) == (6, 4)
    assert (result.images, result.annotations) == (8, 8)
    assert dvc_in_sync(repo)


def test_append_refuses_a_name_with_other_content_and_names_it(shared_repo: Path, tmp_path: Path):
    before, data_before = state(shared_repo), tree_hash(shared_repo / "data")
    clash = {"JPEGImages/000001.jpg": b"\xff\xd8 other bytes \xff\xd9", "Annotations/new.xml": XML}
    with pytest.raises(VisError) as caught:
        ingest(write_tree(tmp_path / "src" / "batch", clash).parent, shared_repo / "data/raw", mode="append")
    message = str(caught.value)
    assert "data/raw/JPEGImages/000001.jpg exists with other content than batch/JPEGImages/000001.jpg" in message
    assert "1 file(s)" in message
    assert state(shared_repo) == before and tree_hash(shared_repo / "data") == data_before
    assert leftovers(shared_repo) == []


def test_append_refuses_a_flat_dataset_into_the_standard_layout(shared_repo: Path, tmp_path: Path):
    before = tree_hash(shared_repo / "data")
    flat = write_tree(tmp_path / "flat", {"x.xml": XML, "x.jpg": b"\xff\xd8x\xff\xd9"})
    with pytest.raises(VisError, match=r"uses the flat layout .*, data/raw uses Annotations/ \+ image folders"):
        ingest(flat, shared_repo / "data/raw", mode="append")
    assert tree_hash(shared_repo / "data") == before


def test_folder_source_with_a_symlink_is_refused(shared_repo: Path, tmp_path: Path):
    src = write_tree(tmp_path / "src", voc_files(2))
    (src / "JPEGImages/link.jpg").symlink_to(shared_repo / "data/raw.dvc")
    before = tree_hash(shared_repo / "data")
    with pytest.raises(VisError, match=r"'JPEGImages/link.jpg' is a symbolic link"):
        ingest(src, shared_repo / "data/raw")
    assert tree_hash(shared_repo / "data") == before


@pytest.mark.integration
def test_folder_names_are_copied_as_unicode_nfc(repo: Path, tmp_path: Path):
    nfd = unicodedata.normalize("NFD", "café")
    src = write_tree(tmp_path / "src", {f"{nfd}.xml": XML, f"{nfd}.jpg": b"\xff\xd8c\xff\xd9"})
    ingest(src, repo / "data/raw", force=True)
    assert sorted(p.name for p in (repo / "data/raw").iterdir()) == [f"{'café'}.jpg", "café.xml"]
    assert (repo / "data/raw/café.jpg").read_bytes() == b"\xff\xd8c\xff\xd9"


@pytest.mark.integration
def test_append_merges_imagesets_lists(repo: Path, tmp_path: Path):
    write_tree(repo / "data/raw", {"ImageSets/Main/train.txt": b"000000\n000001\n"})
    run(["dvc", "add", "-q", "data/raw"], repo)
    src = write_tree(tmp_path / "src", {**voc_files(1, prefix="n"), "ImageSets/Main/train.txt": b"000001\nn000000\n"})
    ingest(src, repo / "data/raw", mode="append")
    assert (repo / "data/raw/ImageSets/Main/train.txt").read_text() == "000000\n000001\nn000000\n"
    assert dvc_in_sync(repo)


@pytest.mark.integration
def test_replace_refuses_data_dvc_does_not_hold_unless_forced(repo: Path, tmp_path: Path):
    (repo / "data/raw/JPEGImages/extra.jpg").write_bytes(b"\xff\xd8 not added \xff\xd9")
    before = state(repo)
    src = write_tree(tmp_path / "src", voc_files(2, seed=4))
    with pytest.raises(VisError, match=r"data/raw has changes that data/raw.dvc does not record.*--force"):
        ingest(src, repo / "data/raw")
    assert state(repo) == before
    ingest(src, repo / "data/raw", force=True)
    assert tree_hash(repo / "data/raw") == tree_hash(src)


@pytest.mark.integration
def test_first_ingest_into_a_repository_without_data(tmp_path: Path):
    root = tmp_path / "empty"
    root.mkdir()
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    src = write_tree(tmp_path / "src", voc_files(3))
    result = ingest(src, root / "data/raw")
    assert result.images == 3
    assert dvc_in_sync(root)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["zip", "tar", "folder"])
def test_os_litter_is_left_out_and_the_version_is_that_of_the_clean_data(kind: str, repo: Path, tmp_path: Path):
    """`._*`, `.DS_Store`, `__MACOSX/`, `Thumbs.db`, ... in the source: not in data/raw, not in its hash, counted."""
    files = voc_files(3, seed=8)
    dirty = {**{f"ds/{k}": v for k, v in files.items()}, **LITTER}  # LITTER's dataset folder is ds/ too
    if kind == "zip":
        source = write_zip(tmp_path / "export.zip", dirty)
    elif kind == "tar":
        source = write_tar(tmp_path / "export.tar.gz", sorted(dirty.items()))
    else:
        source = write_tree(tmp_path / "export", dirty)

    result = ingest(source, repo / "data/raw")

    assert tree_hash(repo / "data/raw") == tree_hash(write_tree(tmp_path / "expected", files))
    assert (result.nfiles, result.ignored, result.litter) == (6, [], sorted(LITTER))
    assert f"left out {len(LITTER)} operating-system files (macOS ._ resource forks, " in str(result)
    assert dvc_in_sync(repo)
    clean = ingest(write_tree(tmp_path / "clean", files), repo / "data/raw")
    assert clean.same_version and clean.md5 == result.md5  # the same dataset hash as without the litter
    assert "operating-system" not in str(clean)


@pytest.mark.parametrize("name", ["zip_in_zip", "tgz_in_zip", "zip_in_tgz"])
def test_an_archive_holding_only_another_archive_is_refused_and_data_raw_untouched(
    name: str, shared_repo: Path, tmp_path: Path
):
    builder, words = NESTED[name]
    archive = builder(tmp_path)
    before, data_before = state(shared_repo), tree_hash(shared_repo / "data")
    with pytest.raises(VisError) as caught:
        ingest(archive, shared_repo / "data/raw")
    assert getattr(caught.value, "code", None) == "nested_archive"
    assert words.format(d=tmp_path) in str(caught.value)
    assert state(shared_repo) == before and tree_hash(shared_repo / "data") == data_before
    assert leftovers(shared_repo) == []


def test_cli_refuses_a_zip_in_a_zip_in_one_line_that_says_to_unpack_it(shared_repo: Path, tmp_path: Path):
    archive = NESTED["zip_in_zip"][0](tmp_path)
    before = tree_hash(shared_repo / "data")
    proc = run([VISAPP, "ingest", str(archive)], shared_repo, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert f"unpack it and ingest the inner archive (`unzip {archive}`, then `visapp ingest inner.zip`)" in proc.stderr
    assert tree_hash(shared_repo / "data") == before


# ---------------------------------------------------------------- faults: full disk, read-only folder


def test_an_images_only_folder_does_not_replace_an_annotated_dataset_unless_forced(repo: Path, tmp_path: Path):
    images_only = write_tree(
        tmp_path / "JPEGImages", {k.split("/")[1]: v for k, v in voc_files(4, seed=5).items() if "JPEG" in k}
    )
    before = state(repo)
    with pytest.raises(VisError, match=r"no annotation, where data/raw has 5 annotations: was the image folder"):
        ingest(images_only, repo / "data/raw")
    assert state(repo) == before and leftovers(repo) == []
    result = ingest(images_only, repo / "data/raw", force=True)
    assert (result.images, result.annotations) == (4, 0)


def test_an_identical_reingest_is_unchanged_and_keeps_its_name(repo: Path, tmp_path: Path):
    archive = write_zip(tmp_path / "v2.zip", voc_files(6, seed=2))
    first = ingest(archive, repo / "data/raw", name="batch 2")
    run(["git", "commit", "-q", "-am", "batch 2"], repo)
    recorded = (repo / "data/raw.dvc").read_text()
    again = ingest(archive, repo / "data/raw")
    assert again.same_version and again.md5 == first.md5 and again.name == "batch 2"
    assert "unchanged: it already holds this version" in str(again) and "new dataset version" not in str(again)
    assert (repo / "data/raw.dvc").read_text() == recorded and leftovers(repo) == []
    renamed = ingest(archive, repo / "data/raw", name="batch 2 (checked)")
    assert renamed.same_version and renamed.name == "batch 2 (checked)"
    assert "desc: batch 2 (checked)" in (repo / "data/raw.dvc").read_text() and dvc_in_sync(repo)


def test_the_class_names_found_are_listed_against_data_classes(repo: Path, tmp_path: Path):
    result = ingest(write_zip(tmp_path / "a.zip", voc_files(3)), repo / "data/raw", classes=["circle", "square"])
    text = str(result)
    assert "objects per class name: circle 3" in text
    assert "in data.classes but without any object here: square" in text
    renamed = {k: v.replace(b"<name>circle</name>", b"<name>dog</name>") for k, v in voc_files(2, seed=9).items()}
    result = ingest(write_zip(tmp_path / "b.zip", renamed), repo / "data/raw", classes=["circle"])
    assert "not in data.classes: dog (validate rejects their samples)" in str(result)


def test_a_tar_gz_is_ingested_like_a_zip(repo: Path, tmp_path: Path):
    import tarfile

    files = voc_files(4, seed=3)
    expected = tree_hash(write_tree(tmp_path / "expected", files))
    with tarfile.open(tmp_path / "VOCtrainval.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "expected", arcname="VOCdevkit/VOC2007")
    result = ingest(tmp_path / "VOCtrainval.tar.gz", repo / "data/raw")
    assert (result.images, result.annotations) == (4, 4)
    assert tree_hash(repo / "data/raw") == expected and dvc_in_sync(repo)


def _unshare_prefix() -> list[str] | None:
    """A command prefix that runs in a private mount namespace (as root, or mapped to root in a user namespace)."""
    if not shutil.which("unshare") or sys.platform != "linux":
        return None
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null || exit 1"], check=False)
        if probe.returncode == 0:
            return prefix
    return None


def _run_with_data_on_tmpfs(repo: Path, options: str, command: str) -> subprocess.CompletedProcess:
    prefix = _unshare_prefix()
    if prefix is None:
        pytest.skip("cannot mount a private tmpfs here (needs mount namespaces)")
    script = f"mount -t tmpfs -o {options} tmpfs data && {command}; echo rc=$?; ls -A data"
    return subprocess.run([*prefix, "sh", "-c", script], cwd=repo, capture_output=True, text=True, check=False)


@pytest.mark.integration
def test_full_disk_is_a_clear_error(tmp_path: Path):
    """data/ on a 256 KiB file system: the extraction runs out of space (blocks, not the declared bytes)."""
    root = tmp_path / "repo"
    root.mkdir()
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    (root / "data").mkdir()
    archive = write_zip(tmp_path / "big.zip", voc_files(60))  # ~60 KB of data, 120 files of one 4 KiB block each
    proc = _run_with_data_on_tmpfs(root, "size=256k", f"{VISAPP} ingest {archive}")
    assert "rc=2" in proc.stdout, proc.stdout + proc.stderr
    assert "no space left on the device" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.strip().endswith("rc=2")  # `ls -A data` printed nothing: no staging folder left
    assert list((root / "data").iterdir()) == []


@pytest.mark.integration
def test_read_only_data_folder_is_a_clear_error(tmp_path: Path):
    root = tmp_path / "repo"
    root.mkdir()
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    (root / "data").mkdir()
    archive = write_zip(tmp_path / "a.zip", voc_files(2))
    proc = _run_with_data_on_tmpfs(root, "ro", f"{VISAPP} ingest {archive}")
    assert "rc=2" in proc.stdout, proc.stdout + proc.stderr
    assert "read-only" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_data_folder_is_a_clear_error(shared_repo: Path, tmp_path: Path):
    archive = write_zip(tmp_path / "a.zip", voc_files(2))
    data = shared_repo / "data"
    before = state(shared_repo)
    data.chmod(0o555)
    try:
        with pytest.raises(VisError, match="permission denied"):
            ingest(archive, data / "raw")
    finally:
        data.chmod(0o755)
    assert state(shared_repo) == before


# ---------------------------------------------------------------- kills


@pytest.fixture(scope="module")
def big_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A ZIP of 2,000 images + 2,000 XMLs under a top folder, and the tree hash its dataset must have."""
    folder = tmp_path_factory.mktemp("big")
    files = voc_files(2000, seed=7)
    return write_zip(folder / "big.zip", files, top="Export/"), tree_hash(write_tree(folder / "expected", files))


# Runs an ingest that stops at a named step (a `phase` of the swap, or "file N": after N files extracted) and
# waits there to be killed: the kill lands at a known point, told by a line on stderr, not after a guessed delay.
PAUSING_INGEST = """
import sys, time
from visapp.ingest.ingest import ingest

archive, pause_at = sys.argv[1], sys.argv[2]


def pause(step):
    if step == pause_at:
        print(f"paused at {step}", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)


def progress(update):
    if update.task == "ingest":
        pause(f"file {update.done}")


print(ingest(archive, "data/raw", phase=pause, progress=progress))
"""


def _start_ingest(root: Path, archive: Path, pause_at: str | None = None) -> subprocess.Popen:
    cmd = (
        [sys.executable, "-c", PAUSING_INGEST, str(archive), pause_at] if pause_at else [VISAPP, "ingest", str(archive)]
    )
    return subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_pause(proc: subprocess.Popen, step: str, timeout: float = 300) -> None:
    """Read stderr until the ingest says it paused at `step` (select: a process that dies is seen at once)."""
    seen = ""
    while True:
        ready, _, _ = select.select([proc.stderr], [], [], timeout)
        if not ready:
            break
        line = proc.stderr.readline()
        seen += line
        if f"paused at {step}" in line:
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"ingest never paused at {step}: rc={proc.poll()}\n{seen}")


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


@pytest.fixture
def pipeline_repo(make_project) -> Path:
    """The project's pipeline repository with a committed, DVC-tracked data/raw."""
    project = make_project()
    write_tree(project.root / "data/raw", voc_files(10))
    project.run("dvc", "add", "-q", "data/raw")
    project.commit("data")
    return project.root


# After these the new version is not committed: data/raw and data/raw.dvc are the old ones as they stand.
BEFORE_COMMIT = ["file 1", "file 1999", "prepared", "hashed", "journaled"]
# Inside the swap (between two renames, microseconds in real life): the journal makes the next ingest undo it.
INSIDE_SWAP = ["moved-old", "moved-new"]


@pytest.mark.integration
def test_ingest_killed_at_each_stage_leaves_data_raw_as_it_was(pipeline_repo: Path, big_zip: tuple[Path, str]):
    archive, new_hash = big_zip
    old = state(pipeline_repo)
    for stage in BEFORE_COMMIT + INSIDE_SWAP:
        proc = _start_ingest(pipeline_repo, archive, pause_at=stage)
        _wait_for_pause(proc, stage)
        _kill(proc)
        if stage in BEFORE_COMMIT:
            assert state(pipeline_repo) == old, stage
        else:
            assert (pipeline_repo / ".dvc/tmp/visapp-ingest.json").exists(), stage
        proc = run([VISAPP, "ingest", "--recover"], pipeline_repo)
        assert state(pipeline_repo) == old, stage
        assert leftovers(pipeline_repo) == [], stage
        assert ("undid an interrupted ingest" in proc.stdout) == (stage in ("journaled", *INSIDE_SWAP)), stage

    proc = _start_ingest(pipeline_repo, archive, pause_at="committed")
    _wait_for_pause(proc, "committed")
    _kill(proc)
    assert tree_hash(pipeline_repo / "data/raw") == new_hash  # after the commit point: the complete new version
    assert dvc_in_sync(pipeline_repo)

    run([VISAPP, "ingest", str(archive)], pipeline_repo)  # the next ingest completes the cleanup and succeeds
    assert tree_hash(pipeline_repo / "data/raw") == new_hash
    assert dvc_in_sync(pipeline_repo)
    assert leftovers(pipeline_repo) == []
    assert "data/raw.dvc" in run(["git", "status", "--porcelain"], pipeline_repo).stdout  # autostaged, as dvc add


@pytest.mark.integration
def test_a_second_ingest_at_the_same_time_is_refused(repo: Path, tmp_path: Path):
    archive = write_zip(tmp_path / "a.zip", voc_files(3, seed=2))
    first = _start_ingest(repo, archive, pause_at="prepared")
    try:
        _wait_for_pause(first, "prepared")
        proc = run([VISAPP, "ingest", str(archive)], repo, check=False)
        assert proc.returncode == 2 and "another `visapp ingest` is running" in proc.stderr
    finally:
        _kill(first)
    note = recover(repo / "data/raw", repo)  # nothing was journaled: the staging folder is only swept away
    assert note == "removed 1 folder(s) left by an ingest killed before it changed anything"
    assert leftovers(repo) == []

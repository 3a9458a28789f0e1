"""visapp.ingest.archive: every ZIP attack is refused with its own clear message, and nothing is left behind."""

from __future__ import annotations

import contextlib
import gzip
import io
import stat
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from factory import write_sample, write_zip
from visapp.errors import VisError
from visapp.ingest import archive as archive_module
from visapp.ingest.archive import (
    ArchiveLimits,
    ArchiveRefused,
    extract_archive,
    litter_kind,
    open_archive,
    parse_size,
    safe_relpath,
)
from visapp.ingest.ingest import IngestResult
from visapp.ingest.sources import Source
from visapp.ingest.zip_archive import SafeZip

pytestmark = pytest.mark.unit

XML = b"<annotation><filename>a.jpg</filename></annotation>"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"

# ---------------------------------------------------------------- crafting archives


def patch_bytes(path: Path, old: bytes, new: bytes) -> Path:
    """Replace every occurrence (local header and central directory alike); lengths must match."""
    assert len(old) == len(new)
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new))
    return path


def patch_central(path: Path, index: int, offset: int, fmt: str, value: int) -> Path:
    """Overwrite a field of the index-th central directory record (offset from its signature)."""
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    (pos,) = struct.unpack_from("<I", data, end + 16)
    for _ in range(index):
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        pos += 46 + name_len + extra_len + comment_len
    struct.pack_into(fmt, data, pos + offset, value)
    path.write_bytes(bytes(data))
    return path


def zip_traversal(d: Path) -> Path:
    return write_zip(d / "a.zip", [("ds/Annotations/a.xml", XML), ("../../evil.txt", b"x")])


def zip_absolute(d: Path) -> Path:
    return write_zip(d / "a.zip", [("ds/Annotations/a.xml", XML), ("/tmp/evil.txt", b"x")])


def zip_drive_letter(d: Path) -> Path:
    return write_zip(d / "a.zip", [("ds/Annotations/a.xml", XML), ("C:/Windows/evil.txt", b"x")])


def zip_backslash_traversal(d: Path) -> Path:
    return write_zip(d / "a.zip", [("ds/Annotations/a.xml", XML), ("ds\\..\\..\\evil.txt", b"x")])


def zip_symlink(d: Path) -> Path:
    info = zipfile.ZipInfo("ds/JPEGImages/a.jpg")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return write_zip(d / "a.zip", [("ds/Annotations/a.xml", XML), (info, b"/etc/passwd")])


def zip_too_many(d: Path) -> Path:
    return write_zip(d / "a.zip", [(f"ds/Annotations/{i}.xml", XML) for i in range(12)])


def zip_too_large(d: Path) -> Path:
    return write_zip(d / "a.zip", [(f"ds/JPEGImages/{i}.jpg", JPEG * 4) for i in range(5)])


def zip_ratio(d: Path) -> Path:
    return write_zip(d / "a.zip", [("ds/Annotations/a.xml", XML), ("ds/JPEGImages/bomb.jpg", bytes(4 * 1024 * 1024))])


def zip_understated(d: Path) -> Path:
    """A header that claims a small size for a big entry: zipfile stops at the claim, then the CRC fails."""
    path = write_zip(d / "a.zip", [("ds/JPEGImages/a.jpg", JPEG * 100)], method=zipfile.ZIP_STORED)
    return patch_central(path, 0, 24, "<I", 100)


def zip_overlapping(d: Path) -> Path:
    """A non-recursive bomb: many central directory records pointing at one compressed stream."""
    path = write_zip(d / "a.zip", [("ds/JPEGImages/a.jpg", bytes(900_000)), ("ds/JPEGImages/b.jpg", JPEG)])
    return patch_central(path, 1, 42, "<I", 0)  # b.jpg's local header offset -> a.jpg's


def zip_encrypted(d: Path) -> Path:
    path = d / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ds/Annotations/a.xml", XML)
        archive.infolist()[-1].flag_bits |= 0x1  # written into the central directory on close
    return path


def zip_not_a_zip(d: Path) -> Path:
    path = d / "a.zip"
    path.write_bytes(b"this is not an archive at all" * 10)
    return path


def zip_truncated(d: Path) -> Path:
    path = write_zip(d / "a.zip", [("ds/Annotations/a.xml", XML), ("ds/JPEGImages/a.jpg", JPEG)])
    path.write_bytes(path.read_bytes()[:-30])
    return path


def zip_bad_crc(d: Path) -> Path:
    entries = [("ds/Annotations/a.xml", b"<annotation>hello world</annotation>")]
    path = write_zip(d / "a.zip", entries, zipfile.ZIP_STORED)
    return patch_bytes(path, b"hello world", b"hello WORLD")


def zip_bad_deflate(d: Path) -> Path:
    payload = bytes(range(256)) * 64
    path = write_zip(d / "a.zip", [("ds/JPEGImages/a.jpg", payload)])
    data = bytearray(path.read_bytes())
    start = 30 + len("ds/JPEGImages/a.jpg")
    data[start : start + 40] = b"\xff" * 40  # garbage in the deflate stream
    path.write_bytes(bytes(data))
    return path


def zip_unsupported_method(d: Path) -> Path:
    path = write_zip(d / "a.zip", [("ds/Annotations/a.xml", XML)])
    return patch_central(path, 0, 10, "<H", 9)  # Deflate64


def zip_duplicate(d: Path) -> Path:
    with pytest.warns(UserWarning, match="Duplicate name"):
        return write_zip(d / "a.zip", [("ds/Annotations/a.xml", XML), ("ds/Annotations/a.xml", XML + b" ")])


def zip_case_duplicate(d: Path) -> Path:
    return write_zip(d / "a.zip", [("ds/JPEGImages/a.jpg", JPEG), ("ds/JPEGImages/A.JPG", JPEG)])


def zip_unicode_duplicate(d: Path) -> Path:
    nfc, nfd = unicodedata.normalize("NFC", "café.jpg"), unicodedata.normalize("NFD", "café.jpg")
    return write_zip(d / "a.zip", [(f"ds/JPEGImages/{nfc}", JPEG), (f"ds/JPEGImages/{nfd}", JPEG)])


def zip_file_folder_clash(d: Path) -> Path:
    return write_zip(d / "a.zip", [("ds/JPEGImages", JPEG), ("ds/JPEGImages/a.jpg", JPEG)])


def zip_legacy_name(d: Path) -> Path:
    path = write_zip(d / "a.zip", [("ds/JPEGImages/XXXX.jpg", JPEG)])
    return patch_bytes(path, b"XXXX.jpg", "фото.jpg".encode("cp866"))  # a Russian Windows archiver's bytes


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo | str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT) as archive:
        for member, data in members:
            info = member if isinstance(member, tarfile.TarInfo) else tarfile.TarInfo(member)
            if info.type == tarfile.REGTYPE:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return path


def tar_member(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def tar_legacy_name(d: Path) -> Path:
    """A name written in a Russian Windows code page, as an old archiver does."""
    path = d / "a.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="cp866") as archive:
        info = tarfile.TarInfo("ds/JPEGImages/фото.jpg")
        info.size = len(JPEG)
        archive.addfile(info, io.BytesIO(JPEG))
    return path


def tar_truncated(d: Path) -> Path:
    path = write_tar(d / "a.tgz", [("ds/JPEGImages/a.jpg", bytes(range(256)) * 400)])
    path.write_bytes(path.read_bytes()[:-200])
    return path


def tar_bad_gzip(d: Path) -> Path:
    path = write_tar(d / "a.tgz", [("ds/JPEGImages/a.jpg", bytes(range(256)) * 400)])
    data = bytearray(path.read_bytes())
    data[60:100] = b"\xff" * 40  # garbage in the deflate stream
    path.write_bytes(bytes(data))
    return path


def tar_not_a_tar(d: Path) -> Path:
    path = d / "a.tar.gz"
    path.write_bytes(gzip.compress(b"this is not a tar archive at all" * 30))
    return path


def tar_with(*members: tuple[tarfile.TarInfo | str, bytes]) -> Callable[[Path], Path]:
    return lambda d: write_tar(d / "a.tgz", list(members))


NFC, NFD = unicodedata.normalize("NFC", "café.jpg"), unicodedata.normalize("NFD", "café.jpg")
LINK, HARD, FIFO = tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE
TAR_ATTACKS: dict[str, tuple[Callable[[Path], Path], str, str, ArchiveLimits]] = {
    # name: (builder, ArchiveRefused.code, words the message must hold, limits): the ZIP attacks as tars
    "traversal": (tar_with(("../../evil.txt", b"x"),), "unsafe_path", "'../../evil.txt'", ArchiveLimits()),
    "absolute": (tar_with(("/tmp/evil.txt", b"x"),), "unsafe_path", "has an absolute path", ArchiveLimits()),
    "drive_letter": (tar_with(("C:/Windows/evil.txt", b"x"),), "unsafe_path", "has an absolute path", ArchiveLimits()),
    "backslash": (tar_with(("ds\\..\\..\\evil.txt", b"x"),), "unsafe_path", "'..' component", ArchiveLimits()),
    "symlink": (tar_with((tar_member("ds/a.jpg", LINK, "/etc/passwd"), b"")), "symlink", "'ds/a.jpg' is a link",
                ArchiveLimits()),
    "hardlink": (tar_with((tar_member("ds/a.jpg", HARD, "/etc/passwd"), b"")), "symlink", "is a link", ArchiveLimits()),
    "special_file": (tar_with((tar_member("ds/a.jpg", FIFO), b"")), "symlink", "special file", ArchiveLimits()),
    "too_many_entries": (tar_with(*((f"ds/{i}.xml", XML) for i in range(12))), "too_many_entries",
                         "more than the limit of 10", ArchiveLimits(max_entries=10)),
    "too_large": (tar_with(*((f"ds/{i}.jpg", JPEG * 4) for i in range(5))), "too_large", "more than 10,000 bytes",
                  ArchiveLimits(max_total_bytes=10_000)),
    "ratio": (tar_with(("ds/bomb.jpg", bytes(4 * 1024 * 1024)),), "ratio", "expands", ArchiveLimits()),
    "not_a_tar": (tar_not_a_tar, "not_archive", "not a readable tar archive", ArchiveLimits()),
    "truncated": (tar_truncated, "corrupt", "damaged", ArchiveLimits()),
    "bad_data": (tar_bad_gzip, "corrupt", "damaged", ArchiveLimits()),
    "duplicate": (tar_with(("ds/a.xml", XML), ("ds/a.xml", XML + b" ")), "duplicate", "'ds/a.xml' appears twice",
                  ArchiveLimits()),
    "case_duplicate": (tar_with(("ds/a.jpg", JPEG), ("ds/A.JPG", JPEG)), "duplicate", "differ only in letter case",
                       ArchiveLimits()),
    "unicode_duplicate": (tar_with((f"ds/{NFC}", JPEG), (f"ds/{NFD}", JPEG)), "duplicate", "two Unicode forms",
                          ArchiveLimits()),
    "file_folder_clash": (tar_with(("ds/JPEGImages", JPEG), ("ds/JPEGImages/a.jpg", JPEG)), "duplicate",
                          "'ds/JPEGImages' is a file", ArchiveLimits()),
    "legacy_encoding": (tar_legacy_name, "legacy_encoding", "re-create the archive with UTF-8 names",
                        ArchiveLimits()),
}  # fmt: skip


ATTACKS: dict[str, tuple[Callable[[Path], Path], str, str, ArchiveLimits]] = {
    # name: (builder, ArchiveRefused.code, words the message must hold, limits)
    "traversal": (zip_traversal, "unsafe_path", "'../../evil.txt'", ArchiveLimits()),
    "absolute": (zip_absolute, "unsafe_path", "'/tmp/evil.txt' has an absolute path", ArchiveLimits()),
    "drive_letter": (zip_drive_letter, "unsafe_path", "'C:/Windows/evil.txt' has an absolute path", ArchiveLimits()),
    "backslash": (zip_backslash_traversal, "unsafe_path", "'..' component", ArchiveLimits()),
    "symlink": (zip_symlink, "symlink", "'ds/JPEGImages/a.jpg' is a symbolic link", ArchiveLimits()),
    "too_many_entries": (zip_too_many, "too_many_entries", "12 entries", ArchiveLimits(max_entries=10)),
    "too_large": (zip_too_large, "too_large", "more than 10,000 bytes", ArchiveLimits(max_total_bytes=10_000)),
    "ratio": (zip_ratio, "ratio", "'ds/JPEGImages/bomb.jpg' expands", ArchiveLimits()),
    "understated_size": (zip_understated, "corrupt", "'ds/JPEGImages/a.jpg'", ArchiveLimits()),
    "overlapping": (zip_overlapping, "corrupt", "'ds/JPEGImages/b.jpg'", ArchiveLimits()),
    "encrypted": (zip_encrypted, "encrypted", "'ds/Annotations/a.xml' is encrypted", ArchiveLimits()),
    "not_a_zip": (zip_not_a_zip, "not_archive", "not a readable ZIP", ArchiveLimits()),
    "truncated": (zip_truncated, "not_archive", "not a readable ZIP", ArchiveLimits()),
    "bad_crc": (zip_bad_crc, "corrupt", "'ds/Annotations/a.xml' cannot be read (Bad CRC-32", ArchiveLimits()),
    "bad_deflate": (zip_bad_deflate, "corrupt", "'ds/JPEGImages/a.jpg' cannot be read", ArchiveLimits()),
    "unsupported_method": (zip_unsupported_method, "unsupported", "deflate64", ArchiveLimits()),
    "duplicate": (zip_duplicate, "duplicate", "'ds/Annotations/a.xml' appears twice", ArchiveLimits()),
    "case_duplicate": (zip_case_duplicate, "duplicate", "differ only in letter case", ArchiveLimits()),
    "unicode_duplicate": (zip_unicode_duplicate, "duplicate", "two Unicode forms", ArchiveLimits()),
    "file_folder_clash": (zip_file_folder_clash, "duplicate", "'ds/JPEGImages' is a file", ArchiveLimits()),
    "legacy_encoding": (zip_legacy_name, "legacy_encoding", "re-create the archive with UTF-8 names", ArchiveLimits()),
}


def tree(root: Path) -> list[str]:
    """Every path under root (hidden ones too), sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# ---------------------------------------------------------------- attacks


@pytest.mark.parametrize(
    "attack", [*(f"zip:{name}" for name in sorted(ATTACKS)), *(f"tar:{name}" for name in sorted(TAR_ATTACKS))]
)
def test_attack_is_refused_with_its_message_and_leaves_nothing(attack: str, tmp_path: Path):
    kind, name = attack.split(":")
    builder, code, words, limits = (ATTACKS if kind == "zip" else TAR_ATTACKS)[name]
    src = tmp_path / "src"
    src.mkdir()
    archive = builder(src)
    work = tmp_path / "work"
    work.mkdir()
    before = tree(tmp_path)

    with pytest.raises(ArchiveRefused) as caught:
        extract_archive(archive, work / "out", limits)

    assert caught.value.code == code
    message = str(caught.value)
    assert words.lower() in message.lower(), message
    assert str(archive) in message  # where
    assert tree(tmp_path) == before  # nothing written outside, and the destination folder is gone
    assert not (tmp_path.parent / "evil.txt").exists()


def test_limits_are_enforced_on_written_bytes_not_only_headers(tmp_path: Path):
    """A header that understates the size, read by a reader that trusts the data: stopped while streaming.

    (CPython's zipfile itself stops at the declared size and then fails the CRC: see "understated_size".)
    """
    archive = write_zip(tmp_path / "a.zip", [("ds/JPEGImages/a.jpg", JPEG * 50)], method=zipfile.ZIP_STORED)
    patch_central(archive, 0, 24, "<I", 10)  # claims 10 bytes: passes the declared-size check
    dest = tmp_path / "out"
    with SafeZip(archive, ArchiveLimits(max_total_bytes=20_000)) as safe:
        safe.entries[0].record.file_size = len(JPEG) * 50  # the reader now returns every real byte
        with pytest.raises(ArchiveRefused, match="passed the limit of 20,000 bytes") as caught:
            safe.extract(dest)
    assert caught.value.code == "too_large"
    assert not dest.exists()


def test_refusal_names_the_first_bad_entry_even_after_good_ones(tmp_path: Path):
    entries = [(f"ds/Annotations/{i}.xml", XML) for i in range(50)] + [("ds/../../x", b"")]
    with pytest.raises(ArchiveRefused, match=r"'ds/\.\./\.\./x'"):
        SafeZip(write_zip(tmp_path / "a.zip", entries)).__enter__()


# ---------------------------------------------------------------- what is accepted


def test_extracts_files_and_folders_streaming_into_a_fresh_folder(tmp_path: Path):
    info = zipfile.ZipInfo("ds/ImageSets/")  # an explicit (empty) directory entry
    archive = write_zip(
        tmp_path / "a.zip",
        [
            (info, b""),
            ("./ds/Annotations/a.xml", XML),
            ("ds//JPEGImages/a.jpg", JPEG),
            ("ds\\JPEGImages\\b.jpg", JPEG + b"b"),  # Windows PowerShell 5 separators
            ("__MACOSX/ds/JPEGImages/._a.jpg", b"apple double"),
            ("ds/.DS_Store", b"finder"),
        ],
    )
    summary = extract_archive(archive, tmp_path / "out")
    assert tree(tmp_path / "out") == [
        "ds",
        "ds/Annotations",
        "ds/Annotations/a.xml",
        "ds/ImageSets",
        "ds/JPEGImages",
        "ds/JPEGImages/a.jpg",
        "ds/JPEGImages/b.jpg",
    ]
    assert (tmp_path / "out/ds/JPEGImages/b.jpg").read_bytes() == JPEG + b"b"
    assert summary.files == 3
    assert summary.bytes == len(XML) + 2 * len(JPEG) + 1
    assert sorted(summary.skipped) == ["__MACOSX/ds/JPEGImages/._a.jpg", "ds/.DS_Store"]


def test_extract_with_prefix_keeps_only_that_folder(tmp_path: Path):
    archive = write_zip(tmp_path / "a.zip", [("top/ds/Annotations/a.xml", XML), ("top/README.txt", b"hi")])
    with SafeZip(archive) as safe:
        assert safe.files == ["top/ds/Annotations/a.xml", "top/README.txt"]
        safe.extract(tmp_path / "out", prefix="top/ds")
    assert tree(tmp_path / "out") == ["Annotations", "Annotations/a.xml"]


def test_names_are_stored_as_unicode_nfc(tmp_path: Path):
    nfd = unicodedata.normalize("NFD", "ds/JPEGImages/café.jpg")
    extract_archive(write_zip(tmp_path / "a.zip", [(nfd, JPEG)]), tmp_path / "out")
    assert (tmp_path / "out" / unicodedata.normalize("NFC", "ds/JPEGImages/café.jpg")).is_file()


def test_legacy_name_with_info_zip_unicode_path_field_is_accepted(tmp_path: Path):
    """Info-ZIP's zip writes legacy header bytes plus the UTF-8 name in extra field 0x7075: that is well defined."""
    legacy = "фото.jpg".encode("cp866")
    utf8 = "ds/фото.jpg".encode()
    info = zipfile.ZipInfo("ds/XXXX.jpg")
    info.extra = struct.pack("<HHBI", 0x7075, 5 + len(utf8), 1, zlib.crc32(b"ds/" + legacy)) + utf8
    archive = patch_bytes(write_zip(tmp_path / "a.zip", [(info, JPEG)]), b"XXXX.jpg", legacy)
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out/ds/фото.jpg").read_bytes() == JPEG


def test_extract_refuses_an_existing_destination(tmp_path: Path):
    (tmp_path / "out").mkdir()
    with pytest.raises(VisError, match="already exists"):
        extract_archive(write_zip(tmp_path / "a.zip", [("a.xml", XML)]), tmp_path / "out")
    assert (tmp_path / "out").is_dir()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_while_extracting_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every write lands in /dev/full (a real ENOSPC from the kernel): a VisError naming the file, dest removed."""
    archive = write_zip(tmp_path / "a.zip", [("ds/a.jpg", JPEG)])
    dest = tmp_path / "out"

    @contextlib.contextmanager
    def full_device(target: Path):
        with Path("/dev/full").open("wb", buffering=0) as handle:
            yield handle

    monkeypatch.setattr(archive_module, "_create", full_device)
    with pytest.raises(VisError, match=r"cannot write .*a\.jpg: no space left on the device"):
        extract_archive(archive, dest)
    assert not dest.exists()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a/b.xml", "a/b.xml"), ("./a//b.xml", "a/b.xml"), ("a\\b.xml", "a/b.xml"), ("a/./b/", "a/b")],
)
def test_safe_relpath_normalises(name: str, expected: str):
    assert safe_relpath(name) == expected


@pytest.mark.parametrize("name", ["../a", "a/../../b", "/a", "C:\\a", "c:a", "\\\\server\\share\\a", "a\x00b", "a\nb"])
def test_safe_relpath_refuses(name: str):
    with pytest.raises(ArchiveRefused):
        safe_relpath(name)


def test_parse_size():
    assert parse_size("64G") == 64 * 1024**3
    assert parse_size("500MiB") == 500 * 1024**2
    assert parse_size("1024") == 1024
    with pytest.raises(VisError, match="not a size"):
        parse_size("lots")


def test_a_tar_is_recognised_by_its_bytes_and_extracted_like_a_zip(tmp_path):
    members = [("VOC/Annotations/a.xml", XML), ("VOC/JPEGImages/a.jpg", JPEG), ("VOC/.DS_Store", b"litter")]
    for mode, name in (("w", "a.tar"), ("w:gz", "a.tar.gz"), ("w:bz2", "a.tbz"), ("w:xz", "named.zip")):
        archive = write_tar(tmp_path / name, members, mode)
        summary = extract_archive(archive, tmp_path / f"out-{name}")
        assert (tmp_path / f"out-{name}" / "VOC/JPEGImages/a.jpg").read_bytes() == JPEG
        assert (summary.files, summary.skipped) == (2, ["VOC/.DS_Store"])
    with open_archive(tmp_path / "a.tar") as archive:
        assert archive.kind == "tar" and archive.files == ["VOC/Annotations/a.xml", "VOC/JPEGImages/a.jpg"]


# ---------------------------------------------------------------- operating system litter

# What macOS, Windows and Linux leave in a folder (and so in an archive of it): never data.
LITTER: dict[str, bytes] = {
    "__MACOSX/ds/JPEGImages/._000001.jpg": b"\x00\x05\x16\x07 AppleDouble",  # macOS Finder's "Compress"
    "__MACOSX/._ds": b"\x00\x05\x16\x07 AppleDouble",
    "ds/JPEGImages/._000001.jpg": b"\x00\x05\x16\x07 AppleDouble",  # cp/tar/zip -r on a non-Apple volume
    "ds/Annotations/._000001.xml": b"\x00\x05\x16\x07 AppleDouble",
    "ds/._Annotations": b"\x00\x05\x16\x07 AppleDouble",
    "ds/.DS_Store": b"Bud1 finder",
    "ds/JPEGImages/.DS_Store": b"Bud1 finder",
    "ds/Icon\r": b"",
    ".Spotlight-V100/Store-V2/store.db": b"spotlight",
    ".Trashes/501/old.jpg": JPEG,
    ".fseventsd/fseventsd-uuid": b"uuid",
    "ds/JPEGImages/Thumbs.db": b"windows thumbnails",
    "ds/ehthumbs.db": b"windows media center",
    "ds/desktop.ini": b"[.ShellClassInfo]",
    "ds/$RECYCLE.BIN/S-1-5-21/$RABC123.jpg": JPEG,
    "ds/.Trash-1000/files/deleted.jpg": JPEG,
}


def voc_source(folder: Path) -> Path:
    """Two VOC samples under `folder/ds` (the factory's), no litter."""
    write_sample(folder / "ds", "000001")
    write_sample(folder / "ds", "000002")
    return folder


def add_files(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def pack(folder: Path, kind: str) -> Path:
    """The files under `folder` as a ZIP, a .tar.gz, or the folder itself."""
    files = [(p.relative_to(folder).as_posix(), p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]
    if kind == "zip":
        return write_zip(folder.with_suffix(".zip"), files)
    if kind == "tar":
        return write_tar(folder.with_suffix(".tar.gz"), list(files))
    return folder


@pytest.mark.parametrize("kind", ["zip", "tar", "folder"])
def test_os_litter_is_left_out_unread_and_counted_for_every_kind_of_source(kind: str, tmp_path: Path):
    clean = voc_source(tmp_path / "clean")
    source = pack(add_files(voc_source(tmp_path / "src"), LITTER), kind)

    src = Source(source, ArchiveLimits())
    try:
        assert src.files == [p.relative_to(clean).as_posix() for p in sorted(clean.rglob("*")) if p.is_file()]
        assert sorted(src.litter) == sorted(LITTER)
        assert src.find_root() == "ds"
        src.extract(tmp_path / "out", "ds")
    finally:
        src.close()
    assert tree(tmp_path / "out") == tree(clean / "ds")
    assert all(
        (tmp_path / "out" / rel).read_bytes() == (clean / "ds" / rel).read_bytes()
        for rel in ("JPEGImages/000001.jpg", "Annotations/000002.xml")
    )


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("ds/JPEGImages/._IMG_0001.jpg", "macOS ._ resource forks"),
        ("._IMG_0001.JPG", "macOS ._ resource forks"),
        ("__MACOSX/ds/a.jpg", "__MACOSX/"),
        ("a/b/.ds_store", ".DS_Store"),
        ("ds/Icon\r", "Icon\\r"),
        (".Spotlight-V100/Store-V2/x", ".Spotlight-V100/"),
        ("usb/.Trashes/501/a.jpg", ".Trashes/"),
        (".fseventsd/x", ".fseventsd/"),
        ("ds/THUMBS.DB", "Thumbs.db"),
        ("ds/ehthumbs.db", "ehthumbs.db"),
        ("Desktop.ini", "desktop.ini"),
        ("$Recycle.Bin/S-1-5/x.jpg", "$RECYCLE.BIN/"),
        ("System Volume Information/x", "System Volume Information/"),
        (".Trash-1000/files/a.jpg", ".Trash-<uid>/"),
        ("ds/JPEGImages/a._b.jpg", None),
        ("ds/JPEGImages/_a.jpg", None),
        ("ds/JPEGImages/.hidden.jpg", None),
        ("ds/._", None),
        ("ds/Icon.jpg", None),
        ("Trashes/a.jpg", None),
        ("ds/.Trash-x/a.jpg", None),
    ],
)
def test_litter_kind(path: str, kind: str | None):
    assert litter_kind(path) == kind


def test_safe_relpath_admits_the_macos_icon_file_but_no_other_control_character():
    assert safe_relpath("ds\\Icon\r") == "ds/Icon\r"
    for name in ("ds/Ic\ron", "ds/Icon\r/a.jpg", "ds/Icon\r\r", "ds/xIcon\r"):
        with pytest.raises(ArchiveRefused, match="control character"):
            safe_relpath(name)


def test_litter_is_never_read_so_a_link_or_an_encrypted_entry_there_refuses_nothing(tmp_path: Path):
    link = zipfile.ZipInfo("ds/JPEGImages/._a.jpg")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("ds/JPEGImages/a.jpg", JPEG)
        out.writestr(link, "/etc/passwd")
        out.writestr("ds/.DS_Store", b"finder")
        out.infolist()[-1].flag_bits |= 0x1  # encrypted
    summary = extract_archive(archive, tmp_path / "out")
    assert tree(tmp_path / "out") == ["ds", "ds/JPEGImages", "ds/JPEGImages/a.jpg"]
    assert sorted(summary.skipped) == ["ds/.DS_Store", "ds/JPEGImages/._a.jpg"]

    folder = tmp_path / "folder"
    write_sample(folder, "a")
    (folder / "JPEGImages/._a.jpg").symlink_to("/etc/passwd")
    src = Source(folder, ArchiveLimits())
    assert src.files == ["Annotations/a.xml", "JPEGImages/a.jpg"] and src.litter == ["JPEGImages/._a.jpg"]


def test_ingest_result_says_how_many_os_files_were_left_out():
    result = IngestResult("data/raw", "0" * 32, 4, 1000, 2, 2, "replace", ignored=["README.txt"])
    result.litter = sorted(["ds/._a.jpg", "ds/._b.jpg", "ds/.DS_Store", "ds/Icon\r", "__MACOSX/ds/._a.jpg"])
    text = str(result)
    assert "left out 1 files outside the dataset folder: README.txt" in text
    assert (
        "left out 5 operating-system files (macOS ._ resource forks, __MACOSX/, .DS_Store, Icon\\r): "
        "__MACOSX/ds/._a.jpg, ds/.DS_Store, ds/._a.jpg, ..." in text
    ), text
    assert "\r" not in text
    result.litter = ["Thumbs.db"]
    assert "left out 1 operating-system file (Thumbs.db): Thumbs.db" in str(result)
    assert "operating-system" not in str(IngestResult("data/raw", "0" * 32, 4, 1000, 2, 2, "replace"))


# ---------------------------------------------------------------- an archive in an archive


def inner_zip(folder: Path) -> Path:
    return pack(voc_source(folder / "inner"), "zip")


def zip_in_zip(d: Path) -> Path:
    return write_zip(d / "outer.zip", [("inner.zip", inner_zip(d).read_bytes()), ("__MACOSX/._inner.zip", b"x")])


def tgz_in_zip(d: Path) -> Path:
    inner = pack(voc_source(d / "inner"), "tar")
    return write_zip(d / "outer.zip", [("inner.tar.gz", inner.read_bytes())])


def zip_in_tgz(d: Path) -> Path:
    return write_tar(d / "outer.tgz", [("inner.zip", inner_zip(d).read_bytes())])


def zip_in_folder(d: Path) -> Path:
    (d / "outer").mkdir()
    (d / "outer/inner.zip").write_bytes(inner_zip(d).read_bytes())
    (d / "outer/.DS_Store").write_bytes(b"finder")
    return d / "outer"


def seven_zip_in_zip(d: Path) -> Path:
    return write_zip(d / "outer.zip", [("inner.7z", b"7z\xbc\xaf\x27\x1c")])


def two_zips_in_zip(d: Path) -> Path:
    inner = inner_zip(d).read_bytes()
    return write_zip(d / "outer.zip", [("part 1.zip", inner), ("part 2.zip", inner), ("README.txt", b"hi")])


NESTED: dict[str, tuple[Callable[[Path], Path], str]] = {
    # name: (builder, what the message must say, with {d} for the folder the source is in)
    "zip_in_zip": (zip_in_zip, "{d}/outer.zip: the archive holds only another archive, 'inner.zip', and no dataset "
                   "(no .xml annotation, no image): unpack it and ingest the inner archive (`unzip {d}/outer.zip`, "
                   "then `visapp ingest inner.zip`)"),
    "tgz_in_zip": (tgz_in_zip, "holds only another archive, 'inner.tar.gz', and no dataset (no .xml annotation, "
                   "no image): unpack it and ingest the inner archive (`unzip {d}/outer.zip`, then `visapp ingest "
                   "inner.tar.gz`)"),
    "zip_in_tgz": (zip_in_tgz, "holds only another archive, 'inner.zip', and no dataset (no .xml annotation, no "
                   "image): unpack it and ingest the inner archive (`tar -xf {d}/outer.tgz`, then `visapp ingest "
                   "inner.zip`)"),
    "zip_in_folder": (zip_in_folder, "{d}/outer: the folder holds only an archive, 'inner.zip', and no dataset "
                      "(no .xml annotation, no image): ingest the archive itself "
                      "(`visapp ingest {d}/outer/inner.zip`)"),
    "7z_in_zip": (seven_zip_in_zip, "holds only another archive, 'inner.7z', and no dataset (no .xml annotation, "
                  "no image): unpack it and then the inner archive (`unzip {d}/outer.zip`, then unpack inner.7z "
                  "with its archiver, e.g. 7-Zip), then ingest the folder that holds the dataset"),
    "two_zips_in_zip": (two_zips_in_zip, "holds 2 archives ('part 1.zip', 'part 2.zip') and no dataset (no .xml "
                        "annotation, no image): unpack it and ingest them one at a time (`unzip {d}/outer.zip`, then "
                        "`visapp ingest 'part 1.zip'`, then `visapp ingest ARCHIVE --mode append` for each other one)"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(NESTED))
def test_a_source_holding_only_another_archive_is_refused_with_how_to_unpack_it(name: str, tmp_path: Path):
    builder, words = NESTED[name]
    src = Source(builder(tmp_path), ArchiveLimits())
    try:
        with pytest.raises(ArchiveRefused) as caught:
            src.find_root()
    finally:
        src.close()
    assert caught.value.code == "nested_archive"
    assert words.format(d=tmp_path) in str(caught.value), str(caught.value)


def test_an_archive_beside_a_dataset_is_only_a_file_outside_it(tmp_path: Path):
    folder = voc_source(tmp_path / "src")
    (folder / "backup.zip").write_bytes(inner_zip(tmp_path).read_bytes())
    for kind in ("zip", "folder"):
        src = Source(pack(folder, kind), ArchiveLimits())
        assert src.find_root() == "ds" and "backup.zip" in src.files
        src.close()

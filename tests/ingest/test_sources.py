"""The pure parts of `visapp ingest`: where the dataset is in a source, and how an append merges into the current
dataset (folder spellings, layouts, ImageSets lists). Plain files in a temporary folder; no git, no DVC."""

from __future__ import annotations

from pathlib import Path

import pytest

from visapp.errors import VisError
from visapp.ingest.merge import merge, merged_list
from visapp.ingest.sources import choose_voc_root, find_voc_root

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------- finding the dataset


@pytest.mark.parametrize(
    ("paths", "root"),
    [
        (["Annotations/a.xml", "JPEGImages/a.jpg"], ""),
        (["MyExport/Annotations/a.xml", "MyExport/JPEGImages/a.jpg", "README.txt"], "MyExport"),
        (["VOCdevkit/VOC2007/annotations/a.xml", "VOCdevkit/VOC2007/JPEGIMAGES/a.jpg"], "VOCdevkit/VOC2007"),
        (["x/y/annotations/a.xml", "x/y/images/a.png"], "x/y"),
        (["export/a.xml", "export/a.jpg", "export/sub/b.xml", "export/sub/b.png"], "export"),
        (["a.xml", "a.jpg"], ""),
        (["top/JPEGImages/a.jpg"], "top"),  # background images only
        (["d/Annotations/a.xml", "d/JPEGImages/a.jpg", "d/extra/Annotations/b.xml"], "d"),
    ],
)
def test_find_voc_root_finds_the_dataset_folder(paths: list[str], root: str):
    assert find_voc_root(paths, "src.zip") == root


def test_find_voc_root_refuses_two_datasets_side_by_side():
    with pytest.raises(VisError, match=r"several VOC datasets.*'VOC2007', 'VOC2012'"):
        find_voc_root(["VOC2007/Annotations/a.xml", "VOC2012/Annotations/a.xml"], "src.zip")


def test_find_voc_root_refuses_a_source_without_xml_or_image():
    with pytest.raises(VisError, match=r"no VOC dataset in src\.zip"):
        find_voc_root(["docs/readme.txt", "docs/labels.csv"], "src.zip")


# ---------------------------------------------------------------- appending: folders and ImageSets lists


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_merged_list_adds_only_ids_the_current_list_lacks_by_validations_rules():
    current = "# exported by a tool\n000001\ndog#1\n"
    incoming = "000001.jpg\r\nJPEGImages/dog#1.png\r\n# a comment\r\n\r\ncafe\u0301\r\ncaf\u00e9\r\n000002 1\r\n"
    assert merged_list(current, incoming) == "# exported by a tool\n000001\ndog#1\ncafe\u0301\n000002 1\n"


def test_an_append_merges_lists_and_takes_the_current_folder_spellings(tmp_path):
    target = write_files(
        tmp_path / "raw",
        {"Annotations/a.xml": b"<a/>", "JPEGImages/a.jpg": b"A", "ImageSets/Main/train.txt": b"a\n"},
    )
    incoming = write_files(
        tmp_path / "new",
        {"xml/b.xml": b"<b/>", "images/b.jpg": b"B", "ImageSets/Main/train.txt": b"\xef\xbb\xbfa.jpg\nb\n"},
    )
    assert merge(incoming, target, "new.zip", "", "data/raw") == (2, 1)
    assert files_under(target) == {
        "Annotations/a.xml": b"<a/>",
        "Annotations/b.xml": b"<b/>",
        "ImageSets/Main/train.txt": b"a\nb\n",
        "JPEGImages/a.jpg": b"A",
        "JPEGImages/b.jpg": b"B",
    }


def test_a_list_that_is_not_utf8_refuses_the_append_before_anything_moves(tmp_path):
    target = write_files(tmp_path / "raw", {"JPEGImages/a.jpg": b"A", "ImageSets/Main/train.txt": b"a\n"})
    incoming = write_files(tmp_path / "new", {"JPEGImages/b.jpg": b"B", "ImageSets/Main/train.txt": b"se\xf1al\n"})
    before = files_under(target)
    with pytest.raises(VisError, match=r"ImageSets/Main/train.txt \(in new.zip\).*0xF1 is not UTF-8.*iconv"):
        merge(incoming, target, "new.zip", "", "data/raw")
    assert files_under(target) == before


def test_an_append_of_another_layout_is_refused(tmp_path):
    target = write_files(tmp_path / "raw", {"Annotations/a.xml": b"<a/>", "JPEGImages/a.jpg": b"A"})
    incoming = write_files(tmp_path / "new", {"b.xml": b"<b/>", "b.jpg": b"B"})
    with pytest.raises(VisError, match=r"it uses the flat layout.*data/raw uses Annotations/"):
        merge(incoming, target, "new.zip", "", "data/raw")


@pytest.mark.parametrize(
    ("paths", "root", "note"),
    [
        # Annotations in one folder, their images in another (as a VOC2012 subset was zipped): the annotations'
        # folder is taken, and the note says where the images are.
        (["VOC2012/Annotations/a.xml", "VOC2012/ImageSets/Main/train.txt", "images/JPEGImages/a.jpg"], "VOC2012",
         "holds 1 annotation(s) and no image; 1 image(s) outside it were left out: 'images/JPEGImages/' (1)"),
        (["VOC2012/Annotations/a.xml", "VOC2012/Annotations/b.xml", "JPEGImages/a.jpg", "JPEGImages/b.jpg"],
         "VOC2012", "2 image(s) outside it were left out: 'JPEGImages/' (2)"),
        # A folder that pairs annotations with images wins over a shallower or another one that does not.
        (["d/Annotations/a.xml", "d/JPEGImages/a.jpg", "e/Annotations/b.xml", "e/Annotations/c.xml"], "d",
         "2 annotation(s) outside the folder taken, 'd/', were left out (more than the folder taken holds)"),
        (["x/JPEGImages/z.jpg", "x/y/Annotations/a.xml", "x/y/JPEGImages/a.jpg"], "x/y",
         "1 image(s) outside it were left out: 'x/JPEGImages/' (1)"),
    ],
)  # fmt: skip
def test_the_folder_taken_prefers_one_that_pairs_annotations_with_images_and_notes_what_is_left_out(paths, root, note):
    choice = choose_voc_root(paths, "src.zip")
    assert choice.root == root
    assert any(note in line for line in choice.notes), choice.notes


def test_a_dataset_in_one_folder_leaves_no_note():
    assert choose_voc_root(["MyExport/Annotations/a.xml", "MyExport/JPEGImages/a.jpg"], "src.zip").notes == []

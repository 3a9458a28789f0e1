"""visapp.formats.voc: tolerant parsing of untidy VOC XML, refusal of unsafe XML, layouts and pairing, ImageSets."""

from __future__ import annotations

import codecs
import unicodedata

import pytest

from factory import (
    BILLION_LAUGHS,
    DTD_ONLY,
    EXTERNAL_ENTITY,
    Obj,
    annotation_xml,
    image_bytes,
    write_image_sets,
    write_sample,
)
from visapp.formats.voc import AnnotationError, base_name, parse_annotation
from visapp.formats.voc_ids import sample_id
from visapp.formats.voc_image_sets import read_image_sets
from visapp.formats.voc_layout import SampleFiles, discover_samples

pytestmark = pytest.mark.unit

# ---------------------------------------------------------------- parse_annotation


def test_parses_a_tidy_annotation():
    ann = parse_annotation(annotation_xml("x.jpg", (64, 48), [Obj("circle", (1, 2, 30, 40), difficult=1)]))
    assert (ann.filename, ann.width, ann.height) == ("x.jpg", 64, 48)
    [obj] = ann.objects
    assert (obj.name, obj.difficult, obj.truncated) == ("circle", True, False)
    assert obj.bndbox == {"xmin": 1.0, "ymin": 2.0, "xmax": 30.0, "ymax": 40.0}


def test_float_coordinates_are_kept_as_floats():
    [obj] = parse_annotation(annotation_xml(objects=[Obj(box=("254.38", "10.5", "300.01", "99.99"))])).objects
    assert obj.bndbox == {"xmin": 254.38, "ymin": 10.5, "xmax": 300.01, "ymax": 99.99}


def test_bndbox_children_in_another_order():
    xml = annotation_xml(objects=[Obj(box=(1, 2, 3, 4), order=("ymax", "xmin", "xmax", "ymin"))])
    assert b"<bndbox><ymax>4</ymax><xmin>1</xmin>" in xml
    assert parse_annotation(xml).objects[0].bndbox == {"xmin": 1.0, "ymin": 2.0, "xmax": 3.0, "ymax": 4.0}


def test_empty_difficult_truncated_and_pose_read_as_unset():
    xml = annotation_xml(objects=[Obj(difficult="", truncated="", pose="")])
    assert b"<difficult/>" in xml and b"<truncated/>" in xml and b"<pose/>" in xml
    [obj] = parse_annotation(xml).objects
    assert (obj.difficult, obj.truncated) == (False, False)


def test_missing_optional_elements_are_fine():
    xml = b"<annotation><object><name>circle</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>" + (
        b"<ymax>5</ymax></bndbox></object></annotation>"
    )  # no declaration, <filename>, <size>, <source>, <pose>, <truncated>, <difficult>
    ann = parse_annotation(xml)
    assert (ann.filename, ann.width, ann.height) == (None, None, None)
    assert ann.objects[0].name == "circle" and not ann.objects[0].difficult


@pytest.mark.parametrize("size", [(0, 0), None, ("", ""), ("abc", 48), (64, 0)])
def test_size_zero_absent_or_garbage_reads_as_unknown(size):
    ann = parse_annotation(annotation_xml(size=size))
    assert ann.width is None or ann.height is None


def test_size_written_as_float_reads_as_int():
    ann = parse_annotation(annotation_xml(size=("64.0", "48")))
    assert (ann.width, ann.height) == (64, 48)


def test_part_actions_and_point_are_ignored():
    extra = (
        "<part><name>hand</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></part>"
        "<actions><jumping>1</jumping></actions><point><x>3</x><y>4</y></point>"
    )
    ann = parse_annotation(annotation_xml(objects=[Obj("person", (5, 6, 7, 8), extra=extra)]))
    assert [(o.name, o.bndbox["xmin"]) for o in ann.objects] == [("person", 5.0)]


def test_without_xml_declaration():
    assert parse_annotation(annotation_xml(declaration=False)).filename == "a.jpg"


def test_non_numeric_and_missing_coordinates_are_kept_for_the_validator():
    [obj] = parse_annotation(annotation_xml(objects=[Obj(box=("1", "abc", None, "nan"))])).objects
    assert obj.bndbox == {"xmin": 1.0, "ymin": "abc", "ymax": "nan"}


def test_object_without_bndbox_has_an_empty_box():
    assert parse_annotation(annotation_xml(objects=[Obj(box=None)])).objects[0].bndbox == {}


def _refused(data: bytes) -> AnnotationError:
    with pytest.raises(AnnotationError) as caught:
        parse_annotation(data)
    return caught.value


def test_entity_expansion_bomb_is_refused_as_unsafe():
    error = _refused(BILLION_LAUGHS)
    assert error.code == "xml_unsafe" and "entit" in error.message


def test_external_entity_is_refused_as_unsafe():
    error = _refused(EXTERNAL_ENTITY)
    assert error.code == "xml_unsafe" and "external" in error.message


def test_a_bare_dtd_is_refused_as_unsafe():
    assert _refused(DTD_ONLY).code == "xml_unsafe"


@pytest.mark.parametrize(
    "data",
    [b"", b"<annotation><object>", b"not xml at all", b"\xff\xfe\x00<", b"<?xml version='1.0' encoding='nope'?><a/>"],
)
def test_not_well_formed_xml_is_malformed(data):
    assert _refused(data).code == "xml_malformed"


def test_root_other_than_annotation_is_malformed():
    error = _refused(annotation_xml(root="annotations"))
    assert error.code == "xml_malformed" and "<annotations>" in error.message


# ---------------------------------------------------------------- discover_samples


def test_standard_layout_pairs_by_stem(tmp_path):
    write_sample(tmp_path, "000002")
    write_sample(tmp_path, "000001", fmt="png", image_ext=".jpg")  # PNG named .jpg is still an image
    write_image_sets(tmp_path, {"train": ["000001"]})
    assert discover_samples(tmp_path) == [
        SampleFiles("JPEGImages/000001.jpg", "Annotations/000001.xml"),
        SampleFiles("JPEGImages/000002.jpg", "Annotations/000002.xml"),
    ]


def test_lower_case_annotations_and_images_layout(tmp_path):
    write_sample(tmp_path, "a", image_dir="images", ann_dir="annotations", fmt="png")
    write_sample(tmp_path, "b", image_dir="images", ann_dir="annotations", fmt="webp")
    assert discover_samples(tmp_path) == [
        SampleFiles("images/a.png", "annotations/a.xml"),
        SampleFiles("images/b.webp", "annotations/b.xml"),
    ]


def test_folder_names_match_without_regard_to_case(tmp_path):
    write_sample(tmp_path, "a", image_dir="JpegImages", ann_dir="ANNOTATIONS")
    assert discover_samples(tmp_path) == [SampleFiles("JpegImages/a.jpg", "ANNOTATIONS/a.xml")]


def test_flat_layout_with_nested_folders(tmp_path):
    write_sample(tmp_path, "top", image_dir="", ann_dir="")
    write_sample(tmp_path, "sub/a", image_dir="", ann_dir="", fmt="bmp")
    write_sample(tmp_path, "sub/deeper/a", image_dir="", ann_dir="", fmt="png")  # same stem, other folder
    assert discover_samples(tmp_path) == [
        SampleFiles("sub/a.bmp", "sub/a.xml"),
        SampleFiles("sub/deeper/a.png", "sub/deeper/a.xml"),
        SampleFiles("top.jpg", "top.xml"),
    ]


def test_stem_match_comes_before_filename_match(tmp_path):
    # a.xml's <filename> names b.jpg, but a.jpg exists: the stem wins; b.xml still gets b.jpg.
    write_sample(tmp_path, "a", filename="b.jpg")
    write_sample(tmp_path, "b")
    assert discover_samples(tmp_path) == [
        SampleFiles("JPEGImages/a.jpg", "Annotations/a.xml"),
        SampleFiles("JPEGImages/b.jpg", "Annotations/b.xml"),
    ]


def test_filename_match_when_the_stems_differ(tmp_path):
    write_sample(tmp_path, "ann_0001", with_image=False, filename="IMG_0001.jpg")
    write_sample(tmp_path, "IMG_0001", with_annotation=False)
    assert discover_samples(tmp_path) == [SampleFiles("JPEGImages/IMG_0001.jpg", "Annotations/ann_0001.xml")]


def test_filename_decides_between_two_images_with_one_stem(tmp_path):
    write_sample(tmp_path, "a", fmt="png", filename="a.png")
    write_sample(tmp_path, "a", with_annotation=False)  # a.jpg beside a.png
    assert discover_samples(tmp_path) == [
        SampleFiles("JPEGImages/a.jpg", None),
        SampleFiles("JPEGImages/a.png", "Annotations/a.xml"),
    ]


def test_unpaired_files_are_listed_alone(tmp_path):
    write_sample(tmp_path, "only_image", with_annotation=False)
    write_sample(tmp_path, "only_xml", with_image=False)
    assert discover_samples(tmp_path) == [
        SampleFiles(None, "Annotations/only_xml.xml"),
        SampleFiles("JPEGImages/only_image.jpg", None),
    ]


def test_hidden_files_imagesets_and_non_images_are_skipped(tmp_path):
    write_sample(tmp_path, "a")
    write_image_sets(tmp_path, {"train": ["a"]})
    (tmp_path / "JPEGImages" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "JPEGImages" / "notes.txt").write_text("not an image")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "b.jpg").write_bytes(image_bytes())
    assert discover_samples(tmp_path) == [SampleFiles("JPEGImages/a.jpg", "Annotations/a.xml")]


def test_an_image_with_an_odd_extension_is_found_by_its_bytes(tmp_path):
    write_sample(tmp_path, "a", image_ext=".img")
    assert discover_samples(tmp_path) == [SampleFiles("JPEGImages/a.img", "Annotations/a.xml")]


# ---------------------------------------------------------------- read_image_sets


def test_image_sets_with_comments_and_blank_lines(tmp_path):
    write_image_sets(
        tmp_path, {"train": ["# a comment", "000001", "  ", "dog#1", "  # indented comment"], "val": ["000003"]}
    )
    assert ids(read_image_sets(tmp_path)) == {"train": {"000001", "dog#1"}, "val": {"000003"}}


def ids(image_sets) -> dict[str, set[str]]:
    return {split: set(image_set.ids) for split, image_set in image_sets.items()}


def test_image_sets_absent_is_empty(tmp_path):
    assert read_image_sets(tmp_path) == {}


def test_special_files_and_folder_links_are_not_followed(tmp_path):
    import os

    write_sample(tmp_path, "a")
    os.mkfifo(tmp_path / "JPEGImages" / "pipe.jpg")  # reading it would block forever
    (tmp_path / "JPEGImages" / "loop").symlink_to(tmp_path / "JPEGImages")
    assert discover_samples(tmp_path) == [SampleFiles("JPEGImages/a.jpg", "Annotations/a.xml")]


@pytest.mark.parametrize(
    ("relpath", "expected"),
    [
        ("JPEGImages/000001.jpg", "000001"),
        ("jpegimages/a.JPG", "a"),
        ("images/sub/b.png", "sub/b"),
        ("Images/c.jpeg", "c"),
        ("sub/a.png", "sub/a"),
        ("a.b.jpg", "a.b"),
        ("JPEGImages/noext", "noext"),
        ("photos/JPEGImages/x.jpg", "photos/JPEGImages/x"),
    ],
)
def test_sample_id_strips_extension_and_leading_image_folder(relpath, expected):
    assert sample_id(relpath) == expected


# ---------------------------------------------------------------- real-world exports: tags, encodings, numbers


@pytest.mark.parametrize(
    ("root", "tag"), [("Annotation", "Object"), ("ANNOTATION", "OBJECT"), ("annotation", "oBjEcT")]
)
def test_every_voc_tag_is_matched_without_regard_to_case(root, tag):
    xml = annotation_xml(objects=[Obj("circle"), Obj("square")], root=root).replace(b"object>", tag.encode() + b">")
    ann = parse_annotation(xml)
    assert [obj.name for obj in ann.objects] == ["circle", "square"]


def test_a_namespaced_annotation_is_read():
    xml = b'<annotation xmlns="http://example.invalid/voc"><object><name>circle</name></object></annotation>'
    assert [obj.name for obj in parse_annotation(xml).objects] == ["circle"]


@pytest.mark.parametrize("encoding", ["GBK", "GB18030", "Big5", "Shift_JIS", "EUC-JP", "EUC-KR", "windows-1252"])
def test_an_annotation_in_any_declared_encoding_is_decoded(encoding):
    name = "Señal" if encoding == "windows-1252" else {"Big5": "貓", "EUC-KR": "고양이"}.get(encoding, "猫")
    text = f'<?xml version="1.0" encoding="{encoding}"?><annotation><filename>{name}.jpg</filename>'
    text += f"<object><name>{name}</name></object></annotation>"
    ann = parse_annotation(text.encode(encoding))
    assert (ann.filename, [obj.name for obj in ann.objects]) == (f"{name}.jpg", [name])


@pytest.mark.parametrize(
    ("codec", "declared", "bom"),
    [
        ("utf-8", "utf8", b""),  # what ElementTree writes for tree.write(f, encoding="utf8")
        ("utf-8", "UTF8", codecs.BOM_UTF8),
        ("utf-8", "utf_8", b""),
        ("utf-16-le", "utf16", codecs.BOM_UTF16_LE),
        ("utf-16-be", "utf16", codecs.BOM_UTF16_BE),
        ("utf-16-le", "UTF-16", codecs.BOM_UTF16_LE),
        ("utf-16-le", None, codecs.BOM_UTF16_LE),
        ("latin-1", "latin1", b""),
    ],
)
def test_an_annotation_declared_by_an_alias_expat_lacks_is_read(codec, declared, bom):
    """Expat knows `UTF-8`, not Python's `utf8`: it would stop at the first non-ASCII character."""
    head = "" if declared is None else f'<?xml version="1.0" encoding="{declared}"?>'
    text = f"{head}<annotation><filename>café.jpg</filename><object><name>café</name></object></annotation>"
    ann = parse_annotation(bom + text.encode(codec))
    assert (ann.filename, [obj.name for obj in ann.objects]) == ("café.jpg", ["café"])


def test_an_unknown_declared_encoding_names_it_and_how_to_re_encode():
    with pytest.raises(AnnotationError) as caught:
        parse_annotation(b'<?xml version="1.0" encoding="klingon"?><annotation/>')
    assert caught.value.code == "xml_malformed"
    assert "'klingon'" in caught.value.message and "iconv" in caught.value.message


def test_bytes_invalid_in_the_declared_encoding_are_located():
    with pytest.raises(AnnotationError) as caught:
        parse_annotation(b'<?xml version="1.0" encoding="GBK"?>\n<annotation><name>\xff\xff</name></annotation>')
    assert "0xFF on line 2" in caught.value.message and "'GBK'" in caught.value.message


def test_a_code_page_file_without_a_declaration_says_it_is_not_utf8():
    with pytest.raises(AnnotationError) as caught:
        parse_annotation("<annotation>\n<filename>Señal.jpg</filename></annotation>".encode("cp1252"))
    assert caught.value.code == "xml_malformed"
    assert "not UTF-8 (byte 0xF1 on line 2)" in caught.value.message and "iconv" in caught.value.message


@pytest.mark.parametrize("text", ["1_000", "\u0661\u0662", "\uff11\uff12", "nan", "inf", "0x10", "1,5", "12px", "1e"])
def test_a_coordinate_only_python_would_read_is_kept_as_text(text):
    [obj] = parse_annotation(annotation_xml(objects=[Obj(box=(text, 1, 30, 20))])).objects
    assert obj.bndbox["xmin"] == text


@pytest.mark.parametrize(("text", "value"), [("12", 12.0), ("-.5", -0.5), ("5.", 5.0), ("1.5e1", 15.0), ("+3", 3.0)])
def test_a_coordinate_as_voc_tools_write_it_is_a_number(text, value):
    [obj] = parse_annotation(annotation_xml(objects=[Obj(box=(text, 1, 30, 20))])).objects
    assert obj.bndbox["xmin"] == value


@pytest.mark.parametrize(
    "filename", ["C:\\Users\\me\\data\\IMG_0001.jpg", "/home/me/data/IMG_0001.jpg", "IMG_0001.jpg"]
)
def test_base_name_takes_the_name_from_windows_and_posix_paths(filename):
    assert base_name(filename) == "IMG_0001.jpg"


# ---------------------------------------------------------------- real-world exports: pairing


def test_nfc_and_nfd_spellings_of_one_name_pair(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    write_sample(tmp_path, nfc, with_annotation=False)
    write_sample(tmp_path, nfd, with_image=False)
    assert discover_samples(tmp_path) == [SampleFiles(f"JPEGImages/{nfc}.jpg", f"Annotations/{nfd}.xml")]


def test_names_that_differ_in_letter_case_pair_when_nothing_matches_exactly(tmp_path):
    write_sample(tmp_path, "IMG_0001", with_annotation=False, image_ext=".JPG")
    write_sample(tmp_path, "img_0001", with_image=False)
    write_sample(tmp_path, "b")  # exact pairs are unaffected
    assert discover_samples(tmp_path) == [
        SampleFiles("JPEGImages/IMG_0001.JPG", "Annotations/img_0001.xml"),
        SampleFiles("JPEGImages/b.jpg", "Annotations/b.xml"),
    ]


def test_a_windows_path_in_filename_pairs_by_its_base_name(tmp_path):
    write_sample(tmp_path, "IMG_0001", with_annotation=False)
    write_sample(tmp_path, "export_17", with_image=False, filename="C:\\Users\\me\\Pictures\\IMG_0001.jpg")
    assert discover_samples(tmp_path) == [SampleFiles("JPEGImages/IMG_0001.jpg", "Annotations/export_17.xml")]


@pytest.mark.parametrize("ann_dir", ["labels", "Annotation", "xml"])
def test_common_annotation_folder_names_make_the_paired_layout(tmp_path, ann_dir):
    write_sample(tmp_path, "a", image_dir="images", ann_dir=ann_dir)
    write_sample(tmp_path, "b", image_dir="images", ann_dir=ann_dir)
    assert discover_samples(tmp_path) == [
        SampleFiles("images/a.jpg", f"{ann_dir}/a.xml"),
        SampleFiles("images/b.jpg", f"{ann_dir}/b.xml"),
    ]


def test_a_labels_folder_of_yolo_text_files_is_not_an_annotation_folder(tmp_path):
    write_sample(tmp_path, "a", image_dir="images", with_annotation=False)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert discover_samples(tmp_path) == [SampleFiles("images/a.jpg", None)]


def test_two_annotations_with_one_image_name_are_rivals(tmp_path):
    write_sample(tmp_path, "a")
    (tmp_path / "Annotations" / "A.xml").write_bytes(annotation_xml("a.jpg"))
    assert discover_samples(tmp_path) == [
        SampleFiles("JPEGImages/a.jpg", "Annotations/a.xml", rivals=("Annotations/A.xml",))
    ]


def test_an_annotation_whose_filename_names_a_paired_image_is_its_rival(tmp_path):
    write_sample(tmp_path, "a")
    write_sample(tmp_path, "a_copy", with_image=False, filename="a.jpg")
    assert discover_samples(tmp_path) == [
        SampleFiles("JPEGImages/a.jpg", "Annotations/a.xml", rivals=("Annotations/a_copy.xml",))
    ]


@pytest.mark.parametrize(
    ("image_stem", "filename"),
    [
        ("IMG_0001 (1)", "IMG_0001.jpg"),
        ("img-0001", "IMG_0001.jpg"),
        ("IMG_0001 - Copy", "IMG_0001.jpg"),
        ("IMG_0001", "frame.jpg"),  # a stale <filename>
        ("photo", "photo.jpg"),  # <filename> names it, the name does not
    ],
)
def test_an_unpaired_annotation_and_a_look_alike_image_name_each_other(tmp_path, image_stem, filename):
    """Flat layout, image and XML in different folders: they cannot pair, and neither may pass silently."""
    write_sample(tmp_path, f"pictures/{image_stem}", with_annotation=False, image_dir="")
    write_sample(tmp_path, "notes/IMG_0001", with_image=False, filename=filename, ann_dir="")
    image, xml = f"pictures/{image_stem}.jpg", "notes/IMG_0001.xml"
    samples = {(s.image, s.annotation): s.hint for s in discover_samples(tmp_path)}
    assert set(samples) == {(image, None), (None, xml)}
    assert xml in samples[(image, None)] and image in samples[(None, xml)]


def test_every_look_alike_image_of_a_lone_annotation_is_told(tmp_path):
    """`IMG_0001 (1).jpg` and `img-0001.jpg` beside `IMG_0001.xml`: either may hold its objects, so neither may
    be a silent background."""
    write_sample(tmp_path, "IMG_0001 (1)", with_annotation=False)
    write_sample(tmp_path, "img-0001", with_annotation=False)
    write_sample(tmp_path, "IMG_0001", with_image=False, filename="frame.jpg")
    hints = {(s.image, s.annotation): s.hint for s in discover_samples(tmp_path)}
    xml, first, second = "Annotations/IMG_0001.xml", "JPEGImages/IMG_0001 (1).jpg", "JPEGImages/img-0001.jpg"
    assert set(hints) == {(None, xml), (first, None), (second, None)}
    assert xml in hints[(first, None)] and xml in hints[(second, None)]
    assert f"{first} and {second} look like its image" in hints[(None, xml)]


def test_an_annotation_named_in_a_code_page_looks_like_its_utf8_image(tmp_path):
    """unzip left the annotation's Windows-1252 name (`Se\\xf1al.xml`); the image's is UTF-8 (`Señal.jpg`)."""
    import os

    write_sample(tmp_path, "Señal", with_annotation=False)
    write_sample(tmp_path, "x", with_image=False, filename="other.jpg")
    (tmp_path / "Annotations" / "x.xml").rename(tmp_path / "Annotations" / os.fsdecode(b"Se\xf1al.xml"))
    hints = {(s.image, s.annotation): s.hint for s in discover_samples(tmp_path)}
    assert "Señal.jpg looks like its image" in hints[(None, os.fsdecode(b"Annotations/Se\xf1al.xml"))]
    assert hints[("JPEGImages/Señal.jpg", None)] is not None


def test_names_without_letters_or_digits_look_like_their_own_kind_only(tmp_path):
    write_sample(tmp_path, "🙂 (1)", with_annotation=False)
    write_sample(tmp_path, "🐶", with_annotation=False)
    write_sample(tmp_path, "🙂", with_image=False, filename="other.jpg")
    hints = {s.image: s.hint for s in discover_samples(tmp_path) if s.image}
    assert hints == {"JPEGImages/🙂 (1).jpg": hints["JPEGImages/🙂 (1).jpg"], "JPEGImages/🐶.jpg": None}
    assert "Annotations/🙂.xml looks like its annotation" in hints["JPEGImages/🙂 (1).jpg"]


def test_two_leftover_annotations_whose_filename_names_one_image_are_rivals(tmp_path):
    write_sample(tmp_path, "photo", with_annotation=False)
    write_sample(tmp_path, "export_1", with_image=False, filename="photo.jpg")
    write_sample(tmp_path, "export_2", with_image=False, filename=r"C:\\data\\photo.jpg")
    assert discover_samples(tmp_path) == [
        SampleFiles("JPEGImages/photo.jpg", "Annotations/export_1.xml", rivals=("Annotations/export_2.xml",))
    ]


def test_unrelated_lone_files_carry_no_hint(tmp_path):
    write_sample(tmp_path, "only_xml", with_image=False)
    write_sample(tmp_path, "only_image", with_annotation=False)
    assert all(sample.hint is None for sample in discover_samples(tmp_path))


# ---------------------------------------------------------------- real-world exports: ImageSets


def test_image_sets_take_off_a_bom_and_crlf_and_extensions(tmp_path):
    folder = tmp_path / "ImageSets" / "Main"
    folder.mkdir(parents=True)
    (folder / "train.txt").write_bytes(b"\xef\xbb\xbf000001\r\n000002.jpg\r\nJPEGImages/000003.png\r\nimg.v2\r\n")
    (folder / "val.txt").write_bytes(b"000004 -1\n000005  1\n")  # a VOC class list: id and a flag
    assert ids(read_image_sets(tmp_path)) == {
        "train": {"000001", "000002", "000003", "img.v2"},
        "val": {"000004", "000005"},
    }


def test_image_set_ids_are_read_in_nfc(tmp_path):
    write_image_sets(tmp_path, {"train": [unicodedata.normalize("NFD", "café")]})
    assert ids(read_image_sets(tmp_path)) == {"train": {unicodedata.normalize("NFC", "café")}}

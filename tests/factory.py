"""Test helper: craft Pascal VOC samples (XML + image bytes), tidy or broken, on disk or in memory, and the
params the library takes (from conf/, the one source of defaults).

Usage from a test (tests/ is on sys.path under pytest's default rootdir-based import mode):

    from factory import Obj, annotation_xml, data_config, image_bytes, write_sample

    write_sample(raw, "000001", objects=[Obj("circle", (10, 10, 40, 30))])          # standard layout
    write_sample(raw, "a", image_dir="images", ann_dir="annotations", fmt="png")     # lower-case pair
    write_sample(raw, "sub/b", image_dir="", ann_dir="", fmt="bmp")                 # flat, nested
    write_sample(raw, "c", image=truncated_jpeg())                                   # any image bytes
    write_sample(raw, "d", xml=BILLION_LAUGHS)                                       # any XML bytes
    write_sample(raw, "e", fmt="png", image_ext=".jpg")                              # a PNG named .jpg
    write_sample(raw, "f", exif_orientation=6, size=(48, 64))                        # EXIF, rotated <size>
    write_sample(raw, "g", size=None, objects=[Obj(box=("1.5", 2, 30, 20), difficult="")])  # untidy VOC
    write_image_sets(raw, {"train": ["000001"], "val": ["a"]})                        # with a # comment line
    write_tree(src, {"Annotations/a.xml": xml, "JPEGImages/a.jpg": jpeg})            # any files
    write_zip(tmp_path / "a.zip", {"a.xml": xml}, top="Export/")                     # any entries, zipped
    (root / "conf" / "train" / "cpu_small.yaml").write_text(TINY_TRAIN)              # a seconds-long training

Every writer is deterministic: the same arguments give the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from visapp.composition import default_params
from visapp.config import DataConfig, Params, SplitConfig
from visapp.dataset.synthetic import CLASSES
from visapp.dataset.validate import validate_dataset
from visapp.formats.image_formats import FORMAT_SUFFIX
from visapp.formats.manifest import ManifestObject, ManifestRow
from visapp.formats.manifest import write_manifest as write_rows
from visapp.formats.voc_image_sets import image_set_text


def params(**sections) -> Params:
    """conf/'s params, checked, with whole sections replaced: `params(data=data_config(on_error="skip"))`."""
    return dataclasses.replace(default_params(), **sections)


def data_config(split: SplitConfig | tuple[float, float, float] | None = None, **changes) -> DataConfig:
    """conf/'s data section with some values changed: `data_config(classes=["a", "b"], allow_background=False)`."""
    if isinstance(split, tuple):
        split = SplitConfig(*split)
    if split is not None:
        changes["split"] = split
    return dataclasses.replace(default_params().data, **changes)


DATA = data_config(classes=list(CLASSES))  # the built-in sample's classes
MAX_PIXELS = DATA.max_image_pixels  # data.max_image_pixels as conf/ sets it


# ---------------------------------------------------------------- manifest rows (through the library's writer)


def voc_manifest(raw_dir: Path) -> list[ManifestRow]:
    """The manifest rows the validate stage writes for a VOC folder such as `visapp sample`'s."""
    result = validate_dataset(raw_dir, DATA)
    assert result.report["rejected"] == 0
    return result.rows


def write_manifest(path: Path, rows: list[ManifestRow]) -> Path:
    write_rows(path, sorted(rows, key=lambda row: row.image))
    return path


def row(ident: str, *objects: ManifestObject, sha: str | None = None, split: str | None = None, **fields):
    """A manifest row for an image that convert never opens (convert reads only the manifest)."""
    base = {
        "id": ident,
        "image": f"JPEGImages/{ident}.jpg",
        "annotation": f"Annotations/{ident}.xml",
        "sha256": sha or hashlib.sha256(ident.encode()).hexdigest(),
        "format": "jpeg",
        "width": 100,
        "height": 50,
        "orientation": 1,
        "boxes_frame": "stored",
        "split": split,
        "objects": list(objects),
    }
    return ManifestRow(**{**base, **fields})


def obj(name="circle", xmin=11.0, ymin=6.0, xmax=51.0, ymax=26.0, difficult=False) -> ManifestObject:
    class_id = CLASSES.index(name) if name in CLASSES else 99
    return ManifestObject(name, class_id, xmin, ymin, xmax, ymax, difficult, False)


# A value of None leaves the element out; "" writes an empty element (`<difficult/>`).
Value = str | int | float | None
AUTO = "auto"  # write_sample's default <size>: the image's size
BOX_ORDER = ("xmin", "ymin", "xmax", "ymax")
PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "webp": "WEBP"}
SUFFIX = FORMAT_SUFFIX

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><filename>&lol9;</filename></annotation>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><filename>&xxe;</filename></annotation>
"""

# A bare DTD, with no entity in it: still refused.
DTD_ONLY = b"""<?xml version="1.0"?>
<!DOCTYPE annotation SYSTEM "voc.dtd">
<annotation><filename>a.jpg</filename></annotation>
"""


@dataclass
class Obj:
    """One `<object>`. box values are written as given (str for garbage, None to leave one out);
    box=None leaves `<bndbox>` out. `order` is the order of the `<bndbox>` children. `extra` is raw XML
    appended inside `<object>` (e.g. `<part>...</part>`)."""

    name: str | None = "circle"
    box: Sequence[Value] | None = (10, 10, 40, 30)
    difficult: Value = 0
    truncated: Value = 0
    pose: Value = "Unspecified"
    order: Sequence[str] = BOX_ORDER
    extra: str = ""


def _element(tag: str, value: Value) -> str:
    if value is None:
        return ""
    return f"<{tag}/>" if value == "" else f"<{tag}>{value}</{tag}>"


def object_xml(obj: Obj) -> str:
    parts = [_element("name", obj.name), _element("pose", obj.pose), _element("truncated", obj.truncated)]
    parts.append(_element("difficult", obj.difficult))
    if obj.box is not None:
        values = dict(zip(BOX_ORDER, obj.box, strict=True))
        parts.append("<bndbox>" + "".join(_element(key, values[key]) for key in obj.order) + "</bndbox>")
    return "<object>" + "".join(parts) + obj.extra + "</object>"


def annotation_xml(
    filename: str | None = "a.jpg",
    size: tuple[Value, Value] | None = (64, 48),
    objects: Iterable[Obj] = (),
    depth: int = 3,
    declaration: bool = True,
    extra: str = "",
    root: str = "annotation",
) -> bytes:
    """A VOC annotation. size=None leaves `<size>` out; (0, 0) writes zeros. `extra` is raw XML inside the
    root (e.g. `<source>`); `root` renames the root element."""
    body = [_element("folder", "VOC"), _element("filename", filename)]
    if size is not None:
        body.append(f"<size>{_element('width', size[0])}{_element('height', size[1])}{_element('depth', depth)}</size>")
    body.append("<segmented>0</segmented>")
    body += [object_xml(obj) for obj in objects]
    head = '<?xml version="1.0" encoding="utf-8"?>\n' if declaration else ""
    return (head + f"<{root}>" + "".join(body) + extra + f"</{root}>\n").encode()


def image_bytes(
    fmt: str = "jpeg",
    size: tuple[int, int] = (64, 48),
    mode: str = "RGB",
    seed: int = 0,
    exif_orientation: int | None = None,
    exif: bytes | None = None,
) -> bytes:
    """An image of `size` (width, height) in `fmt` (jpeg/png/bmp/webp) and Pillow `mode` (RGB, L, P, RGBA, ...).

    `seed` varies the pixels (different seeds -> different bytes). `exif_orientation` writes that EXIF
    orientation tag (any int, valid or not); `exif` writes raw EXIF bytes instead (e.g. garbage).
    """
    width, height = size
    image = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, 200))
    # A mark in one corner and a seed-dependent pixel make the orientation visible and the bytes unique.
    image.paste((255, 0, 0), (0, 0, max(1, width // 4), max(1, height // 4)))
    image.putpixel((width - 1, height - 1), (seed % 256, (seed // 256) % 256, 7))
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode != "RGB":
        image = image.convert(mode)
    options: dict = {}
    if exif_orientation is not None:
        tags = Image.Exif()
        tags[0x0112] = exif_orientation
        options["exif"] = tags.tobytes()
    if exif is not None:
        options["exif"] = exif
    if fmt == "webp":
        options["lossless"] = True
    buffer = io.BytesIO()
    image.save(buffer, PIL_FORMATS[fmt], **options)
    return buffer.getvalue()


def truncated_jpeg(size: tuple[int, int] = (64, 48), cut: int = 200) -> bytes:
    """A JPEG with its last `cut` bytes (its end marker among them) removed."""
    data = image_bytes("jpeg", size, seed=3)
    return data[: max(len(data) - cut, 16)]


def write_sample(
    root: Path,
    stem: str,
    *,
    objects: Iterable[Obj] = (Obj(),),
    size: tuple[Value, Value] | str | None = AUTO,
    fmt: str = "jpeg",
    image_size: tuple[int, int] = (64, 48),
    image_ext: str | None = None,
    image_dir: str = "JPEGImages",
    ann_dir: str = "Annotations",
    filename: str | None = None,
    image: bytes | None = None,
    xml: bytes | None = None,
    seed: int | None = None,
    with_image: bool = True,
    with_annotation: bool = True,
    **image_options,
) -> tuple[Path | None, Path | None]:
    """Write `{image_dir}/{stem}{ext}` and `{ann_dir}/{stem}.xml` under root; returns (image, xml) paths.

    Defaults: a 64x48 JPEG (`.jpg`) whose `<size>` matches, one circle. `image_dir=""` and `ann_dir=""`
    give the flat layout; `stem` may hold folders ("sub/a"). `size` overrides `<size>` (AUTO: image_size,
    None: no `<size>`);
    `image_ext` the extension (default: the format's); `filename` the `<filename>` (default: the image's
    name). `image`/`xml` replace the generated bytes. `seed` defaults to a hash of the stem, so that every
    sample's image bytes differ. Extra keyword arguments go to `image_bytes` (mode, exif_orientation, exif).
    """
    ext = image_ext if image_ext is not None else SUFFIX[fmt]
    image_path = root / image_dir / f"{stem}{ext}" if with_image else None
    xml_path = root / ann_dir / f"{stem}.xml" if with_annotation else None
    if image_path is not None:
        if image is None:
            seed = seed if seed is not None else sum(ord(c) * (i + 1) for i, c in enumerate(stem))
            image = image_bytes(fmt, image_size, seed=seed, **image_options)
        image_path.parent.mkdir(parents=True, exist_ok=True)
        image_path.write_bytes(image)
    if xml_path is not None:
        if xml is None:
            name = filename if filename is not None else f"{Path(stem).name}{ext}"
            xml = annotation_xml(name, image_size if size == AUTO else size, objects)  # type: ignore[arg-type]
        xml_path.parent.mkdir(parents=True, exist_ok=True)
        xml_path.write_bytes(xml)
    return image_path, xml_path


def write_image_sets(root: Path, splits: dict[str, Iterable[str]], comment: bool = True) -> None:
    """ImageSets/Main/{split}.txt with one id a line; `comment` adds a `#` comment line and a blank line."""
    folder = root / "ImageSets" / "Main"
    folder.mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        head = "# written by the test factory\n\n" if comment else ""
        (folder / f"{split}.txt").write_text(head + image_set_text(list(ids)))


# ---------------------------------------------------------------- files, archives, a tiny training


def write_tree(root: Path, files: Mapping[str, bytes]) -> Path:
    """Write each file (path relative to `root` -> bytes), making the folders; `root`."""
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


ZipEntries = Mapping[str, bytes] | Iterable[tuple[str | zipfile.ZipInfo, bytes]]


def zip_bytes(entries: ZipEntries, method: int = zipfile.ZIP_DEFLATED, top: str = "") -> bytes:
    """A ZIP of the entries (name or `ZipInfo` -> bytes, in the order given; names under `top`), in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in entries.items() if isinstance(entries, Mapping) else entries:
            archive.writestr(f"{top}{name}" if isinstance(name, str) else name, data)
    return buffer.getvalue()


def write_zip(path: Path, entries: ZipEntries, method: int = zipfile.ZIP_DEFLATED, top: str = "") -> Path:
    """`zip_bytes` written to `path`; `path`."""
    path.write_bytes(zip_bytes(entries, method, top))
    return path


def zip_folder(folder: Path) -> bytes:
    """Every file under `folder` as a ZIP in memory, by its path relative to `folder`, sorted."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return zip_bytes([(path.relative_to(folder).as_posix(), path.read_bytes()) for path in files])


# A training of a few seconds on the built-in sample (conf/train/cpu_small.yaml's keys, shrunk): for tests that
# need a trained model, not a good one.
TINY_TRAIN = """\
epochs: 1
imgsz: 64
batch: 4
device: cpu
workers: 0
patience: 50
optimizer: AdamW
lr0: 0.002
cos_lr: false
seed: ${seed}
resume: auto
extra: {plots: false}  # Ultralytics' plots are most of a tiny training's time
"""

"""`visapp`: the command line face of the library. Each command imports what it needs when it runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from visapp.errors import VisError, exit_on_error


def _cmd_sample(args: argparse.Namespace) -> int:
    from visapp.sample import write_sample

    summary = write_sample(Path(args.out), images=args.images, seed=args.seed)
    print(summary)
    return 0


def _check_classes(args: argparse.Namespace) -> list[str]:
    """--classes, else params.yaml's data.classes when there is one, else every class is accepted ([])."""
    if args.classes:
        return [name.strip() for name in args.classes.split(",") if name.strip()]
    from visapp.config import PARAMS_FILE, load_params

    return load_params(PARAMS_FILE).data.classes if PARAMS_FILE.is_file() else []


def _cmd_check(args: argparse.Namespace) -> int:
    from visapp.config import DataConfig
    from visapp.fsio import write_json
    from visapp.validate import format_summary, validate_dataset

    path = Path(args.path)
    if not path.is_dir():
        raise VisError(f"{path} is not a folder: give the folder that holds the VOC dataset")
    data = DataConfig(classes=_check_classes(args), bbox_tolerance_px=args.tolerance)
    result = validate_dataset(path, data)
    if args.report:
        write_json(args.report, result.report)
    print(format_summary(result.report))
    return 1 if result.report["rejected"] else 0


def _cmd_export_yolo(args: argparse.Namespace) -> int:
    from visapp.config import load_params
    from visapp.dataset_view import build_view

    params = load_params(args.params)
    dest = build_view(Path(params.paths.yolo), Path(params.paths.raw), Path(args.dest), mode="copy")
    print(f"wrote a standalone Ultralytics dataset: {dest / 'data.yaml'}")
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    from visapp.registry import release

    print(release(".", stage=args.stage, push=args.push))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from visapp.fsio import dumps_json
    from visapp.registry import format_versions, list_versions

    rows = list_versions(".")
    print(dumps_json(rows) if args.json else format_versions(rows), end="\n" if not args.json else "")
    return 0


def _cmd_model_get(args: argparse.Namespace) -> int:
    from visapp.registry import get_model

    out = get_model(".", args.version, args.out, force=args.force)
    print(f"wrote {args.version} to {out}")
    return 0


def _cmd_lineage(args: argparse.Namespace) -> int:
    from visapp.fsio import dumps_json
    from visapp.registry import format_lineage, lineage

    info = lineage(".", args.version)
    print(dumps_json(info) if args.json else format_lineage(info), end="" if args.json else "\n")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from visapp.config import PARAMS_FILE, load_params
    from visapp.ingest import ingest, recover
    from visapp.zipsafe import ZipLimits, parse_size

    raw_dir = Path(args.raw or (load_params(PARAMS_FILE).paths.raw if PARAMS_FILE.is_file() else "data/raw"))
    if args.recover:
        print(recover(raw_dir) or "no interrupted ingest to recover")
        return 0
    if not args.source:
        raise VisError("give the SOURCE to ingest (a .zip archive or a folder), or --recover")
    defaults = ZipLimits()
    limits = ZipLimits(
        max_entries=args.max_entries or defaults.max_entries,
        max_total_bytes=parse_size(args.max_total_size) if args.max_total_size else defaults.max_total_bytes,
        max_ratio=args.max_ratio or defaults.max_ratio,
    )
    print(ingest(args.source, raw_dir, mode=args.mode, name=args.name, limits=limits, force=args.force))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visapp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sample", help="write the built-in synthetic VOC dataset")
    p.add_argument("--out", default="data/raw", help="folder to write (must not exist or be empty)")
    p.add_argument("--images", type=int, default=None, help="number of images (default: the sample's size)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("check", help="validate a VOC folder outside the pipeline; exit 1 if a sample is rejected")
    p.add_argument("path", help="VOC dataset folder")
    p.add_argument("--classes", help="comma-separated class names (default: params.yaml's, else any)")
    p.add_argument("--tolerance", type=float, default=2.0, help="bbox tolerance in pixels (default 2)")
    p.add_argument("--report", help="also write report.json here")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("export-yolo", help="write a standalone Ultralytics dataset (images/ beside labels/)")
    p.add_argument("dest", help="folder to write (must not exist)")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_cmd_export_yolo)

    p = sub.add_parser("release", help="tag HEAD's trained model as the next version (yolo@vN.0.0) with GTO")
    p.add_argument("--stage", help="also assign this stage, e.g. prod (tag yolo#prod#N)")
    p.add_argument("--push", action="store_true", help="dvc push the outputs, then push the tags to origin")
    p.set_defaults(func=_cmd_release)

    p = sub.add_parser("models", help="list the model versions and their stages")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("model", help="work with one model version")
    model_sub = p.add_subparsers(dest="model_command", required=True, metavar="COMMAND")
    p = model_sub.add_parser("get", help="write a version's weights to a file, without touching the workspace")
    p.add_argument("version", help="yolo@v1.0.0, yolo#prod (the version in a stage) or yolo (the latest)")
    p.add_argument("-o", "--out", default="best.pt", help="file (or folder) to write (default: best.pt)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=_cmd_model_get)

    p = sub.add_parser("lineage", help="a model version -> commit, data hash, fingerprint, params, metrics, run")
    p.add_argument("version", help="yolo@v1.0.0, yolo#prod or yolo (the latest)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_lineage)

    p = sub.add_parser("ingest", help="put a VOC dataset (ZIP or folder) into data/raw safely, then dvc add it")
    p.add_argument("source", nargs="?", help="a .zip archive or a folder holding a VOC dataset")
    p.add_argument("--mode", choices=["replace", "append"], default="replace", help="default: replace")
    p.add_argument("--name", help="a name for the new dataset version (stored as desc in data/raw.dvc)")
    p.add_argument("--force", action="store_true", help="replace even data that DVC does not hold (it is lost)")
    p.add_argument("--raw", help="dataset folder (default: params.yaml's paths.raw)")
    p.add_argument("--recover", action="store_true", help="only finish or undo an interrupted ingest")
    p.add_argument("--max-entries", type=int, help="ZIP limit: entries (default 500000)")
    p.add_argument("--max-total-size", help="ZIP limit: uncompressed size, e.g. 100G (default 64G)")
    p.add_argument("--max-ratio", type=float, help="ZIP limit: compression ratio of one entry (default 100)")
    p.set_defaults(func=_cmd_ingest)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_on_error(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())

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

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_on_error(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())

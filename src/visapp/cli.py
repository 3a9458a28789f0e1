"""`visapp`: the command line face of the library. It parses, calls one library function, prints; it never decides.

Each command imports what it needs when it runs, so `visapp --help` and the data commands start fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visapp import console
from visapp.errors import VisError

if TYPE_CHECKING:
    from visapp.config import Params


def _cmd_sample(args: argparse.Namespace) -> int:
    from visapp.dataset.synthetic import write_synthetic

    summary = write_synthetic(Path(args.out), images=args.images, seed=args.seed, progress=console.progress_display())
    print(summary)
    return 0


def _check_params(args: argparse.Namespace) -> Params:
    """The params that apply here (`applicable_params`) with the command's options over them. Without --classes
    and without a params.yaml, the classes are every name the dataset's annotations hold, sorted (as the
    service does for an upload without classes)."""
    from visapp.composition import applicable_params
    from visapp.config import PARAMS_FILE

    data: dict[str, Any] = {}
    if args.tolerance is not None:
        data["bbox_tolerance_px"] = args.tolerance
    if args.classes is not None:
        data["classes"] = [name.strip() for name in args.classes.split(",") if name.strip()]
    elif not PARAMS_FILE.is_file():
        from visapp.ingest.ingest import class_names

        data["classes"] = class_names(Path(args.path))
        if not data["classes"]:
            raise VisError(f"{args.path}: the annotations name no object; give the class names with --classes")
    return applicable_params(".", {"data": data})


def _cmd_check(args: argparse.Namespace) -> int:
    from visapp.dataset.quality import QualityRules
    from visapp.dataset.validate import validate_dataset
    from visapp.formats.report import format_summary, has_errors
    from visapp.fsio import write_json

    path = Path(args.path)
    if not path.is_dir():
        raise VisError(f"{path} is not a folder: give the folder that holds the VOC dataset")
    params = _check_params(args)
    result = validate_dataset(
        path, params.data, progress=console.progress_display(), quality=QualityRules.from_params(params)
    )
    if args.report:
        write_json(args.report, result.report)
    print(format_summary(result.report))
    return 1 if has_errors(result.report) else 0


def _cmd_export_yolo(args: argparse.Namespace) -> int:
    from visapp.config import load_params
    from visapp.dataset.views import build_view

    params = load_params(args.params)
    dest = build_view(Path(params.paths.yolo), Path(params.paths.raw), Path(args.dest), mode="copy")
    print(f"wrote a standalone Ultralytics dataset: {dest / 'data.yaml'}")
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    from visapp.registry.release import release

    if args.force and args.stage != "prod":
        raise VisError("--force overrides the gate of a promotion to prod: use it with --stage prod")
    done = release(".", stage=args.stage, push=args.push, force=args.force, reason=args.reason)
    print(done)
    if args.onnx:
        from visapp.composition import applicable_params
        from visapp.registry.export import export_onnx

        root = Path().resolve()
        dvc_file, parity = export_onnx(root, done.tag, applicable_params(root))
        print(f"exported {done.tag} to ONNX: {dvc_file.with_suffix('')} ({parity})")
        if args.push:
            from visapp.registry import remote

            print(f"dvc push: {remote.push(root)} files pushed")
        print(f"next: commit {dvc_file} (git add {dvc_file} && git commit)")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from visapp.fsio import dumps_json
    from visapp.registry.versions import format_versions, list_versions, promotions_without_versions

    rows = list_versions(".")
    orphans = promotions_without_versions(".")
    print(dumps_json(rows) if args.json else format_versions(rows, orphans), end="" if args.json else "\n")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from visapp.composition import applicable_params
    from visapp.training.audit_table import format_audit, read_audit

    params = applicable_params(".")
    top = params.audit.top if args.top is None else args.top
    print(format_audit(read_audit(Path(params.paths.model)), Path(params.paths.raw), top))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from visapp.composition import applicable_params
    from visapp.registry import remote
    from visapp.registry.export import export_onnx

    root = Path().resolve()
    dvc_file, parity = export_onnx(root, args.version, applicable_params(root))
    print(f"exported {args.version} to ONNX: {dvc_file.with_suffix('')}\n{parity}")
    if args.push:
        print(f"dvc push: {remote.push(root)} files pushed")
    print(f"next: commit {dvc_file} (git add {dvc_file} && git commit), so that any checkout can fetch it")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from visapp.composition import applicable_params
    from visapp.registry.gate import compare_models, format_compared

    print(format_compared(compare_models(Path().resolve(), applicable_params("."), args.rev_a, args.rev_b)))
    return 0


def _cmd_experiments(args: argparse.Namespace) -> int:
    import dataclasses
    import shutil

    from visapp.fsio import dumps_json
    from visapp.registry.experiments import compare, format_comparison

    comparison = compare(".")
    width = args.width or min(shutil.get_terminal_size((120, 24)).columns, 120)
    print(
        dumps_json(dataclasses.asdict(comparison)) if args.json else format_comparison(comparison, width),
        end="" if args.json else "\n",
    )
    return 0


def _cmd_model_get(args: argparse.Namespace) -> int:
    from visapp.registry.versions import get_model

    out = get_model(".", args.version, args.out, force=args.force)
    print(f"wrote {args.version} to {out}")
    return 0


def _cmd_lineage(args: argparse.Namespace) -> int:
    from visapp.fsio import dumps_json
    from visapp.registry.versions import format_lineage, lineage

    info = lineage(".", args.version)
    print(dumps_json(info) if args.json else format_lineage(info), end="" if args.json else "\n")
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from visapp.dataset.diff import GATED
    from visapp.fsio import dumps_json, write_json
    from visapp.registry.dataset_diff import as_json, diff_revisions, format_revision_diff, gate_limits

    limits = gate_limits({name: getattr(args, name) for name in GATED})
    result = diff_revisions(".", args.rev_a, args.rev_b, limits)
    if args.metrics:
        write_json(args.metrics, result.headline)
    print(dumps_json(as_json(result)) if args.json else format_revision_diff(result), end="" if args.json else "\n")
    return 1 if result.failures else 0


def _cmd_params(args: argparse.Namespace) -> int:
    from visapp import composition
    from visapp.config import PARAMS_FILE, apply_overrides, read_params_file, to_params

    if args.params_command == "compose":
        from visapp.fsio import write_text

        write_text(PARAMS_FILE, composition.compose_params_yaml())
        print(f"wrote {PARAMS_FILE} from {composition.conf_dir()}")
        return 0
    if args.params_command == "sync":
        from visapp.integrations import dvc

        changes = composition.sync()
        print("\n".join(f"conf/{change}" for change in changes) or "conf/ already gives params.yaml: nothing to do")
        # The params stage depends on conf/: after `dvc exp apply` it is the only stage the edit makes stale, and
        # rerunning it (it checks the params, its output does not change) keeps the pipeline up to date.
        if changes and Path(".dvc").is_dir() and dvc.rerun_if_stale(Path(), "params"):
            print("dvc.lock: the params stage rerun against the new conf/ (`dvc repro params`): commit them together")
        return 0
    raw = read_params_file(PARAMS_FILE)
    to_params(apply_overrides(raw, args.overrides) if args.overrides else raw)  # keys, types, ranges
    if args.overrides:
        print(f"{' '.join(args.overrides)}: valid")
        return 0
    differences = composition.drift()
    if differences:
        raise composition.drift_error(differences, "params check")
    print(f"{PARAMS_FILE} is valid and is the composition of {composition.conf_dir()}")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from visapp.composition import applicable_params
    from visapp.config import PARAMS_FILE
    from visapp.ingest.archive import ArchiveLimits, parse_size
    from visapp.ingest.ingest import ingest, recover

    params = applicable_params(".")
    raw_dir = Path(args.raw or params.paths.raw)
    if args.recover:
        print(recover(raw_dir) or "no interrupted ingest to recover")
        return 0
    if not args.source:
        raise VisError("give the SOURCE to ingest (an archive or a folder), or --recover")
    defaults = ArchiveLimits()
    limits = ArchiveLimits(
        max_entries=defaults.max_entries if args.max_entries is None else args.max_entries,
        max_total_bytes=defaults.max_total_bytes if args.max_total_size is None else parse_size(args.max_total_size),
        max_ratio=defaults.max_ratio if args.max_ratio is None else args.max_ratio,
    )
    result = ingest(
        args.source,
        raw_dir,
        mode=args.mode,
        name=args.name,
        limits=limits,
        force=args.force,
        classes=params.data.classes if PARAMS_FILE.is_file() else None,  # a project's own class list
        progress=console.progress_display(),
    )
    print(result)
    return 0


def _version_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", help="yolo@v1.0.0, yolo#prod (the version in a stage) or yolo (the latest)")


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from visapp.service.api import create_app

    if args.open and args.host not in LOOPBACK:
        raise VisError(f"--open serves without a token: only on loopback ({', '.join(LOOPBACK)}), not {args.host}")
    app = create_app(open_access=args.open, consume=not args.no_worker)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=args.access_log)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from visapp.service.queue import JobQueue
    from visapp.service.reaper import Reaper
    from visapp.service.settings import ServiceSettings
    from visapp.service.store import JobStore

    settings = ServiceSettings.from_env()
    store = JobStore(settings.store_url)
    queue = JobQueue(settings, store)
    reaper = Reaper(settings, store, queue)
    reaper.start()
    console.log.info("visapp worker: store %s, queue %s", settings.store_url, type(queue.huey).__name__)
    queue.consumer(workers=1).run()
    reaper.stop()
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    import dataclasses

    from visapp import doctor
    from visapp.fsio import dumps_json

    checks = doctor.run_checks(require_gpu=args.require_gpu)
    if args.json:
        print(dumps_json([dataclasses.asdict(check) for check in checks]), end="")
    else:
        print(doctor.format_table(checks))
    return 1 if doctor.failed(checks) else 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from visapp.service.promote import promote

    print(promote(args.job_id, raw=args.raw, name=args.name))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `visapp` command line: one subcommand per task, each calling one library function."""
    parser = argparse.ArgumentParser(prog="visapp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sample", help="write the built-in synthetic VOC dataset")
    p.add_argument("--out", default="data/raw", help="folder to write (must not exist or be empty)")
    p.add_argument("--images", type=int, default=None, help="number of images (default: the sample's size)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("check", help="validate a VOC folder outside the pipeline; exit 1 if a sample is rejected")
    p.add_argument("path", help="VOC dataset folder")
    p.add_argument("--classes", help="comma-separated class names (default: params.yaml's, else any)")
    p.add_argument("--tolerance", type=float, help="bbox tolerance in pixels (default: data.bbox_tolerance_px)")
    p.add_argument("--report", help="also write report.json here")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("export-yolo", help="write a standalone Ultralytics dataset (images/ beside labels/)")
    p.add_argument("dest", help="folder to write (must not exist)")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_cmd_export_yolo)

    p = sub.add_parser("release", help="tag HEAD's trained model as the next version (yolo@vN.0.0) with GTO")
    p.add_argument("--stage", help="also promote it to this stage, e.g. prod (tag yolo#prod#N)")
    p.add_argument("--push", action="store_true", help="dvc push the outputs, then push the tags to origin")
    p.add_argument("--force", action="store_true", help="with --stage prod: promote even when the gate refuses")
    p.add_argument("--reason", help="with --force: why (kept in the tag's message)")
    p.add_argument("--onnx", action="store_true", help="also export the version to ONNX (checked, DVC-tracked)")
    p.set_defaults(func=_cmd_release)

    p = sub.add_parser("export", help="export a version to ONNX, checked against PyTorch, tracked with DVC")
    _version_argument(p)
    p.add_argument("--format", choices=["onnx"], default="onnx", help="the format (onnx)")
    p.add_argument("--push", action="store_true", help="dvc push it to the remote too")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("compare", help="two models per class on the workspace's current test split")
    p.add_argument("rev_a", help="a version (yolo@v1.0.0, yolo#prod) or `workspace` (models/yolo/weights/best.pt)")
    p.add_argument("rev_b", help="the same, for the second model")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("models", help="list the model versions and their stages")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("audit", help="the likely label errors the evaluate stage found, worst first, with their files")
    p.add_argument("--top", type=int, help="how many (default: audit.top)")
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser("experiments", help="compare the DVC experiments: the params that differ, the headline metrics")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--width", type=int, help="table width in characters (default: the terminal's, at most 120)")
    p.set_defaults(func=_cmd_experiments)

    p = sub.add_parser("model", help="work with one model version")
    model_sub = p.add_subparsers(dest="model_command", required=True, metavar="COMMAND")
    p = model_sub.add_parser("get", help="write a version's weights to a file, without touching the workspace")
    _version_argument(p)
    p.add_argument("-o", "--out", default="best.pt", help="file (or folder) to write (default: best.pt)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=_cmd_model_get)

    p = sub.add_parser("lineage", help="a model version -> commit, data hash, fingerprint, params, metrics, run")
    _version_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_lineage)

    p = sub.add_parser("diff", help="compare the datasets of two revisions; exit 1 past the diff.* limits")
    p.add_argument("rev_a", help="the older revision: a commit, branch or tag, or a model version (yolo@v1.0.0)")
    p.add_argument("rev_b", help="the newer revision, the same way")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--metrics", help="also write the headline numbers here, as flat JSON (a DVC metrics file)")
    for name, what in [
        ("max_removed_fraction", "samples of REV_A missing from REV_B, over REV_A's"),
        ("max_relabelled_fraction", "samples in both whose boxes changed, over those in both"),
        ("max_class_drift", "total-variation distance of the class distributions"),
        ("max_box_size_drift", "KS statistic of the box sizes"),
    ]:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, help=f"{what} (default: diff.{name})")
    p.set_defaults(func=_cmd_diff)

    p = sub.add_parser("params", help="conf/ and params.yaml: check, compose, or write params.yaml back into conf/")
    params_sub = p.add_subparsers(dest="params_command", required=True, metavar="COMMAND")
    q = params_sub.add_parser(
        "check", help="params.yaml valid and composed from conf/? (or: are these overrides valid?)"
    )
    q.add_argument("overrides", nargs="*", help="key=value overrides to check, as for `dvc exp run -S`")
    params_sub.add_parser("compose", help="write params.yaml from conf/ (what `make params` does)")
    params_sub.add_parser("sync", help="write params.yaml's values into conf/ (after `dvc exp apply`)")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("ingest", help="put a VOC dataset (archive or folder) into data/raw safely, then dvc add it")
    p.add_argument("source", nargs="?", help="an archive (.zip, .tar, .tar.gz, .tgz) or a folder holding a VOC dataset")
    p.add_argument("--mode", choices=["replace", "append"], default="replace", help="default: replace")
    p.add_argument("--name", help="a name for the new dataset version (stored as desc in data/raw.dvc)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace even data that DVC does not hold (it is lost), or annotated data with images only",
    )
    p.add_argument("--raw", help="dataset folder (default: params.yaml's paths.raw)")
    p.add_argument("--recover", action="store_true", help="only finish or undo an interrupted ingest")
    p.add_argument("--max-entries", type=int, help="archive limit: entries (default 500000)")
    p.add_argument("--max-total-size", help="archive limit: uncompressed size, e.g. 100G (default 64G)")
    p.add_argument("--max-ratio", type=float, help="archive limit: compression ratio of one entry (default 100)")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("serve", help="run the HTTP API (and one job consumer) with uvicorn")
    p.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--open", action="store_true", help="serve without a token (loopback only)")
    p.add_argument("--no-worker", action="store_true", help="no consumer here: `visapp worker`s run the jobs")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("worker", help="run jobs from the queue (VISAPP_QUEUE_URL) on this machine, one at a time")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("promote", help="bring a service job's dataset into data/raw (the ingest), for `dvc repro`")
    p.add_argument("job_id")
    p.add_argument("--raw", help="dataset folder (default: params.yaml's paths.raw)")
    p.add_argument("--name", help="a name for the new dataset version (default: the job id and upload's name)")
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser("doctor", help="check this machine and project, one verdict a check; exit 1 on a FAIL")
    p.add_argument("--require-gpu", action="store_true", help="no CUDA device is a FAIL (default: CPU is ok)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_doctor)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `visapp` with `argv` (default: the process's arguments); the exit code."""
    args = build_parser().parse_args(argv)
    return console.run(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())

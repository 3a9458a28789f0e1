"""The whole path at N images, each step's time and peak memory: ingest, upload, DVC, every stage, reruns.

    .venv/bin/python benchmarks/scale.py --images 20000 [--json FILE] [--stages-only]

Generates N small VOC images (the built-in sample's generator: 256 px JPEGs, 1-5 boxes of 3 classes, some
backgrounds) with ImageSets lists (80/10/10), then, each as a whole process, with the peak memory of its process
tree (sampled every 0.1 s):

1. `visapp ingest` of a ZIP of the dataset into a project (this repository's pipeline), `dvc add` included;
   the same ZIP uploaded to `visapp serve` (checked by a worker: the 202 path, the time to the answer);
2. `dvc push` to the loopback S3 server the tests use, and `dvc pull` into an empty cache of a fresh clone,
   beside the plain copy of the same files with boto3's transfer manager at the same concurrency (the anchor);
3. each stage of `dvc repro` (train: 1 epoch at imgsz 64, and its time to the first batch), then a no-op
   `dvc repro` and `dvc status`, and a revalidation after adding 1% new images, against the full validate.

`--stages-only` skips step 2 and the upload of step 1 (a third of the time): the stages, the no-op reruns and the
revalidation only. The data stages against Ultralytics' own VOC path are `benchmarks/data_stages.py --images N`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["conf", "stages", "src", "dvc.yaml", "params.yaml", ".dvcignore"]  # src: the stages depend on it
JOBS = 8  # DVC's and the anchor's concurrency
TINY = ["train.epochs=1", "train.imgsz=64", "train.batch=32", "train.workers=0", "train.device=cpu",
        "train.extra.plots=false", "tracking.required=false"]  # fmt: skip


def measure(cmd: list[str], cwd: Path, env: dict[str, str], first_line: str | None = None) -> dict[str, float]:
    """Run `cmd`; its seconds, the peak RSS (MB) of its process tree, and the seconds to a line holding
    `first_line` in its output."""
    import psutil

    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, seen = 0.0, None
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        top = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [top, *top.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.1)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    output = []
    assert proc.stdout is not None
    for line in proc.stdout:
        output.append(line)
        if first_line and seen is None and first_line in line:
            seen = time.monotonic() - started
    proc.wait()
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{''.join(output[-30:])}")
    result = {"seconds": round(time.monotonic() - started, 2), "peak_mb": round(peak, 1)}
    if first_line:
        result["to_first"] = round(seen, 2) if seen is not None else None
    return result


def generate(folder: Path, images: int, env: dict[str, str]) -> None:
    subprocess.run([str(VENV_BIN / "visapp"), "sample", "--out", str(folder), "--images", str(images)], check=True,
                   capture_output=True, env=env)  # fmt: skip
    stems = sorted(p.stem for p in (folder / "JPEGImages").iterdir())
    lists = folder / "ImageSets" / "Main"
    lists.mkdir(parents=True, exist_ok=True)
    cut = [int(len(stems) * 0.8), int(len(stems) * 0.9)]
    for name, part in (("train", stems[: cut[0]]), ("val", stems[cut[0] : cut[1]]), ("test", stems[cut[1] :])):
        (lists / f"{name}.txt").write_text("".join(f"{stem}\n" for stem in part))


def zip_folder(folder: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())


def anchor_copy(endpoint: str, bucket: str, files: list[Path], root: Path, upload: bool) -> float:
    """Seconds of boto3's transfer manager copying `files` (up or down) at JOBS concurrency: the plain copy."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                          region_name="us-east-1")  # fmt: skip
    started = time.monotonic()

    def one(path: Path) -> None:
        key = f"anchor/{path.relative_to(root).as_posix()}"
        if upload:
            client.upload_file(str(path), bucket, key)
        else:
            target = root.with_name(root.name + "-down") / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))

    with concurrent.futures.ThreadPoolExecutor(JOBS) as pool:
        list(pool.map(one, files))
    return round(time.monotonic() - started, 2)


def transfers(scratch: Path, project: Path, env: dict[str, str], results: dict[str, object]) -> None:
    """The upload to the API (of step 1) and step 2: `dvc push` and `dvc pull` against boto3's plain copy."""
    import httpx

    from serving import free_port, serving

    def run(*cmd: str) -> dict[str, float]:
        return measure(list(cmd), project, env)

    serve_env = {**env, "VISAPP_INLINE_LIMIT": "1", "VISAPP_WORK_DIR": str(scratch / "work"),
                 "VISAPP_STORE_URL": (scratch / "jobs").as_uri()}  # fmt: skip
    with serving(scratch, serve_env, "--open", worker=True) as (url, server):
        import psutil

        def tree_rss() -> float:
            top = psutil.Process(server.pid)
            return sum(p.memory_info().rss for p in [top, *top.children(recursive=True)]) / 2**20

        started = time.monotonic()
        with (scratch / "voc.zip").open("rb") as handle:
            answer = httpx.post(f"{url}/upload-dataset", files={"file": ("voc.zip", handle)}, timeout=3600)
        answered, peak = round(time.monotonic() - started, 2), tree_rss()
        job_id, state = answer.json()["job"]["id"], answer.json()["job"]["state"]
        while state not in {"ready", "rejected", "failed"}:  # the worker checks it: validate, convert, metadata
            time.sleep(0.2)
            with contextlib.suppress(psutil.Error):
                peak = max(peak, tree_rss())
            state = httpx.get(f"{url}/jobs/{job_id}", timeout=60).json()["state"]
        ready = round(time.monotonic() - started, 2)
        results["upload"] = {"seconds_to_answer": answered, "seconds_to_ready": ready, "status": answer.status_code,
                             "state": state, "server_peak_mb": round(peak, 1)}  # fmt: skip

    # DVC's remote on the loopback S3 server, against the plain copy.
    port = free_port()
    moto = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
                     aws_secret_access_key="x").create_bucket(Bucket="scale")  # fmt: skip
        dvc = str(VENV_BIN / "dvc")
        subprocess.run([dvc, "remote", "add", "-d", "storage", "s3://scale/dvc"], cwd=project, check=True, env=env)
        subprocess.run([dvc, "remote", "modify", "storage", "endpointurl", endpoint], cwd=project, check=True,
                       env=env)  # fmt: skip
        subprocess.run(["git", "add", "-A"], cwd=project, check=True, env=env)
        subprocess.run(["git", "commit", "-q", "-m", "data"], cwd=project, check=True, env=env)
        results["dvc_push"] = run(dvc, "push", "-j", str(JOBS))
        files = sorted(p for p in (project / "data" / "raw").rglob("*") if p.is_file())
        results["anchor_upload_seconds"] = anchor_copy(endpoint, "scale", files, project / "data" / "raw", True)
        clone = scratch / "clone"
        subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True, env=env)
        results["dvc_pull"] = measure([dvc, "pull", "-j", str(JOBS), "data/raw"], clone, env)  # no stage has run yet
        results["anchor_download_seconds"] = anchor_copy(endpoint, "scale", files, project / "data" / "raw", False)
    finally:
        moto.terminate()
        moto.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--stages-only", action="store_true", help="skip the upload, dvc push and dvc pull")
    args = parser.parse_args()
    results: dict[str, object] = {"images": args.images}
    with tempfile.TemporaryDirectory(prefix="vis-scale-") as tmp:
        scratch = Path(tmp)
        path = f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"  # the stages run `python`: this environment's
        env = {**os.environ, "PATH": path, "YOLO_OFFLINE": "true", "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "bench",
               "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@b",
               "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
        generate(scratch / "voc", args.images, env)
        zip_folder(scratch / "voc", scratch / "voc.zip")
        project = scratch / "project"
        project.mkdir()
        for name in PROJECT_FILES:
            source = REPO / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, project / name)
        for cmd in (["git", "init", "-q", "-b", "main"], [str(VENV_BIN / "dvc"), "init", "-q"]):
            subprocess.run(cmd, cwd=project, check=True, env=env)

        def run(*cmd: str, first_line: str | None = None) -> dict[str, float]:
            return measure(list(cmd), project, env, first_line)

        results["ingest"] = run(str(VENV_BIN / "visapp"), "ingest", str(scratch / "voc.zip"))
        if not args.stages_only:
            transfers(scratch, project, env, results)
        dvc = str(VENV_BIN / "dvc")

        # The pipeline, stage by stage, then reruns.
        subprocess.run([str(VENV_BIN / "python"), "-c", "import sys; from omegaconf import OmegaConf as O; "
                        "p = O.load('params.yaml'); p.merge_with_dotlist(sys.argv[1:]); O.save(p, 'params.yaml')",
                        *TINY], cwd=project, check=True, env=env)  # fmt: skip
        subprocess.run([str(VENV_BIN / "visapp"), "params", "sync"], cwd=project, check=True, env=env,
                       capture_output=True)  # fmt: skip
        for stage in ("params", "validate", "convert", "metadata"):
            results[f"stage_{stage}"] = run(dvc, "repro", "-s", stage)
        results["stage_train"] = run(
            dvc, "repro", "-s", "train", first_line="the first epoch starts"
        )  # logged by the train stage
        results["stage_evaluate"] = run(dvc, "repro", "-s", "evaluate")
        results["noop_repro"] = run(dvc, "repro")
        results["status"] = run(dvc, "status")
        extra = max(1, args.images // 100)
        generate(scratch / "more", args.images + extra, env)
        for folder in ("Annotations", "JPEGImages"):
            for path in sorted((scratch / "more" / folder).iterdir())[args.images :]:
                shutil.copy(path, project / "data" / "raw" / folder / path.name)
        subprocess.run([dvc, "add", "-q", "data/raw"], cwd=project, check=True, env=env)
        results["revalidate_plus_1pct"] = run(dvc, "repro", "-s", "validate")
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

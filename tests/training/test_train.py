"""visapp.training + stages/train.py: outputs, one MLflow run, resume, fresh label cache, offline safety, DVC.

Trainings here are tiny (24 images of 96 px, imgsz 64, 1-6 epochs on CPU), so each takes seconds. The stage
runs as a subprocess without pytest's environment markers, as DVC would run it: Ultralytics switches some
integrations off by itself under pytest, which would hide exactly what these tests check.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO_ROOT, free_port, tree_digest
from factory import params as default_params
from visapp.config import Resume, flatten, load_params, params_dict, train_argument_names
from visapp.errors import VisError
from visapp.integrations.ultralytics import checkpoint_epoch, drop_foreign_callbacks, session
from visapp.training import checkpoints, results
from visapp.training import run as train

pytestmark = pytest.mark.unit

# Ultralytics' plots are most of a tiny training's time (18 s of 44): on only where a test looks at them.
TINY = [
    "train.epochs=2",
    "train.imgsz=64",
    "train.batch=8",
    "train.workers=0",
    "train.device=cpu",
    "train.extra.plots=false",
]
PLOTS = "train.extra.plots=true"
FINAL_KEYS = {"precision", "recall", "mAP50", "mAP50-95", "fitness", "epochs", "train_seconds"}
# Installed as sitecustomize in the stage's process: any connection or name lookup beyond loopback is refused
# and written down, so a test sees an attempt even when the code under test swallows the error.
NETWORK_GUARD = textwrap.dedent(
    """
    import os, socket
    _LOG = os.environ["NETWORK_GUARD_LOG"]
    _LOCAL = {"127.0.0.1", "::1", "localhost", "0.0.0.0", None}

    def _refuse(what):
        with open(_LOG, "a") as log:
            log.write(what + "\\n")
        raise OSError(f"network disabled by the test: {what}")

    _connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(self, address):
        if isinstance(address, tuple) and address[0] not in _LOCAL:
            _refuse(f"connect {address!r}")
        return _connect(self, address)

    def connect_ex(self, address):
        if isinstance(address, tuple) and address[0] not in _LOCAL:
            _refuse(f"connect_ex {address!r}")
        return _connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in _LOCAL:
            _refuse(f"getaddrinfo {host!r}")
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
    """
)

# Installed as sitecustomize under `dvc repro`: writes down every JPEG that Ultralytics' label check finds with bytes
# after its end marker (FFD9), and makes that check restore such a JPEG in place, as earlier Ultralytics releases
# (8.3, which pyproject allows) do with `.save(im_file)`: through a link in the view, into data/raw. (8.4 writes a
# new file and swaps it in, replacing the link and sparing its target: with 8.4's own behaviour alone, data/raw would
# stay byte-identical even for a view that links these images; the inodes written down still tell.) It also refuses
# every label cache, so that the check runs (the train stage's own caches spare it: tests/integrations).
JPEG_GUARD = textwrap.dedent(
    """
    import importlib.abc, json, os, sys

    def _patch(utils):
        verify = utils.verify_image_label

        def verify_image_label(args):
            im_file = args[0]
            with open(im_file, "rb") as image:
                head = image.read(3)
                image.seek(-2, 2)
                trailing = head == b"\\xff\\xd8\\xff" and image.read() != b"\\xff\\xd9"
            link, inode = os.path.islink(im_file), os.stat(im_file).st_ino
            result = verify(args)
            if trailing:
                with open(os.environ["JPEG_GUARD_LOG"], "a") as log:
                    log.write(json.dumps({"file": im_file, "link": link, "inode": inode, "msg": result[-1]}) + "\\n")
            return result

        utils.verify_image_label = verify_image_label
        # The train stage writes label caches from the manifest, so that Ultralytics checks no image; refuse them,
        # so that it checks every image, as it does whenever a cache does not fit.
        def no_cache(path):
            raise FileNotFoundError(path)

        utils.load_dataset_cache_file = no_cache
        if hasattr(utils, "_replace_image"):
            utils._replace_image = lambda im_file, write: write(str(im_file))

    class _PatchOnImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "ultralytics.data.utils":
                return None
            finders = (f for f in sys.meta_path if f is not self and hasattr(f, "find_spec"))
            spec = next((s for s in (f.find_spec(name, path, target) for f in finders) if s is not None), None)
            if spec is not None:
                load = spec.loader.exec_module

                def exec_module(module):
                    load(module)
                    _patch(module)

                spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _PatchOnImport())
    """
)


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/{raw,validated,yolo,metadata}: the built-in sample at 24 images of 96 px, through the real stages."""
    from visapp.dataset import synthetic
    from visapp.dataset.convert import convert
    from visapp.dataset.statistics import build_metadata
    from visapp.dataset.validate import validate_dataset, write_validation

    root = tmp_path_factory.mktemp("tiny-dataset")
    data = root / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synthetic, "IMAGE_SIZE", 96)  # small images: fast epochs
        synthetic.write_synthetic(data / "raw", images=24, seed=0)
    params = load_params(REPO_ROOT / "params.yaml")
    result = validate_dataset(data / "raw", params.data)
    write_validation(result, data / "validated", on_error="fail")
    manifest = data / "validated" / "manifest.jsonl"
    convert(manifest, data / "raw", data / "yolo", params.data, params.seed)
    build_metadata(manifest, data / "yolo", data / "raw", data / "metadata", params.data.classes)
    return root


def set_params(work: Path, *overrides: str) -> None:
    from omegaconf import OmegaConf

    path = work / "params.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides)))))


@pytest.fixture
def workdir(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory as DVC gives the stage: params.yaml and data/, the tiny training params; cwd."""
    work = tmp_path / "work"
    shutil.copytree(tiny_dataset / "data", work / "data", symlinks=True)
    shutil.copy(REPO_ROOT / "params.yaml", work / "params.yaml")
    set_params(work, *TINY)
    monkeypatch.chdir(work)
    return work


def stage(work: Path, env: dict[str, str] | None = None, timeout: float = 300) -> SimpleNamespace:
    """Run stages/train.py in `work` as DVC would, under the network guard; its output and the attempts seen."""
    guard_dir = work.parent / "guard"
    guard_dir.mkdir(exist_ok=True)
    (guard_dir / "sitecustomize.py").write_text(NETWORK_GUARD)
    log = guard_dir / "attempts.log"
    log.write_text("")
    full_env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    full_env.update(PYTHONPATH=str(guard_dir), NETWORK_GUARD_LOG=str(log), **(env or {}))
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "stages" / "train.py")],
        cwd=work,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return SimpleNamespace(
        returncode=proc.returncode,
        stdout=proc.stdout,
        stderr=proc.stderr,
        attempts=log.read_text().splitlines(),
    )


def ok(result: SimpleNamespace) -> SimpleNamespace:
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    return result


def read_results(path: Path) -> list[dict[str, str]]:
    return results.clean_results(path.read_text())[1]


def key_dirs(work: Path) -> list[Path]:
    return sorted(p for p in (work / ".cache" / "train").iterdir() if p.is_dir())


# ------------------------------------------------------------------------------------------------ pure parts


def test_device_auto_picks_cuda_when_present():
    assert train.resolve_device("auto", cuda_devices=1) == "0"
    assert train.resolve_device("auto", cuda_devices=4) == "0,1,2,3"  # every visible GPU: one DDP job
    assert train.resolve_device("auto", cuda_devices=0) == "cpu"
    assert train.resolve_device("cpu", cuda_devices=2) == "cpu"
    assert train.resolve_device("0,1", cuda_devices=4) == "0,1"
    assert [train.is_ddp(d) for d in ("cpu", "0", "0,1", "0, 2")] == [False, False, True, True]


def test_device_cuda_takes_every_gpu_and_never_falls_back_to_the_cpu():
    assert train.resolve_device("cuda", cuda_devices=2) == "0,1"
    assert train.resolve_device("cuda:1", cuda_devices=2) == "cuda:1"
    with pytest.raises(VisError, match=r"train.device=cuda needs a CUDA device, and torch sees none: driver\?"):
        train.resolve_device("cuda", cuda_devices=0, why_none=lambda: "driver?")
    with pytest.raises(VisError, match=r"train.device=0 needs CUDA device 0, and torch sees none: driver\?"):
        train.resolve_device("0", cuda_devices=0, why_none=lambda: "driver?")
    with pytest.raises(VisError, match=r"torch sees 2 CUDA device\(s\), numbered from 0: 2, 3 is not one"):
        train.resolve_device("0,2,3", cuda_devices=2)


def test_the_gpu_runners_train_config_refuses_to_train_on_the_cpu():
    from visapp.composition import compose
    from visapp.config import to_params

    gpu = to_params(compose(overrides=["train=gpu"]))
    with pytest.raises(VisError, match=r"train\.device=cuda"):
        train.resolve_device(gpu.train.device, cuda_devices=0)
    assert train.resolve_device(gpu.train.device, cuda_devices=1) == "0"


def test_checkpoint_key_follows_training_params_and_data_but_not_resume_or_tracking():
    base = default_params()
    key = checkpoints.checkpoint_key(base, "f" * 64)
    assert len(key) == 16
    same = default_params()
    same.train.resume, same.tracking.uri, same.paths.model = "never", "http://elsewhere", "m"
    assert checkpoints.checkpoint_key(same, "f" * 64) == key
    for change in ("seed", "lr0", "arch", "extra"):
        other = default_params()
        if change == "seed":
            other.seed = 1
        elif change == "lr0":
            other.train.lr0 = 0.5
        elif change == "arch":
            other.model.arch = "yolov8s.yaml"
        else:
            other.train.extra = {"mosaic": 0.0}
        assert checkpoints.checkpoint_key(other, "f" * 64) != key, change
    assert checkpoints.checkpoint_key(base, "e" * 64) != key


def test_checkpoint_base_is_overridable_for_spot_runners():
    assert checkpoints.checkpoint_base({}) == Path(".cache/train")
    assert checkpoints.checkpoint_base({"VISAPP_CHECKPOINT_DIR": "/mnt/ckpt"}) == Path("/mnt/ckpt")


def test_train_extra_is_passed_through_but_cannot_override_our_keys():
    params = default_params()
    params.train.extra = {"mosaic": 0.5, "mixup": 0.1}
    args = train.train_args(params, Path("/v/data.yaml"), Path("/c/run"), "cpu")
    assert args["mosaic"] == 0.5 and args["mixup"] == 0.1
    assert args["data"] == "/v/data.yaml" and args["save_dir"] == "/c/run" and args["epochs"] == params.train.epochs
    for key in ("epochs", "cos_lr", "resume", "device", "save_dir"):
        params.train.extra = {key: 3}
        with pytest.raises(VisError, match=rf"train\.extra sets {key}"):
            train.train_args(params, Path("d"), Path("r"), "cpu")


def test_every_ultralytics_field_of_train_config_is_a_train_argument():
    """TrainConfig is the one list: each of its fields not marked as visapp's own reaches `train()` as it is."""
    params = default_params()
    params.train.cos_lr = not params.train.cos_lr
    args = train.train_args(params, Path("d"), Path("r"), "cuda:0")
    names = train_argument_names()
    assert {"epochs", "imgsz", "batch", "lr0", "cos_lr", "optimizer"} <= set(names)
    assert not {"device", "resume", "extra"} & set(names)  # visapp's own: resolved, or not Ultralytics' meaning
    for name in names:
        value = getattr(params.train, name)
        assert args[name] == (str(value) if hasattr(value, "value") else value), name
    assert args["device"] == "cuda:0" and "resume" not in args and "extra" not in args


def test_results_csv_is_cleaned_one_row_per_epoch():
    raw = (
        "      epoch,  metrics/mAP50(B),   train/box_loss\n"
        "1,0.1,3.0\n"
        "2,0.2,2.5\n"
        "2,0.25,2.4\n"  # the epoch redone after a resume from an older checkpoint: the later row wins
        "3,0.3\n"  # cut short by a kill
    )
    columns, rows = results.clean_results(raw)
    assert columns == ["epoch", "metrics/mAP50", "train/box_loss"]
    assert rows == [
        {"epoch": "1", "metrics/mAP50": "0.1", "train/box_loss": "3.0"},
        {"epoch": "2", "metrics/mAP50": "0.25", "train/box_loss": "2.4"},
    ]
    assert results.format_results(columns, rows).splitlines()[0] == "epoch,metrics/mAP50,train/box_loss"


def test_final_metrics_have_the_documented_keys():
    found = {"metrics/precision(B)": 0.5, "metrics/recall(B)": 0.25, "metrics/mAP50(B)": 0.75}
    metrics = results.final_metrics({**found, "metrics/mAP50-95(B)": 0.5, "fitness": 0.5}, 7, 12.345)
    assert set(metrics) == FINAL_KEYS
    assert metrics["mAP50"] == 0.75 and metrics["epochs"] == 7 and metrics["train_seconds"] == 12.3


def save_checkpoint(path: Path, epoch: int = 2, epochs: int = 5, extra: object = None) -> Path:
    """A last.pt as Ultralytics writes one mid-training (epoch 0-based, optimizer state, its train args)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "optimizer": {"state": {}}, "train_args": {"epochs": epochs}, "extra": extra}, path)
    return path


def save_incompatible_checkpoint(path: Path) -> Path:
    """A complete last.pt that this environment cannot load: it pickles an object of a module that is gone (as
    after an Ultralytics upgrade that renamed a class)."""
    import types

    module = types.ModuleType("visapp_tests_gone")
    exec("class Head:\n    pass\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        save_checkpoint(path, extra=module.Head())
    finally:
        del sys.modules[module.__name__]
    return path


@pytest.mark.integration
def test_a_cut_short_checkpoint_and_an_incompatible_one_are_told_apart(tmp_path):
    from visapp.integrations.ultralytics import read_checkpoint

    good = save_checkpoint(tmp_path / "good.pt")
    assert (read_checkpoint(good).kind, checkpoint_epoch(good)) == ("resumable", 3)
    assert read_checkpoint(tmp_path / "absent.pt").kind == "absent"
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a kill while it was written
    assert (read_checkpoint(cut).kind, checkpoint_epoch(cut)) == ("truncated", None)
    incompatible = read_checkpoint(save_incompatible_checkpoint(tmp_path / "old.pt"))
    assert incompatible.kind == "incompatible" and incompatible.epoch is None
    assert "cannot load it" in incompatible.why and "visapp_tests_gone" in incompatible.why
    assert read_checkpoint(save_checkpoint(tmp_path / "last.pt", epoch=4, epochs=5)).kind == "finished"


def checkpoint_folder(base: Path, key: str, last_pt: Callable[[Path], Path]) -> Path:
    """A checkpoint folder as a killed training leaves it: state.json says training, and a last.pt."""
    folder = base / key
    checkpoints.save_state(folder, {"status": "training", "key": key})
    last_pt(folder / "run" / "weights" / "last.pt")
    return folder


@pytest.mark.integration
def test_an_incompatible_checkpoint_is_kept_aside_and_the_log_says_why(tmp_path, caplog):
    caplog.set_level("INFO", logger="visapp")
    base = tmp_path / "train"
    folder = checkpoint_folder(base, "k", save_incompatible_checkpoint)
    plan = checkpoints.plan_resume(Resume.auto, folder)
    assert (plan.mode, plan.incompatible) == ("fresh", True)
    kept = checkpoints.start_over(base, folder, plan)
    assert kept == base / "incompatible" / "k" and (kept / "run" / "weights" / "last.pt").is_file()
    assert not folder.exists()
    [record] = [r for r in caplog.records if r.name == "visapp.training.checkpoints"]
    assert record.levelname == "WARNING" and "cannot load it" in record.getMessage() and str(kept) in record.message
    again = checkpoint_folder(base, "k", save_incompatible_checkpoint)  # a second one does not replace the first
    assert checkpoints.start_over(base, again, checkpoints.plan_resume(Resume.auto, again)) == kept.with_name("k-2")
    assert checkpoints.prune_finished(base, "k") == [] and kept.is_dir()  # never pruned as a finished training


@pytest.mark.integration
def test_a_checkpoint_folder_is_removed_only_with_a_log_line_saying_why(tmp_path, caplog):
    caplog.set_level("INFO", logger="visapp")
    base = tmp_path / "train"

    def cut(path: Path) -> Path:
        save_checkpoint(path)
        path.write_bytes(path.read_bytes()[:100])
        return path

    folder = checkpoint_folder(base, "k", cut)
    assert checkpoints.start_over(base, folder, checkpoints.plan_resume(Resume.auto, folder)) is None
    assert not folder.exists() and not (base / "incompatible").exists()
    assert any("is removed" in r.message and "cut short" in r.message for r in caplog.records)
    resumable = checkpoint_folder(base, "r", save_checkpoint)
    assert checkpoints.plan_resume(Resume.auto, resumable).epoch == 3
    never = checkpoints.plan_resume(Resume.never, resumable)
    assert never.mode == "fresh" and "train.resume is never" in never.why


@pytest.mark.integration
def test_a_session_changes_ultralytics_in_memory_only_and_restores_it(tmp_path):
    import ultralytics.data.utils
    import ultralytics.utils
    import ultralytics.utils.plotting
    from ultralytics.utils import SETTINGS

    settings_file = Path(SETTINGS.file)
    file_before = settings_file.read_bytes() if settings_file.exists() else None
    settings_before, weights_before = dict(SETTINGS), ultralytics.utils.WEIGHTS_DIR
    users = (ultralytics.utils.checks, ultralytics.utils.plotting, ultralytics.data.utils)
    fonts_before = [module.check_font for module in users]
    level_before = ultralytics.utils.LOGGER.level
    with session(tmp_path / "cache"):
        assert not any(SETTINGS[k] for k in ("sync", "mlflow", "dvc", "clearml", "comet", "wandb", "tensorboard"))
        assert (tmp_path / "cache" / "weights").resolve() == ultralytics.utils.WEIGHTS_DIR
        font = ultralytics.utils.plotting.check_font("Arial.Unicode.ttf")
        assert font.name == "DejaVuSans.ttf" and font.is_file()  # local: nothing to download
        assert ultralytics.utils.LOGGER.level > 20  # quiet: no argument dump, no bars in a log
    assert dict(SETTINGS) == settings_before and weights_before == ultralytics.utils.WEIGHTS_DIR
    assert [module.check_font for module in users] == fonts_before and ultralytics.utils.LOGGER.level == level_before
    assert (settings_file.read_bytes() if settings_file.exists() else None) == file_before


@pytest.mark.integration
def test_integration_and_analytics_callbacks_are_dropped():
    from ultralytics.utils.callbacks import base, platform
    from ultralytics.utils.events import callbacks as analytics

    def ours(trainer):
        pass

    callbacks = base.get_default_callbacks()
    for event, function in [*platform.callbacks.items(), *analytics.items(), ("on_fit_epoch_end", ours)]:
        callbacks[event].append(function)
    trainer = SimpleNamespace(callbacks=callbacks)
    drop_foreign_callbacks(trainer)
    kept = {fn for fns in trainer.callbacks.values() for fn in fns}
    assert kept == {fn for fns in base.get_default_callbacks().values() for fn in fns} | {ours}


def test_missing_metadata_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "yolo").mkdir(parents=True)
    (tmp_path / "data" / "yolo" / "data.yaml").write_text("names: {0: a}\n")
    with pytest.raises(VisError, match=r"dataset_metadata\.json not found"):
        train.train_model(default_params())


# --------------------------------------------------------------------------------------------- trainings


@pytest.mark.slow
def test_train_stage_makes_one_mlflow_run_with_params_metrics_tags_and_artifacts(workdir, mlflow_server):
    from mlflow.tracking import MlflowClient

    subprocess.run(["git", "init", "-q"], cwd=workdir, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "x"], cwd=workdir, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True).stdout.strip()
    set_params(workdir, "tracking.experiment=train-one-run", PLOTS, "train.cos_lr=true")
    client = MlflowClient(mlflow_server.uri)

    def all_runs() -> dict[str, object]:
        experiments = [e.experiment_id for e in client.search_experiments()]
        return {r.info.run_id: r for r in client.search_runs(experiments)} if experiments else {}

    before = set(all_runs())
    result = ok(stage(workdir, {"MLFLOW_TRACKING_URI": mlflow_server.uri, "DVC_EXP_NAME": "exp-one"}))
    assert result.attempts == []

    new_runs = {run_id: run for run_id, run in all_runs().items() if run_id not in before}
    assert len(new_runs) == 1, [(r.info.experiment_id, r.info.run_name) for r in new_runs.values()]
    run = next(iter(new_runs.values()))
    assert client.get_experiment(run.info.experiment_id).name == "train-one-run"
    assert run.info.run_name == "exp-one" and run.info.status == "FINISHED"

    model_dir = workdir / "models" / "yolo"
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert set(metrics) == FINAL_KEYS and metrics["epochs"] == 2
    assert json.loads((model_dir / "mlflow_run.json").read_text())["run_id"] == run.info.run_id
    assert (model_dir / "weights" / "best.pt").stat().st_size > 100_000
    import torch

    trained_with = torch.load(model_dir / "weights" / "best.pt", map_location="cpu", weights_only=False)["train_args"]
    assert trained_with["cos_lr"] is True and trained_with["lr0"] == 0.002  # TrainConfig's fields reached train()
    rows = read_results(model_dir / "results.csv")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert "(B)" not in (model_dir / "results.csv").read_text().splitlines()[0]
    assert {"results.png", "BoxPR_curve.png", "confusion_matrix.png"} <= {
        p.name for p in (model_dir / "plots").iterdir()
    }

    params = load_params(workdir / "params.yaml")
    assert run.data.params == {key: str(value) for key, value in flatten(params_dict(params)).items()}
    for key in ("metrics/mAP50", "metrics/mAP50-95", "metrics/precision", "train/box_loss", "val/cls_loss", "lr/pg0"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
    for key in ("precision", "recall", "mAP50", "mAP50-95", "fitness", "epochs"):
        assert run.data.metrics[key] == pytest.approx(metrics[key]), key

    metadata = json.loads((workdir / "data" / "metadata" / "dataset_metadata.json").read_text())
    tags = run.data.tags
    assert tags["git_commit"] == head
    assert tags["dvc_exp_name"] == "exp-one"
    assert tags["dataset_fingerprint"] == metadata["fingerprint"]
    assert tags["raw_dvc_hash"] == (metadata["raw_dvc_hash"] or "")
    assert tags["checkpoint_key"] == checkpoints.checkpoint_key(params, metadata["fingerprint"])
    assert key_dirs(workdir) == []  # a finished training's checkpoints are removed

    def listing(path: str = "") -> set[str]:
        found = set()
        for item in client.list_artifacts(run.info.run_id, path):
            found |= listing(item.path) if item.is_dir else {item.path}
        return found

    artifacts = listing()
    expected = {"weights/best.pt", "metrics.json", "results.csv", "data/data.yaml", "data/dataset_metadata.json"}
    assert expected <= artifacts
    assert "plots/results.png" in artifacts


@pytest.mark.integration
def test_unreachable_tracking_server_fails_the_stage_before_training(workdir):
    closed = f"http://127.0.0.1:{free_port()}"
    set_params(workdir, f"tracking.uri={closed}")
    result = stage(workdir)
    assert result.returncode == 2
    assert closed in result.stderr and "tracking.required=false" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workdir / ".cache").exists() and not (workdir / "models").exists()

    other = f"http://127.0.0.1:{free_port()}"  # MLFLOW_TRACKING_URI wins over tracking.uri
    result = stage(workdir, {"MLFLOW_TRACKING_URI": other})
    assert result.returncode == 2 and other in result.stderr and "MLFLOW_TRACKING_URI" in result.stderr


@pytest.mark.slow
def test_killed_training_resumes_where_it_stopped_and_changed_params_start_over(workdir):
    from mlflow.tracking import MlflowClient

    epochs = 4
    set_params(workdir, f"train.epochs={epochs}", "tracking.experiment=resume")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "stages" / "train.py")],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The stage logs an epoch's line after its checkpoint and state are written: kill right then.
        seen = ""
        while proc.poll() is None and "train: epoch 1/" not in seen:
            ready, _, _ = select.select([proc.stderr], [], [], 300)
            line = proc.stderr.readline() if ready else ""
            if not line:
                break
            seen += line
        assert proc.poll() is None, f"the training ended before it could be killed:\n{seen}"
        proc.send_signal(signal.SIGKILL)  # a spot instance taken back: no clean-up of any kind
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    (first_key,) = key_dirs(workdir)
    killed_after = checkpoint_epoch(first_key / "run" / "weights" / "last.pt")
    assert killed_after is not None and 1 <= killed_after < epochs
    assert not (workdir / "models").exists()

    resumed = ok(stage(workdir))
    assert f"resuming after epoch {killed_after}" in resumed.stderr
    assert key_dirs(workdir) == []  # finished: its checkpoints are removed
    rows = read_results(workdir / "models" / "yolo" / "results.csv")
    assert [int(row["epoch"]) for row in rows] == list(range(1, epochs + 1))
    assert json.loads((workdir / "models" / "yolo" / "metrics.json").read_text())["epochs"] == epochs

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("resume")
    (run,) = client.search_runs([experiment.experiment_id])  # one training, one run, across the kill
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "metrics/mAP50-95")
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))

    set_params(workdir, "train.lr0=0.005", "train.epochs=2")
    restarted = ok(stage(workdir))
    assert "new training" in restarted.stderr and "resuming" not in restarted.stderr
    assert key_dirs(workdir) == []
    assert [row["epoch"] for row in read_results(workdir / "models" / "yolo" / "results.csv")] == ["1", "2"]
    assert len(client.search_runs([experiment.experiment_id])) == 2


@pytest.mark.slow
def test_label_edit_of_the_same_size_is_what_the_next_training_reads(workdir, monkeypatch):
    from ultralytics.data.utils import load_dataset_cache_file

    monkeypatch.setattr(train, "prune_finished", lambda base, key: [])  # keep the view, to read its label cache
    # Also: an unreachable server with tracking.required=false trains, without tracking.
    set_params(workdir, "train.epochs=1", f"tracking.uri=http://127.0.0.1:{free_port()}", "tracking.required=false")
    params = load_params(workdir / "params.yaml")
    labels = sorted((workdir / "data" / "yolo" / "labels" / "train").glob("*.txt"))
    label = next(p for p in labels if p.read_text().startswith("0 "))

    def classes_read(label_path: Path) -> list[int]:
        (key,) = key_dirs(workdir)
        cache = load_dataset_cache_file(key / "data" / "train" / "folders" / "0" / "labels.cache")
        (entry,) = [e for e in cache["labels"] if Path(e["im_file"]).stem == label_path.stem]
        return [int(c) for c in entry["cls"].ravel()]

    train.train_model(params)
    before = classes_read(label)
    assert before[0] == 0
    assert json.loads((workdir / "models" / "yolo" / "mlflow_run.json").read_text())["run_id"] is None  # untracked

    text = label.read_text()
    label.write_text("2" + text[1:])  # same byte size, same paths: Ultralytics' own cache check sees no change
    assert label.stat().st_size == len(text)
    train.train_model(params)
    assert classes_read(label) == [2, *before[1:]]
    assert not list((workdir / "data").rglob("*.cache"))  # no Ultralytics cache ever lands in the data


@pytest.mark.slow
def test_training_makes_no_network_attempt_and_still_plots(workdir):
    set_params(workdir, "train.epochs=1", PLOTS)
    result = ok(stage(workdir))
    assert result.attempts == [], result.attempts
    plots = workdir / "models" / "yolo" / "plots"
    assert (plots / "labels.jpg").is_file()  # drawn with the font Ultralytics would download
    assert (plots / "results.png").is_file()
    assert not (workdir / "yolov8n.pt").exists() and not (workdir / "runs").exists()
    # Not a TTY: one line per epoch, none of Ultralytics' argument dump, layer table or bars.
    assert "train: epoch 1/1" in result.stderr
    assert "\x1b[" not in result.stdout + result.stderr and "\r" not in result.stdout + result.stderr


@pytest.mark.slow
def test_training_leaves_the_users_ultralytics_settings_byte_identical(workdir, tmp_path):
    """The user's settings.json (in $HOME/.config/Ultralytics) holds their own values: nothing may touch it."""
    home = tmp_path / "home"
    user_env = {"HOME": str(home)}
    plain = {k: v for k, v in os.environ.items() if k not in ("YOLO_CONFIG_DIR", "XDG_CONFIG_HOME")}
    # A settings file as Ultralytics itself writes it on the user's machine, then the user's own values.
    subprocess.run([sys.executable, "-c", "import ultralytics"], env={**plain, **user_env}, check=True)
    settings_file = home / ".config" / "Ultralytics" / "settings.json"
    values = json.loads(settings_file.read_text())
    values.update(wandb=True, mlflow=True, sync=True, runs_dir=str(home / "my-runs"), weights_dir=str(home / "w"))
    settings_file.write_text(json.dumps(values, indent=2))
    before = {p.name: p.read_bytes() for p in settings_file.parent.iterdir()}

    set_params(workdir, "train.epochs=1")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "stages" / "train.py")],
        cwd=workdir,
        env={**{k: v for k, v in plain.items() if k != "PYTEST_CURRENT_TEST"}, **user_env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in settings_file.parent.iterdir()} == before  # no font added either
    assert not (home / "my-runs").exists() and not (home / "w").exists()


# Bytes after a JPEG's end marker, as found in the wild: zero padding, a phone's motion-photo video, a camera trailer.
TRAILERS = [
    b"\x00" * 4096,
    b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42" + bytes(range(256)) * 8 + b"MotionPhoto_Data",
    b"CAMERA-TRAILER v2\n" + b"\x01\x02\x03" * 100,
]


@pytest.mark.slow
def test_dvc_repro_trains_keeps_raw_data_and_cache_byte_identical_then_reruns_nothing(make_project, tmp_path):
    """Acceptance: after training on JPEGs with trailing data (which Ultralytics restores in place), data/raw and
    the DVC cache are byte-identical; also: a second repro runs nothing, metrics and plots show."""
    project = make_project()
    project.run("visapp", "sample", "--out", "data/raw", "--images", "16")
    jpegs = sorted((project.root / "data/raw/JPEGImages").glob("*.jpg"))[: len(TRAILERS)]
    for image, trailer in zip(jpegs, TRAILERS, strict=True):
        image.write_bytes(image.read_bytes() + trailer)
    project.run("dvc", "add", "-q", "data/raw")
    project.set_params(*TINY, "train.epochs=1", PLOTS)
    project.commit("sample data (some JPEGs with trailing data), tiny training")
    raw_before = tree_digest(project.root, ("data/raw",))
    cache_before = tree_digest(project.root, (".dvc/cache",))
    raw_inodes = {image.stem: image.stat().st_ino for image in jpegs}

    guard = tmp_path / "jpeg-guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(JPEG_GUARD)
    log = guard / "seen.jsonl"
    python_path = os.pathsep.join(filter(None, [str(guard), os.environ.get("PYTHONPATH")]))
    first = project.run("dvc", "repro", env={"PYTHONPATH": python_path, "JPEG_GUARD_LOG": str(log)})
    assert "Running stage 'train'" in first.stdout
    assert (project.root / "models/yolo/weights/best.pt").is_file()

    report = json.loads((project.root / "data/validated/report.json").read_text())
    warned = {i["path"] for i in report["issues"] if i["code"] == "image_trailing_data"}
    assert warned == {f"JPEGImages/{image.name}" for image in jpegs}
    assert tree_digest(project.root, ("data/raw",)) == raw_before
    cache_after = tree_digest(project.root, (".dvc/cache",))
    assert {path: cache_after.get(path) for path in cache_before} == cache_before  # the stages only add to it
    # Ultralytics checked each of them in the view, restored it there, in a copy: never a link into data/raw.
    seen = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    assert sorted(Path(s["file"]).stem for s in seen) == sorted(raw_inodes), seen
    for entry in seen:
        assert "corrupt JPEG restored and saved" in entry["msg"], entry
        assert not entry["link"] and entry["inode"] != raw_inodes[Path(entry["file"]).stem], entry

    second = project.run("dvc", "repro")
    assert "Running stage" not in second.stdout
    assert "up to date" in project.run("dvc", "status").stdout

    # The tracking store and the checkpoints stay out of git and out of every output.
    git = project.run("git", "status", "--porcelain", "--untracked-files=all").stdout
    changed = {line[3:] for line in git.splitlines() if not line.endswith(".gitignore")}
    assert changed == {"dvc.lock", "data/params.checked", "data/validated/report.json", "data/validated/source.json",
                       "models/yolo/metrics.json", "models/yolo/eval.json"}  # fmt: skip
    assert (project.root / "mlflow.db").is_file() and (project.root / ".cache" / "train").is_dir()

    metrics = json.loads(project.run("dvc", "metrics", "show", "--json").stdout)
    assert "mAP50" in json.dumps(metrics)
    shown = json.loads(project.run("dvc", "exp", "show", "--json").stdout)
    assert "models/yolo/metrics.json" in json.dumps(shown)
    plots = json.loads(project.run("dvc", "plots", "show", "--json").stdout)["data"]
    assert {"mAP", "loss", "precision-recall", "models/yolo/plots/results.png"} <= set(plots)
    values = plots["mAP"][0]["content"]["data"]["values"]
    assert {(v["epoch"], v["field"]) for v in values} == {("1", "metrics/mAP50"), ("1", "metrics/mAP50-95")}


@pytest.mark.integration
def test_a_gpu_training_with_cuda_hidden_stops_at_once_naming_what_is_missing(tmp_path: Path):
    # The GPU runners' config (train=gpu) where torch sees no GPU: the stage must fail before anything else (no
    # data, an unreachable tracking server: either would be the error if the device were checked later).
    from visapp.composition import compose_params_yaml

    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(compose_params_yaml(overrides=["train=gpu"]))
    env = {"CUDA_VISIBLE_DEVICES": "", "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}

    result = stage(work, env=env, timeout=120)

    assert result.returncode == 2, result.stderr
    assert "train.device=cuda needs a CUDA device, and torch sees none" in result.stderr, result.stderr
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in result.stderr or "CPU-only build" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in work.iterdir()] == ["params.yaml"], "nothing was started: no folder, no tracking store"

"""The registry's face: the released model versions of the repository the service runs from, and their weights."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from visapp.errors import VisError
from visapp.service.api.common import ApiError, Caller, Context, Ctx, Prediction, errors, predict_answer, stream

router = APIRouter()


class ModelVersion(BaseModel):
    """A registered model version: its version, tag, commit, stages and more (`list_versions`' row)."""

    model_config = ConfigDict(extra="allow")
    version: str


def registry() -> Path:
    """The repository whose versions the service serves: the one it runs from (409 outside any)."""
    from visapp.integrations import git

    here = Path.cwd()
    if not git.is_repository(here):
        raise ApiError(
            409, "no_registry", "the service does not run from a Git repository, so it has no model versions: "
            "start `visapp serve` in the project's repository (a clone with its tags and DVC remote)"
        )  # fmt: skip
    return here


@router.get("/models", response_model=list[ModelVersion], responses=errors(409))
def models(owner: str = Caller) -> list[ModelVersion]:
    """Released model versions and their stages (the Git tags of the repository the service runs from)."""
    from visapp.registry.versions import list_versions

    registry()
    try:
        return [ModelVersion.model_validate(row) for row in list_versions(".")]
    except VisError as exc:
        raise ApiError(409, "no_registry", str(exc)) from None


def _version_model(ctx: Context, version: str) -> Any:
    """The loaded model of a version (`prod`: the promoted one this service serves): its ONNX export when there
    is one, else its weights."""
    from visapp.registry.export import onnx_of
    from visapp.registry.versions import get_model

    if version == "prod" and ctx.served is not None and ctx.served_weights is not None:
        weights = ctx.served_weights
        chosen = weights.with_suffix(".onnx") if ctx.served.onnx else weights
        return ctx.predictors.loaded(f"served:{ctx.served.sha256}", ctx.served.version, lambda _: chosen)
    root = registry()

    def fetch(folder: Path) -> Path:
        return onnx_of(root, version, folder / "best.onnx") or get_model(root, version, folder / "best.pt", force=True)

    try:
        return ctx.predictors.loaded(f"version:{version}", version, fetch)
    except VisError as exc:
        raise ApiError(404, "unknown_version", str(exc)) from None


@router.post(
    "/models/{version}/predict",
    response_model=Prediction,
    responses=errors(404, 409, 413, 415, 422),
)
def predict_version(
    version: str,
    image: UploadFile = File(description="an image: JPEG, PNG, BMP or WebP"),  # noqa: B008
    confidence: float = Form(0.25, gt=0, le=1, description="the lowest confidence of a box answered"),
    owner: str = Caller,
    ctx: Context = Ctx,
) -> Prediction:
    """A released version's boxes on an image (ONNX Runtime when the version was exported, else PyTorch; loaded
    once per process); `prod`: the promoted model this service serves."""
    return predict_answer(ctx, _version_model(ctx, version), image, confidence)


@router.get(
    "/models/{version}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **errors(404, 409)},
)
def download_version(
    version: str,
    format: Literal["pt", "onnx"] = Query("pt", description="pt: the weights; onnx: the version's ONNX export"),
    owner: str = Caller,
    ctx: Context = Ctx,
) -> StreamingResponse:
    """A released version's weights (`v1.2.0`, `yolo@v1.2.0`, or a stage's: `yolo#prod`, `yolo%23prod` in the
    URL), from the DVC cache or remote; `prod`: the promoted model this service serves (VISAPP_MODEL_VERSION)."""
    from visapp.registry.export import onnx_of
    from visapp.registry.versions import get_model

    suffix = f"best.{format}"
    served = ctx.served is not None and ctx.served_weights is not None and (format == "pt" or ctx.served.onnx)
    if version == "prod" and served and ctx.served and ctx.served_weights:  # the promoted one, loaded at start
        path = ctx.served_weights.with_name(suffix)
        return stream(path.open("rb"), f"{ctx.served.version.replace('@', '-')}-{suffix}")
    registry()
    ctx.settings.work_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="model-", dir=ctx.settings.work_dir))
    try:
        found = (
            get_model(".", version, folder / suffix) if format == "pt" else onnx_of(Path(), version, folder / suffix)
        )
    except VisError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise ApiError(404, "unknown_version", str(exc)) from None
    if found is None:
        shutil.rmtree(folder, ignore_errors=True)
        raise ApiError(
            404, "no_export", f"{version} was never exported to ONNX: `visapp export {version} --format onnx`"
        )
    return stream(found.open("rb"), f"{version.replace('@', '-')}-{suffix}", cleanup=folder)

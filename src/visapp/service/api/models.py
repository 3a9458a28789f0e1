"""The registry's face: the released model versions of the repository the service runs from, and their weights."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from visapp.errors import VisError
from visapp.service.api.common import ApiError, Caller, Context, Ctx, errors, stream

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


@router.get(
    "/models/{version}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **errors(404, 409)},
)
def download_version(version: str, owner: str = Caller, ctx: Context = Ctx) -> StreamingResponse:
    """A released version's weights (`v1.2.0`, `yolo@v1.2.0`, or a stage's: `yolo#prod`, `yolo%23prod` in the
    URL), from the DVC cache or remote; `prod`: the promoted model this service serves (VISAPP_MODEL_VERSION)."""
    from visapp.registry.versions import get_model

    if version == "prod" and ctx.served is not None and ctx.served_weights is not None:  # the promoted one, loaded
        return stream(ctx.served_weights.open("rb"), f"{ctx.served.version.replace('@', '-')}-best.pt")
    registry()
    ctx.settings.work_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="model-", dir=ctx.settings.work_dir))
    try:
        path = get_model(".", version, folder / "best.pt")
    except VisError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise ApiError(404, "unknown_version", str(exc)) from None
    return stream(path.open("rb"), f"{version.replace('@', '-')}-best.pt", cleanup=folder)

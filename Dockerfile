# The VIS image: `visapp serve` (the default command), `visapp worker`, `visapp doctor`, and the pipeline
# (`dvc repro`) on a checkout mounted at /app. Build (BuildKit; podman and buildah need `--format docker`, or their
# OCI format drops the HEALTHCHECK):
#
#   docker build -t visapp .                                    # CPU torch (TORCH_VARIANT=cpu)
#   docker build --build-arg TORCH_VARIANT=cu130 -t visapp .    # CUDA torch: a variant that the PyTorch index
#                                                               # has for the torch scripts/install.sh pins
#   docker build --build-arg TORCH_INDEX_URL= -t visapp .       # torch from pip's configured index (PyPI: CUDA)
#
# Two stages: `build` installs into /opt/venv with scripts/install.sh, the same recipe `make install` runs (torch
# pinned first, the dependencies, the package, opencv-python swapped for opencv-python-headless), in layers ordered
# by how often they change: torch (the recipe, the variant), the dependencies (pyproject.toml), the code (src/). So a
# code change reinstalls the package alone. The final stage copies that environment (pip included: /opt/venv is a
# venv) onto a fresh base with git and a non-root user, without the build's pip cache (a cache mount) or leftovers.
# RUN --mount needs BuildKit (the default builder of Docker 23 and later; buildah and podman have it too).

# Pinned by digest (the index of every platform of this tag); repin: `docker buildx imagetools inspect TAG`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT=cpu
# A build argument, not an ENV: RUN steps see it, the image does not keep it, and an empty value
# (`--build-arg TORCH_INDEX_URL=`) takes torch from pip's configured index, as scripts/install.sh does.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /app
RUN python -m venv /opt/venv
COPY scripts/install.sh scripts/install.sh
# torch alone first: the largest layer, rebuilt only when the recipe, TORCH_VARIANT or TORCH_INDEX_URL changes.
RUN --mount=type=cache,target=/root/.cache/pip bash scripts/install.sh /opt/venv/bin/python
# The dependencies pyproject.toml lists, without the package: rebuilt when they change, not with the code.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    bash scripts/install.sh /opt/venv/bin/python --dependencies-of pyproject.toml
COPY README.md ./
COPY src/ src/
# The package alone. Editable, as `make install`: dvc.yaml names src/visapp/*.py as stage dependencies, so the code
# that `dvc repro` runs must be the code DVC hashes: /app/src, the image's own copy or that of a checkout at /app.
RUN --mount=type=cache,target=/root/.cache/pip bash scripts/install.sh /opt/venv/bin/python --no-deps -e .

FROM ${PYTHON_IMAGE}
# git: DVC, the registry (model versions are git tags) and the train stage (it tags a run with its commit) run it.
# safe.directory: a checkout mounted at /app belongs to the host's user, not to this image's.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && git config --system safe.directory '*' \
    && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin visapp \
    && install -d -o visapp -g visapp /app
COPY --from=build /opt/venv /opt/venv
COPY scripts/healthcheck.py /opt/visapp/healthcheck.py
WORKDIR /app
# The code and the pipeline's definition belong to root: the service can write /app (.visapp/, mlflow.db), not them.
COPY conf/ conf/
COPY stages/ stages/
COPY src/ src/
COPY dvc.yaml params.yaml pyproject.toml README.md .dvcignore ./
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    YOLO_OFFLINE=true \
    YOLO_AUTOINSTALL=false \
    MPLBACKEND=Agg \
    DVC_NO_ANALYTICS=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The commit the image is built from (ecr.yml passes it): a job's lineage names the code that trained it. Last, so a
# new commit reuses every layer above.
ARG GIT_COMMIT=
ENV VISAPP_GIT_COMMIT=${GIT_COMMIT}
USER 10001:10001
EXPOSE 8000
# `visapp serve` answers GET /health (on its --port); any other command (worker, doctor, dvc) is healthy while it runs.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["python", "/opt/visapp/healthcheck.py"]
ENTRYPOINT ["visapp"]
CMD ["serve", "--host", "0.0.0.0"]

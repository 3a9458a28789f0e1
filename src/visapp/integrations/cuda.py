"""torch's view of the CUDA devices: what `visapp doctor` shows, and why a GPU training cannot start."""

from __future__ import annotations

import os
from collections.abc import Mapping


def devices() -> list[tuple[str, int]]:
    """(name, memory in bytes) of each CUDA device torch sees; empty without one (or with a CPU-only torch)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [
        (torch.cuda.get_device_name(i), int(torch.cuda.get_device_properties(i).total_memory))
        for i in range(torch.cuda.device_count())
    ]


def torch_build() -> str | None:
    """The CUDA release this torch was built for (`13.0`); None for a CPU-only build."""
    import torch

    return torch.version.cuda


def why_none(environ: Mapping[str, str] | None = None) -> str:
    """Why torch sees no CUDA device, with the fix: what is missing, for a message a person can act on."""
    import torch

    env = os.environ if environ is None else environ
    build = torch_build()
    if build is None:
        return (
            f"torch {torch.__version__} is a CPU-only build: install a CUDA build (scripts/install.sh with "
            "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130; the image: "
            "`docker build --build-arg TORCH_VARIANT=cu130`)"
        )
    hidden = env.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1", "none", "NoDevFiles"):
        return f"CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU from torch: unset it, or name the GPUs to use"
    return (
        f"torch (built for CUDA {build}) finds no usable GPU: is an NVIDIA GPU there with its driver loaded "
        "(`nvidia-smi` lists it)? in a container: `docker run --gpus all` (and the NVIDIA container toolkit)"
    )

"""torch's view of the CUDA devices, for `visapp doctor` (training picks its device in Ultralytics' session)."""

from __future__ import annotations


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

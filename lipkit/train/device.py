"""check_device: a --device value refused up front, in one line that says what is allowed,
instead of a torch traceback minutes into a run (a typo, or cuda on a CPU-only build)."""
from __future__ import annotations

import torch


def check_device(name: object) -> torch.device:
    """torch.device(name) if this machine can run on it, else ValueError naming the value."""
    try:
        device = torch.device(name)  # type: ignore[arg-type]
    except (RuntimeError, TypeError):
        raise ValueError(f"device={name!r} is not a torch device: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"device={name!r} but {build} (torch {torch.__version__}): use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={name!r} but only {torch.cuda.device_count()} GPU(s) are visible: "
                             f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name!r} but MPS is not available here: use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={name!r}: lipkit runs on cpu, cuda or mps")
    return device

"""accelerate's view of the processes, right on CPU-only machines too (training and the benchmark share it)."""

from __future__ import annotations

import torch


def has_accelerator() -> bool:
    """Whether this machine has a GPU (or another accelerator) accelerate would use."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def partial_state():
    """accelerate's ``PartialState`` for this process. Without an accelerator, only ``cpu=True`` makes processes started
    by ``accelerate launch`` join one process group (gloo) instead of each believing it runs alone."""
    from accelerate import PartialState

    return PartialState(cpu=not has_accelerator())

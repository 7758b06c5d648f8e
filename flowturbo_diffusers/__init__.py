"""flowturbo-diffusers: FlowTurbo sampling (Heun, pseudo-corrector and velocity-refiner steps) for diffusers flow
pipelines.

The public names are imported lazily, so ``import flowturbo_diffusers`` stays cheap and needs no optional extras.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "Plan": "plan",
    "FlowTurboScheduler": "scheduler",
    "VelocityRefiner": "refiner",
    "FlowTurboPipeline": "pipeline",
    "FlowTurboPipelineMixin": "pipeline",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .pipeline import FlowTurboPipeline, FlowTurboPipelineMixin
    from .plan import Plan
    from .refiner import VelocityRefiner
    from .scheduler import FlowTurboScheduler


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

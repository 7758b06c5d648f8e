"""flowturbo-diffusers: FlowTurbo sampling for diffusers flow-matching pipelines."""

__version__ = "0.1.0"

from .plan import Plan
from .scheduler import FlowTurboScheduler

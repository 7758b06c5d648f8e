"""Refiner training: data-free distillation from a flow pipeline's own trajectories, on accelerate.

See ``docs/training.md``. Entry points: :func:`train_refiner` and the ``flowturbo train-refiner`` command.
"""

from .evaluation import calibrate_offset_scale
from .trainer import RefinerTrainingConfig, TrainingResult, read_prompts, train_refiner

__all__ = ["RefinerTrainingConfig", "calibrate_offset_scale", "TrainingResult", "read_prompts", "train_refiner"]

"""Refiner training: data-free distillation from a flow pipeline's own trajectories, on accelerate.

See ``docs/training.md``. Entry points: :func:`train_refiner` and the ``flowturbo train-refiner`` command.
"""

from .trainer import RefinerTrainingConfig, TrainingResult, read_prompts, train_refiner

__all__ = ["RefinerTrainingConfig", "TrainingResult", "read_prompts", "train_refiner"]

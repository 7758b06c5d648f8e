"""The state of one sampling run: the single object a pipeline call's scheduler and refiner routing both read.

``FlowTurboScheduler.set_timesteps`` lays the plan out on the sigma grid and starts a :class:`SamplingRun`; each
``step()`` advances it by one evaluation, and the routing hook (routing.py) asks it which evaluation a transformer call
answers and keeps the refiner's per-branch velocities in it. Because there is one run object, owned by the scheduler
and replaced at every ``set_timesteps``, the two cannot drift out of step, and nothing of a run survives into the next
(the way torchdiffeq's ``FixedGridODESolver.integrate`` owns its grid and state for one solve).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .plan import Evaluation


@dataclass
class BranchVelocities:
    """The refiner's velocities on one guidance branch (method.md, R step): ``handed_on`` is ``v_prev``, the velocity
    the last step handed on; ``step_velocity`` is the current R step's ``v0`` between its two evaluations."""

    handed_on: torch.Tensor | None = None
    step_velocity: torch.Tensor | None = None


@dataclass
class SamplingRun:
    """One run of a plan over a sigma grid, from ``set_timesteps`` to the last ``step()``.

    Attributes:
        evaluations: The plan's evaluations in call order, one per entry of the scheduler's ``timesteps``.
        sigma_grid: The ``N + 1`` sigmas of the grid, ending at 0 (float32, CPU).
        step_sizes: ``h_i = sigma_{i+1} - sigma_i`` per step, shape ``(N,)``, on the sampling device.
        kinds: The step kind of each of the ``N`` steps.
        grid_timesteps: The ``N`` timesteps the model sees at the grid points (float32, CPU).
        begin_index: The entry the pipeline starts at (img2img), or ``None`` for the first.
        index: The entry whose ``step()`` comes next; ``None`` before the first ``step()``.
        held_velocity: The scheduler's held velocity (float32): ``v0`` between the two evaluations of an H, R or
            leading P step, or the ``v1`` a following P step reuses.
        held_step_size: The step size that goes with it (per token when the pipeline passes per-token timesteps).
        branches: The refiner's velocities per guidance branch (:meth:`branch`).
        counts: Base-model and refiner evaluations answered so far, counted per transformer call (so per guidance
            branch when the pipeline calls the branches separately).
        answered: The entries of R evaluations the routing hook answered, which ``step()`` checks.
    """

    evaluations: tuple[Evaluation, ...] = ()
    sigma_grid: torch.Tensor | None = None
    step_sizes: torch.Tensor | None = None
    kinds: tuple[str, ...] = ()
    grid_timesteps: torch.Tensor | None = None
    begin_index: int | None = None
    index: int | None = None
    held_velocity: torch.Tensor | None = None
    held_step_size: torch.Tensor | None = None
    branches: dict[tuple, BranchVelocities] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"base": 0, "refiner": 0})
    answered: set[int] = field(default_factory=set)
    _calls_in_evaluation: tuple[int | None, dict] = (None, {})

    @property
    def current_index(self) -> int:
        """The entry whose model call comes next (the begin index before the first ``step()``)."""
        if self.index is not None:
            return self.index
        return self.begin_index or 0

    @property
    def current_evaluation(self) -> Evaluation | None:
        """The plan evaluation the next model call answers; ``None`` when the run is over (or was never laid out)."""
        index = self.current_index
        return self.evaluations[index] if index < len(self.evaluations) else None

    def branch(self, context: str | None) -> BranchVelocities:
        """The velocities of the guidance branch a transformer call belongs to.

        Branches are told apart by the pipeline's ``cache_context`` name (Flux true CFG and Wan call "cond" and
        "uncond" separately) and by the order of calls within one evaluation (SD3 skip-layer guidance adds a second
        call); batched ``[uncond, cond]`` calls carry both branches in the batch dimension of one tensor.
        """
        index, calls = self._calls_in_evaluation
        if index != self.current_index:
            calls = {}
            self._calls_in_evaluation = (self.current_index, calls)
        ordinal = calls.get(context, 0)
        calls[context] = ordinal + 1
        return self.branches.setdefault((context, ordinal), BranchVelocities())

"""FlowTurboScheduler: FlowTurbo's Heun, pseudo-corrector, refiner and Euler steps as a drop-in diffusers scheduler.

A diffusers pipeline calls the transformer once per entry of ``scheduler.timesteps`` and then ``step()``. So the
scheduler lists one entry per velocity evaluation of the plan (see :func:`~flowturbo_diffusers.plan.evaluation_layout`)
and each ``step()`` returns the latent at which the next evaluation happens, at the sigma of the next entry. The
latent a pipeline hands back is taken as the truth, so edits made between calls (inpainting re-noises the known
region, callbacks may change latents) carry over into the integration.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput, logging

from .plan import DEFAULT_PLAN, EULER, REFINER, Evaluation, Plan, evaluation_layout
from .sampling_run import SamplingRun
from .sigmas import EULER_GRID, SIGMA_SCHEDULES, compute_sigma_grid, translate_scheduler_config
from .steps import UPDATES

logger = logging.get_logger(__name__)


@dataclass
class FlowTurboSchedulerOutput(BaseOutput):
    """Output of :meth:`FlowTurboScheduler.step`.

    Args:
        prev_sample (`torch.Tensor`):
            The latent for the next model call (a grid point or a predicted point), or the final latent after the
            last call.
    """

    prev_sample: torch.Tensor


class FlowTurboScheduler(SchedulerMixin, ConfigMixin):
    """FlowTurbo sampling (Heun, pseudo-corrector, refiner and Euler steps following a plan) for flow pipelines.

    Build it from the pipeline's own scheduler so that the sigma grid keeps its meaning::

        pipe.scheduler = FlowTurboScheduler.from_config(pipe.scheduler.config, plan="H1P5")

    Args:
        num_train_timesteps, shift, use_dynamic_shifting, base_shift, max_shift, base_image_seq_len,
        max_image_seq_len, shift_terminal, use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas, time_shift_type:
            As in `FlowMatchEulerDiscreteScheduler`; they define the sigma grid.
        plan (`str`, defaults to `"H1P*"`):
            The sampling plan, e.g. `"H1P5R3"`, or a fill plan such as `"H1P*"` whose `*` kind takes the steps left
            over from `num_inference_steps`. See `docs/scheduler.md`.
        sigma_schedule (`str`, defaults to `"FlowMatchEulerDiscreteScheduler"`):
            The diffusers scheduler whose grid is used: `"FlowMatchEulerDiscreteScheduler"`, or
            `"DPMSolverMultistepScheduler"` / `"UniPCMultistepScheduler"` with flow sigmas (`shift` is their
            `flow_shift`). `from_config` sets it from the config it is given.
    """

    _compatibles = []
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        shift: float = 1.0,
        use_dynamic_shifting: bool = False,
        base_shift: float | None = 0.5,
        max_shift: float | None = 1.15,
        base_image_seq_len: int = 256,
        max_image_seq_len: int = 4096,
        shift_terminal: float | None = None,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        time_shift_type: str = "exponential",
        plan: str = DEFAULT_PLAN,
        sigma_schedule: str = EULER_GRID,
    ):
        Plan.parse(plan)
        if sigma_schedule not in SIGMA_SCHEDULES:
            raise ValueError(f"sigma_schedule must be one of {SIGMA_SCHEDULES}, got {sigma_schedule!r}.")
        if use_karras_sigmas + use_exponential_sigmas + use_beta_sigmas > 1:
            raise ValueError("Only one of use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas can be set.")
        if time_shift_type not in ("exponential", "linear"):
            raise ValueError(f"time_shift_type must be 'exponential' or 'linear', got {time_shift_type!r}.")
        # Set by FlowTurboPipelineMixin for the duration of a call whose R evaluations go to a refiner.
        self.refiner_attached = False
        self._warned_refiner_missing = False
        # Until set_timesteps, expose the training schedule as FlowMatchEulerDiscreteScheduler does.
        training = torch.linspace(1.0, 1.0 / num_train_timesteps, num_train_timesteps)
        if not use_dynamic_shifting:
            training = shift * training / (1 + (shift - 1) * training)
        self.sigmas = training
        self.timesteps = training * num_train_timesteps
        self.sigma_max, self.sigma_min = float(training[0]), float(training[-1])
        self.num_inference_steps = None
        # Everything one run holds, replaced by every set_timesteps (sampling_run.py).
        self.run = SamplingRun()
        self._updates = dict(UPDATES)
        # Under CUDA graphs the model's outputs live in buffers the next replay overwrites, so the velocities held
        # across calls must be copies (set by sample-aware compilation, compile.py).
        self.copy_held_velocities = False

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """Build from any flow scheduler's config (Euler, Heun, DPM-Solver or UniPC with flow sigmas).

        The keys that define the grid keep their meaning; a DPM-Solver or UniPC ``flow_shift`` becomes ``shift`` on
        that scheduler's grid; keys FlowTurbo does not use are dropped rather than carried along.
        """
        if config is not None:
            config = {**translate_scheduler_config(config), "_class_name": cls.__name__}
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @property
    def plan(self) -> Plan:
        """The parsed sampling plan."""
        return Plan.parse(self.config.plan)

    def set_plan(self, plan: str | Plan) -> None:
        """Switch to another plan; it takes effect at the next ``set_timesteps``."""
        self.register_to_config(plan=str(Plan.parse(plan)))

    @property
    def evaluations(self) -> tuple[Evaluation, ...]:
        """The plan's evaluations in call order, one per entry of ``timesteps`` (empty before ``set_timesteps``)."""
        return self.run.evaluations

    @property
    def sigma_grid(self) -> torch.Tensor | None:
        """The ``N + 1`` sigmas of the grid the plan runs on, ending at 0 (``None`` before ``set_timesteps``)."""
        return self.run.sigma_grid

    @property
    def step_index(self) -> int | None:
        """Index of the next entry of ``timesteps`` (one entry per model evaluation); ``None`` before the first step."""
        return self.run.index

    @property
    def begin_index(self) -> int | None:
        """Entry at which the pipeline starts (set by img2img and inpaint pipelines via ``set_begin_index``)."""
        return self.run.begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start the run at entry ``begin_index`` of ``timesteps`` (what diffusers' img2img pipelines call)."""
        self.run.begin_index = begin_index

    @property
    def current_evaluation_index(self) -> int:
        """Index of the entry whose model call comes next."""
        return self.run.current_index

    @property
    def current_evaluation(self) -> Evaluation | None:
        """The plan evaluation the next model call answers (``None`` when the run is over)."""
        return self.run.current_evaluation

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: list[float] | None = None,
        mu: float | None = None,
        timesteps: list[float] | None = None,
    ) -> None:
        """Lay out the plan on the grid the pipeline's own scheduler would use for ``num_inference_steps`` steps.

        Arguments are those of ``FlowMatchEulerDiscreteScheduler.set_timesteps``. Afterwards ``timesteps`` holds one
        entry per model evaluation of the plan and ``sigmas`` the matching sigmas, followed by 0.
        """
        for name, custom in (("sigmas", sigmas), ("timesteps", timesteps)):
            if custom is None:
                continue
            if num_inference_steps is not None and len(custom) != num_inference_steps:
                raise ValueError(f"`{name}` has {len(custom)} values but num_inference_steps={num_inference_steps}.")
            num_inference_steps = len(custom)
        if sigmas is not None and timesteps is not None:
            raise ValueError("Pass either `sigmas` or `timesteps` to FlowTurboScheduler.set_timesteps, not both.")
        if num_inference_steps is None:
            raise ValueError("Pass num_inference_steps (or sigmas / timesteps) to set_timesteps.")
        kinds = self.plan.kinds(num_inference_steps)
        grid, grid_timesteps = compute_sigma_grid(self.config, num_inference_steps, sigmas, mu, timesteps)
        evaluations = evaluation_layout(kinds)
        if REFINER in kinds and not self.refiner_attached and not self._warned_refiner_missing:
            self._warned_refiner_missing = True
            logger.warning(
                f"Plan '{self.plan}' has {kinds.count(REFINER)} refiner (R) steps but no refiner is attached, so "
                "they run as Heun steps on the base model (2 evaluations each). Load a refiner with "
                "FlowTurboPipeline.from_pretrained(..., refiner=...) or pipe.load_refiner(...) to make them cheap."
            )
        # The model sees the grid's timesteps; an evaluation at the final sigma (0) gets timestep 0.
        model_timesteps = torch.cat([grid_timesteps, torch.zeros(1)])
        indices = torch.tensor([evaluation.sigma_index for evaluation in evaluations])
        self.num_inference_steps = num_inference_steps
        self.timesteps = model_timesteps[indices].to(device)
        self.sigmas = torch.cat([grid[indices], grid[-1:]])
        self.sigma_max, self.sigma_min = float(grid[0]), float(grid[-2])
        self.run = SamplingRun(evaluations, grid, (grid[1:] - grid[:-1]).to(device))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> FlowTurboSchedulerOutput | tuple:
        """Take the velocity of the current evaluation and return the latent for the next one.

        Args:
            model_output (`torch.Tensor`): The (guided) velocity predicted at ``sample``.
            timestep (`float` or `torch.Tensor`): The entry of ``timesteps`` the model was called with (unused: the
                scheduler counts entries, so repeated timesteps are never ambiguous).
            sample (`torch.Tensor`): The latent the model was called with.
            generator: Unused; FlowTurbo sampling is deterministic.
            return_dict (`bool`): Return a :class:`FlowTurboSchedulerOutput` rather than a tuple.
        """
        run = self.run
        if not run.evaluations:
            raise ValueError("Call set_timesteps() before step().")
        index = run.current_index
        if index >= len(run.evaluations):
            raise ValueError(
                f"step() was called more often than plan '{self.config.plan}' has evaluations "
                f"({len(run.evaluations)}); call set_timesteps() before every run."
            )
        evaluation = run.evaluations[index]
        step_size = run.step_sizes[evaluation.step]
        velocity = model_output.to(torch.float32)
        current = sample.to(torch.float32)
        updates = self._updates
        if evaluation.point == "start" and evaluation.kind != EULER:
            # First evaluation of an H, R (or leading P) step: go to the predicted point.
            run.held_velocity = self._keep(velocity)
            prev_sample = updates["predict"](current, velocity, step_size)
        else:
            # The step ends here. If a P step follows, it reuses this velocity and predicts its point right away.
            following = run.evaluations[index + 1] if index + 1 < len(run.evaluations) else None
            next_step_size = run.step_sizes[following.step] if following and following.point == "predicted" else None
            if evaluation.kind == EULER:
                prev_sample = (
                    updates["predict"](current, velocity, step_size)
                    if next_step_size is None
                    else updates["euler_then_predict"](current, velocity, step_size, next_step_size)
                )
            elif run.held_velocity is None:
                # The run starts at this predicted point (img2img): it is the next grid point itself.
                prev_sample = current if next_step_size is None else updates["predict"](current, velocity, next_step_size)
            elif next_step_size is None:
                prev_sample = updates["correct"](current, run.held_velocity, velocity, step_size)
            else:
                prev_sample = updates["correct_then_predict"](current, run.held_velocity, velocity, step_size,
                                                               next_step_size)
            run.held_velocity = None if next_step_size is None else self._keep(velocity)
        run.index = index + 1
        prev_sample = prev_sample.to(sample.dtype)
        if not return_dict:
            return (prev_sample,)
        return FlowTurboSchedulerOutput(prev_sample=prev_sample)

    def _keep(self, velocity: torch.Tensor) -> torch.Tensor:
        """A velocity held until a later step: a copy when ``copy_held_velocities`` is set (CUDA graphs)."""
        return velocity.clone() if self.copy_held_velocities else velocity

    def compile_steps(self, backend: str = "inductor", **options) -> None:
        """Use compiled versions of the step updates (``torch.compile`` with ``fullgraph=True``, static shapes).

        Each update is a pure function of tensors (step sizes included), so a plan's steps reuse a handful of graphs.
        They are compiled without CUDA graphs: they are single fused element-wise kernels, and their outputs are held
        across model calls, which CUDA graph buffers do not allow.
        """
        options = {key: value for key, value in options.items() if key != "mode"}
        self._updates = {
            name: torch.compile(update, fullgraph=True, dynamic=False, backend=backend, **options)
            for name, update in UPDATES.items()
        }

    def index_for_timestep(self, timestep: float | torch.Tensor, schedule_timesteps: torch.Tensor | None = None) -> int:
        """First entry of ``timesteps`` equal to ``timestep`` (used only before a run whose begin index is unknown)."""
        schedule_timesteps = self.timesteps if schedule_timesteps is None else schedule_timesteps
        timestep = torch.as_tensor(timestep, device=schedule_timesteps.device, dtype=schedule_timesteps.dtype)
        matches = (schedule_timesteps == timestep).nonzero()
        if len(matches) == 0:
            raise ValueError(f"Timestep {float(timestep)} is not one of the scheduler's timesteps.")
        return int(matches[0])

    def scale_noise(
        self, sample: torch.Tensor, timestep: float | torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forward flow process ``sigma * noise + (1 - sigma) * sample`` at the sigma of the current entry.

        As in ``FlowMatchEulerDiscreteScheduler``, the sigma comes from the scheduler's position (the begin index
        before the first step, the current entry after it), so it stays right when timesteps repeat.
        """
        sigmas = self.sigmas.to(device=sample.device, dtype=sample.dtype)
        timestep = torch.as_tensor(timestep).reshape(-1)
        if self.run.index is None and self.run.begin_index is None:
            indices = [self.index_for_timestep(t) for t in timestep]
        else:
            indices = [self.current_evaluation_index] * timestep.shape[0]
        sigma = sigmas[indices].flatten()
        while sigma.dim() < sample.dim():
            sigma = sigma.unsqueeze(-1)
        return sigma * noise + (1.0 - sigma) * sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps

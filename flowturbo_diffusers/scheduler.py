"""FlowTurboScheduler: FlowTurbo's Heun, pseudo-corrector, refiner and Euler steps as a drop-in diffusers scheduler.

A diffusers pipeline calls the transformer once per entry of ``scheduler.timesteps`` and then ``step()``. So the
scheduler lists one entry per velocity evaluation of the plan (see :func:`~flowturbo_diffusers.plan.evaluation_layout`)
and each ``step()`` returns the latent at which the next evaluation happens, at the sigma of the next entry. The
latent a pipeline hands back is taken as the truth, so edits made between calls (inpainting re-noises the known
region, callbacks may change latents) carry over into the integration.

It keeps the whole contract of ``FlowMatchEulerDiscreteScheduler`` that flow pipelines rely on (diffusers 0.42):
``set_timesteps(num_inference_steps, device, sigmas, mu, timesteps)``, ``set_begin_index``, ``scale_noise``,
``scale_model_input``, ``step(..., per_token_timesteps=...)``, and a start found from the first timestep when a
pipeline slices ``timesteps`` without ``set_begin_index``. Grids, plans and arguments it cannot handle are refused with
a ``ValueError`` before any sampling (docs/scheduler.md, "Support").
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput, logging

from .plan import DEFAULT_PLAN, EULER, PSEUDO_CORRECTOR, REFINER, Evaluation, Plan, check_step_count, evaluation_layout
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
        evaluate_at_zero (`bool`, defaults to `False`):
            Evaluate the model at sigma 0, the predicted point of the last step. By default the last step ends with an
            Euler step instead (plan.py), as diffusers' `FlowMatchHeunDiscreteScheduler` does: pipelines that divide
            by sigma (LTX2) get NaN from an evaluation at 0, and it costs one more evaluation. See
            `docs/scheduler.md`, "The last step".
        calibrated_grid (`list[float]`, *optional*):
            A grid found by calibration (calibration.py): ``K + 1`` times from 1 to 0, before the pipeline's shift,
            for the plan's ``K`` steps. The sigmas are these times through the pipeline's own shift (static, or
            dynamic with the call's ``mu``, so the grid follows the resolution as the pipeline's own grid does); what
            the pipeline passes as ``sigmas`` is replaced, and ``num_inference_steps`` must be ``K``.
        calibration (`dict`, *optional*): What calibration measured (base model, fingerprint, errors); the model
            card of ``save_pretrained`` shows it.
        invert_sigmas (`bool`, defaults to `False`):
            As in `FlowMatchEulerDiscreteScheduler` (Mochi): the model sees the timestep of ``1 - sigma`` and its output
            is the negative velocity. The grid is the same.

    Raises:
        ValueError: for a plan, grid setting or config it cannot integrate, naming the problem and the fix.
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
        evaluate_at_zero: bool = False,
        invert_sigmas: bool = False,
        calibrated_grid: list[float] | None = None,
        calibration: dict | None = None,
    ):
        Plan.parse(plan)
        if calibrated_grid is not None:
            check_calibrated_grid(calibrated_grid, plan)
        if sigma_schedule not in SIGMA_SCHEDULES:
            raise ValueError(f"sigma_schedule must be one of {SIGMA_SCHEDULES}, got {sigma_schedule!r}.")
        if use_karras_sigmas + use_exponential_sigmas + use_beta_sigmas > 1:
            raise ValueError("Only one of use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas can be set.")
        if time_shift_type not in ("exponential", "linear"):
            raise ValueError(f"time_shift_type must be 'exponential' or 'linear', got {time_shift_type!r}.")
        if not (isinstance(num_train_timesteps, int) and num_train_timesteps > 0):
            raise ValueError(f"num_train_timesteps must be a positive whole number, such as 1000; got "
                             f"{num_train_timesteps!r}.")
        for name, value in (("shift", shift), ("base_shift", base_shift), ("max_shift", max_shift)):
            if value is not None and not (math.isfinite(value) and (value > 0 or name != "shift")):
                raise ValueError(f"{name} must be a finite number{' above 0' if name == 'shift' else ''}, got {value}; "
                                 "it sets how the sigma grid is shifted (diffusers' FlowMatchEulerDiscreteScheduler).")
        if shift_terminal is not None and not 0 < shift_terminal < 1:
            raise ValueError(f"shift_terminal must lie between 0 and 1 (the last sigma before 0), got {shift_terminal}.")
        # Set by FlowTurboPipelineMixin for the duration of a call whose R evaluations go to a refiner: a refiner is
        # there (no warning about R steps running as H steps), and the routing hooks must answer every R evaluation.
        self.refiner_attached = False
        self.refiner_routed = False
        self._warned_refiner_missing = False
        self._warned_start = False
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
        that scheduler's grid. The source's other keys are kept in the config unchanged, so that swapping back,
        ``DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)``, gives the original scheduler exactly.

        Raises:
            ValueError: for configs FlowTurbo cannot integrate (see ``sigmas.translate_scheduler_config``).
        """
        carried = {}
        if config is not None:
            translated, carried = translate_scheduler_config(config)
            config = {**translated, "_class_name": cls.__name__}
        built = super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)
        scheduler = built[0] if return_unused_kwargs else built
        carried = {key: value for key, value in carried.items() if key not in scheduler.config}
        if carried:
            scheduler.register_to_config(**carried)
        return built

    @property
    def plan(self) -> Plan:
        """The parsed sampling plan."""
        return Plan.parse(self.config.plan)

    def set_plan(self, plan: str | Plan) -> None:
        """Switch to another plan; it takes effect at the next ``set_timesteps``. Another plan than a calibrated one
        drops the calibrated grid (with a warning): the grid was found for that plan."""
        plan = str(Plan.parse(plan))
        if self.config.calibrated_grid is not None and plan != self.config.plan:
            logger.warning(f"Plan '{plan}' replaces the calibrated plan '{self.config.plan}'; its calibrated grid is "
                           "dropped, and the pipeline's own grid is used.")
            self.register_to_config(calibrated_grid=None, calibration=None)
        self.register_to_config(plan=plan)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs) -> None:
        """``save_config`` as diffusers' schedulers do, plus, for a calibrated plan, a ``README.md`` model card that
        names the base model, its fingerprint and what calibration measured (also what ``push_to_hub`` uploads)."""
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        if self.config.calibration:
            from .model_card import scheduler_model_card

            scheduler_model_card(self).save(os.path.join(save_directory, "README.md"))

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
        """Start the run at entry ``begin_index`` of ``timesteps`` (what diffusers' img2img pipelines call).

        Pipelines count ``strength`` in entries (``timesteps[t_start * order:]``), and entries are model evaluations.
        Where the entry is not the grid point of the same index (a plan with more than one evaluation in a step before
        it, other than the first H), the run starts at another sigma than the pipeline's own scheduler would, and a
        warning says so once, with the fix. ``FlowTurboPipeline`` maps strength onto steps and never gets here.
        """
        run = self.run
        run.begin_index = begin_index
        if 0 < begin_index < len(run.evaluations) and not self._warned_start:
            evaluation = run.evaluations[begin_index]
            if evaluation.sigma_index != begin_index and begin_index < len(run.sigma_grid) - 1:
                self._warned_start = True
                logger.warning(
                    f"The pipeline starts part-way (img2img or inpaint strength) at entry {begin_index} of plan "
                    f"'{self.plan}', at sigma {float(run.sigma_grid[evaluation.sigma_index]):.4g}. Pipelines count "
                    "strength in scheduler entries, one per model evaluation, and this plan has steps with two "
                    f"evaluations before that entry, so a scheduler with one evaluation per step would start at sigma "
                    f"{float(run.sigma_grid[begin_index]):.4g}. To start where the pipeline's own scheduler starts, "
                    "sample with FlowTurboPipeline.from_pipe(pipe, plan=...), which maps strength onto the plan's "
                    "steps, or use a plan with one evaluation per step after the first, such as 'H1P*'."
                )

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

        Arguments are those of ``FlowMatchEulerDiscreteScheduler.set_timesteps``: custom ``sigmas`` (the grid, shifted
        as Euler shifts it) and custom ``timesteps`` (what the model sees) may come alone or together, one per step,
        and ``mu`` is the dynamic shift. Afterwards ``timesteps`` holds one entry per model evaluation of the plan and
        ``sigmas`` the matching sigmas, followed by 0.

        Raises:
            ValueError: before any sampling, for a step count that is not a whole number or does not fit the plan,
                custom values of the wrong length, and grids that are not finite, within [0, 1], non-increasing and
                ending at 0; each message names the argument and a valid example.
        """
        source = "num_inference_steps"
        for name, custom in (("sigmas", sigmas), ("timesteps", timesteps)):
            if custom is None:
                continue
            if num_inference_steps is not None and len(custom) != num_inference_steps:
                raise ValueError(f"`{name}` has {len(custom)} values but num_inference_steps={num_inference_steps}; "
                                 f"pass one value per step (or leave num_inference_steps out).")
            num_inference_steps, source = len(custom), name
        if sigmas is not None and timesteps is not None and len(sigmas) != len(timesteps):
            raise ValueError(f"`sigmas` has {len(sigmas)} values but `timesteps` has {len(timesteps)}; pass one of each "
                             "per step.")
        if num_inference_steps is None:
            raise ValueError("Pass num_inference_steps (or sigmas / timesteps) to set_timesteps, e.g. "
                             "set_timesteps(28).")
        num_inference_steps = check_step_count(num_inference_steps, source)
        calibrated = self.config.calibrated_grid
        if calibrated is not None:
            if num_inference_steps != len(calibrated) - 1:
                raise ValueError(
                    f"This scheduler holds a calibrated plan '{self.plan}' of {len(calibrated) - 1} steps, but "
                    f"{num_inference_steps} were requested ({source}). Call the pipeline with num_inference_steps="
                    f"{len(calibrated) - 1} (FlowTurboPipeline does so by itself), or calibrate a plan for "
                    f"{num_inference_steps} steps."
                )
            times = [float(value) for value in calibrated[:-1]]
            scale = self.config.num_train_timesteps
            sigmas, timesteps = times, ([value * scale for value in times] if timesteps is not None else None)
            config = {**self.config, "sigma_schedule": EULER_GRID}  # the times go through Euler's shift
        else:
            config = self.config
        kinds = self.plan.kinds(num_inference_steps, source)
        grid, grid_timesteps = compute_sigma_grid(config, num_inference_steps, sigmas, mu, timesteps)
        if REFINER in kinds and not self.refiner_attached and not self._warned_refiner_missing:
            self._warned_refiner_missing = True
            logger.warning(
                f"Plan '{self.plan}' has {kinds.count(REFINER)} refiner (R) steps but no refiner is attached, so "
                "they run as Heun steps on the base model (2 evaluations each). Load a refiner with "
                "FlowTurboPipeline.from_pretrained(..., refiner=...) or pipe.load_refiner(...) to make them cheap."
            )
        self.num_inference_steps = num_inference_steps
        self.sigma_max, self.sigma_min = float(grid[0]), float(grid[-2])
        self._lay_out(kinds, grid, grid_timesteps, first_step=0, device=device)

    def begin_at_step(self, step: int) -> torch.Tensor:
        """Start the run at grid step ``step`` exactly, as the pipeline's own scheduler does for img2img ``strength``,
        and return the run's ``timesteps``.

        The plan's steps from ``step`` on are laid out afresh as a run of their own (a P step there has no earlier
        velocity, so it evaluates its start point as a leading P does), and ``begin_index`` is 0. Used by
        ``FlowTurboPipelineMixin.get_timesteps``; call it after ``set_timesteps``.
        """
        run = self.run
        if run.sigma_grid is None:
            raise ValueError("Call set_timesteps() before begin_at_step().")
        if not 0 <= step <= len(run.kinds):
            raise ValueError(f"step must be between 0 and {len(run.kinds)} (the run's steps), got {step}.")
        self._lay_out(run.kinds[step:], run.sigma_grid, run.grid_timesteps, first_step=step,
                      device=run.step_sizes.device)
        self.run.begin_index = 0
        return self.timesteps

    @contextmanager
    def grid_view(self, grid_timesteps: torch.Tensor):
        """Within the block, ``timesteps`` lists one timestep per grid step, as the pipeline's own scheduler would, and
        ``set_begin_index`` does nothing: for running a pipeline's own ``get_timesteps`` on the grid
        (``FlowTurboPipelineMixin.get_timesteps``)."""
        timesteps, self.timesteps = self.timesteps, grid_timesteps
        self.set_begin_index = lambda begin_index=0: None
        try:
            yield
        finally:
            self.timesteps = timesteps
            del self.set_begin_index

    def _lay_out(self, kinds, grid, grid_timesteps, first_step: int, device) -> None:
        """The run of ``kinds`` (steps ``first_step`` on of the grid): ``timesteps``, ``sigmas`` and a new run."""
        local = evaluation_layout(kinds, self.config.evaluate_at_zero)
        evaluations = tuple(Evaluation(e.step + first_step, e.kind, e.point) for e in local)
        # The model sees the grid's timesteps; an evaluation at the final sigma (0) gets timestep 0 (or, with inverted
        # sigmas, num_train_timesteps).
        final = torch.full((1,), float(self.config.num_train_timesteps if self.config.invert_sigmas else 0))
        model_timesteps = torch.cat([grid_timesteps, final])
        indices = torch.tensor([evaluation.sigma_index for evaluation in evaluations], dtype=torch.long)
        self.timesteps = model_timesteps[indices].to(device)
        self.sigmas = torch.cat([grid[indices], grid[-1:]])
        full_kinds = (self.run.kinds[:first_step] if first_step else ()) + tuple(kinds)
        self.run = SamplingRun(evaluations, grid, (grid[1:] - grid[:-1]).to(device), kinds=full_kinds,
                               grid_timesteps=grid_timesteps)

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor | None = None) -> torch.Tensor:
        """The sample unchanged: flow models take the latent as it is (what Bria calls on non-Euler schedulers)."""
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: torch.Generator | None = None,
        per_token_timesteps: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> FlowTurboSchedulerOutput | tuple:
        """Take the velocity of the current evaluation and return the latent for the next one.

        The signature is ``FlowMatchEulerDiscreteScheduler.step``'s, so every keyword a pipeline passes to Euler has
        its Euler meaning.

        Args:
            model_output (`torch.Tensor`): The (guided) velocity predicted at ``sample``, shape of ``sample``.
            timestep (`float` or `torch.Tensor`): The entry of ``timesteps`` the model was called with. Used only to
                find where a run starts when the pipeline sliced ``timesteps`` without ``set_begin_index``.
            sample (`torch.Tensor`): The latent the model was called with.
            s_churn, s_tmin, s_tmax, s_noise, generator: Accepted and unused, as in Euler's deterministic step.
            per_token_timesteps (`torch.Tensor`, *optional*): Timesteps per token, shape ``(B, L)`` for a sample of
                shape ``(B, L, C)`` (LTXCondition). As in Euler, each token steps from its own sigma to the next grid
                sigma below it, and ``model_output`` is then the negative velocity (Euler's per-token update is
                ``x + (sigma_token - sigma_next) * model_output``); every step kind uses these per-token step sizes.
            return_dict (`bool`): Return a :class:`FlowTurboSchedulerOutput` rather than a tuple.

        Raises:
            ValueError: before ``set_timesteps``, or when called more often than the plan has evaluations.
        """
        run = self.run
        if not run.evaluations:
            raise ValueError("Call set_timesteps() before step().")
        if run.index is None:
            run.index = run.begin_index if run.begin_index is not None else self._entry_of(timestep)
        index = run.index
        if index >= len(run.evaluations):
            raise ValueError(
                f"step() was called more often than plan '{self.config.plan}' has evaluations "
                f"({len(run.evaluations)}); call set_timesteps() before every run."
            )
        evaluation = run.evaluations[index]
        if evaluation.kind == REFINER and self.refiner_routed and index not in run.answered:
            raise ValueError(
                f"The refiner (R) evaluation at entry {index} of plan '{self.plan}' reached no refiner: the pipeline "
                "computed it with a model FlowTurbo does not hook (FlowTurboPipeline hooks `transformer` and "
                "`transformer_2`). Use a plan without R steps with this pipeline, and please report it."
            )
        velocity = model_output.to(torch.float32)
        current = sample.to(torch.float32)
        if self.config.invert_sigmas:
            velocity = -velocity  # Euler steps x + (s'_next - s') * output with s' = 1 - sigma
        token_sigma = None
        if per_token_timesteps is not None:
            velocity = -velocity
            token_sigma = per_token_timesteps.to(device=current.device, dtype=torch.float32)
            token_sigma = token_sigma / self.config.num_train_timesteps
        updates = self._updates
        if evaluation.point == "start" and evaluation.kind != EULER:
            # First evaluation of an H, R (or leading P) step: go to the predicted point.
            step_size = self._step_size(evaluation.step, token_sigma, current.dim())
            run.held_velocity, run.held_step_size = self._keep(velocity), step_size
            prev_sample = updates["predict"](current, velocity, step_size)
        else:
            # The step ends here. If a P step follows, it reuses this velocity and predicts its point right away (the
            # last step's prediction is the final sample when it makes no evaluation at sigma 0).
            if evaluation.kind == EULER:
                step_size = self._step_size(evaluation.step, token_sigma, current.dim())
            else:
                step_size = run.held_step_size
            following = evaluation.step + 1
            reuses = following < len(run.kinds) and run.kinds[following] == PSEUDO_CORRECTOR
            next_step_size = None
            if reuses:
                # The tokens' sigmas where this step ends: given at a predicted point, one step on from an E step's start.
                reached = token_sigma
                if token_sigma is not None and evaluation.point == "start":
                    reached = token_sigma + _squeeze_like(step_size, token_sigma)
                next_step_size = self._step_size(following, reached, current.dim())
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
            run.held_step_size = next_step_size
        run.index = index + 1
        prev_sample = prev_sample.to(sample.dtype)
        if not return_dict:
            return (prev_sample,)
        return FlowTurboSchedulerOutput(prev_sample=prev_sample)

    def _step_size(self, step: int, token_sigma: torch.Tensor | None, dims: int) -> torch.Tensor:
        """``h`` of grid step ``step`` (a 0-d tensor), or per token from the tokens' sigmas ``(B, L)`` to the next grid
        sigma below each, shaped to broadcast over a sample of ``dims`` dimensions (Euler's per-token step)."""
        if token_sigma is None:
            return self.run.step_sizes[step]
        grid = self.run.sigma_grid.to(token_sigma.device)
        below = grid.view(-1, *([1] * token_sigma.dim())) < token_sigma[None] - 1e-6
        next_sigma = (below * grid.view(-1, *([1] * token_sigma.dim()))).amax(dim=0)
        step_size = next_sigma - token_sigma
        while step_size.dim() < dims:
            step_size = step_size.unsqueeze(-1)
        return step_size

    def _entry_of(self, timestep) -> int:
        """The entry a run starts at when the pipeline set no begin index (it sliced ``timesteps`` itself, as
        WanVideoToVideo does): found from the first timestep it passes.

        A timestep taken from ``timesteps`` (iterating the sliced tensor) is a view of it, whose storage offset is the
        entry exactly. Otherwise the timestep's value is looked up; H and R steps repeat a timestep (the predicted
        point of one step and the start of the next are at the same sigma), and the later entry is taken, so that a
        wrong guess makes the pipeline's last ``step()`` fail loudly rather than leave the last correction out.
        """
        timesteps = self.timesteps
        if (isinstance(timestep, torch.Tensor) and timestep.numel() == 1 and timestep.device == timesteps.device
                and timestep.untyped_storage().data_ptr() == timesteps.untyped_storage().data_ptr()):
            return (timestep.storage_offset() - timesteps.storage_offset()) // max(timesteps.stride(0), 1)
        return self.index_for_timestep(timestep)

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
        """The entry of ``timesteps`` equal to ``timestep``, for a run whose begin index is unknown: the last of the
        entries with that value (see :meth:`_entry_of`)."""
        schedule_timesteps = self.timesteps if schedule_timesteps is None else schedule_timesteps
        timestep = torch.as_tensor(timestep, device=schedule_timesteps.device, dtype=schedule_timesteps.dtype)
        matches = (schedule_timesteps == timestep.reshape(-1)[0]).nonzero()
        if len(matches) == 0:
            raise ValueError(f"Timestep {float(timestep.reshape(-1)[0])} is not one of the scheduler's timesteps; "
                             "pass an entry of scheduler.timesteps.")
        return int(matches[-1])

    def scale_noise(
        self, sample: torch.Tensor, timestep: float | torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forward flow process ``sigma * noise + (1 - sigma) * sample`` at the sigma of the current entry.

        As in ``FlowMatchEulerDiscreteScheduler``, the sigma comes from the scheduler's position (the begin index
        before the first step, the current entry after it), so it stays right when timesteps repeat; with neither
        (a pipeline that sliced ``timesteps`` itself), from the entry of ``timestep`` (:meth:`_entry_of`).
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


def check_calibrated_grid(grid, plan: str) -> None:
    """Refuse a calibrated grid that is not ``K + 1`` times from 1 down to 0 for a plan of ``K`` steps."""
    parsed = Plan.parse(plan)
    values = [float(value) for value in grid]
    if parsed.num_steps is None or parsed.num_steps != len(values) - 1:
        raise ValueError(f"A calibrated grid of {len(values)} times needs a fixed plan of {len(values) - 1} steps, "
                         f"got plan '{plan}'.")
    if values[0] != 1.0 or values[-1] != 0.0 or any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError(f"A calibrated grid must decrease strictly from 1 to 0, got {values}.")


def _squeeze_like(step_size: torch.Tensor, token_sigma: torch.Tensor) -> torch.Tensor:
    """A per-token step size shaped for a sample, back to the shape of the tokens' sigmas."""
    return step_size.reshape(token_sigma.shape) if step_size.dim() else step_size

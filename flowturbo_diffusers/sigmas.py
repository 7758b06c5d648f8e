"""Sigma grids, computed by the diffusers scheduler whose grid a pipeline ships with.

FlowTurbo changes how each interval is integrated, not where the grid points lie: with ``num_inference_steps`` equal to
the plan's step count, the grid is exactly the one the pipeline's own scheduler would use. Rather than re-derive every
diffusers spacing option, we ask that scheduler (``FlowMatchEulerDiscreteScheduler`` for SD3, Flux and most flow
pipelines; ``DPMSolverMultistepScheduler`` / ``UniPCMultistepScheduler`` with flow sigmas for Sana and Wan).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

EULER_GRID = "FlowMatchEulerDiscreteScheduler"
FLOW_SIGMA_GRIDS = ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
SIGMA_SCHEDULES = (EULER_GRID, *FLOW_SIGMA_GRIDS)

# Keys of FlowMatchEulerDiscreteScheduler's config that keep their meaning in FlowTurboScheduler's.
EULER_KEYS = (
    "num_train_timesteps",
    "shift",
    "use_dynamic_shifting",
    "base_shift",
    "max_shift",
    "base_image_seq_len",
    "max_image_seq_len",
    "shift_terminal",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "time_shift_type",
)
# Keys only DPMSolverMultistepScheduler / UniPCMultistepScheduler configs have, to tell them apart when a config comes
# from memory (``pipe.scheduler.config`` carries no ``_class_name``).
_DPM_ONLY_KEYS = ("algorithm_type", "lambda_min_clipped", "use_lu_lambdas", "euler_at_final")
_UNIPC_ONLY_KEYS = ("predict_x0", "solver_p", "disable_corrector")


def translate_scheduler_config(config: dict[str, Any]) -> dict[str, Any]:
    """Map a flow scheduler's config to FlowTurboScheduler's keys, keeping its meaning.

    A DPM-Solver or UniPC config with ``use_flow_sigmas`` becomes ``shift = flow_shift`` on that scheduler's grid;
    keys FlowTurbo does not use (``use_flow_sigmas``, ``solver_order``, ...) are dropped so they cannot leak into the
    pipeline (Flux, for one, ignores its own sigmas when it sees ``use_flow_sigmas``).
    """
    config = dict(config)
    if config.get("invert_sigmas"):
        raise ValueError(
            "This scheduler config sets invert_sigmas=True (Mochi-style inverted sigmas), which FlowTurboScheduler "
            "does not support; use it with pipelines that integrate from sigma 1 to sigma 0."
        )
    if config.get("stochastic_sampling"):
        raise ValueError(
            "This scheduler config sets stochastic_sampling=True; FlowTurbo integrates the flow ODE deterministically. "
            "Set stochastic_sampling=False to use FlowTurboScheduler."
        )
    class_name = config.get("_class_name")
    if not config.get("use_flow_sigmas") and config.get("prediction_type", "flow_prediction") != "flow_prediction":
        raise ValueError(
            f"The scheduler config ({class_name or 'prediction_type=' + repr(config['prediction_type'])}) is not a "
            "flow-matching config (no flow sigmas, prediction_type is not 'flow_prediction'); FlowTurboScheduler "
            "only drives flow-matching pipelines such as SD3, Flux, Sana or Wan."
        )
    if "use_flow_sigmas" in config or "flow_shift" in config:
        if class_name not in FLOW_SIGMA_GRIDS:
            if any(key in config for key in _UNIPC_ONLY_KEYS):
                class_name = "UniPCMultistepScheduler"
            elif any(key in config for key in _DPM_ONLY_KEYS):
                class_name = "DPMSolverMultistepScheduler"
            else:  # another flow-sigma scheduler: keep its shift, on the flow-match grid
                class_name = EULER_GRID
        translated = {key: config[key] for key in EULER_KEYS if key in config and key != "shift"}
        translated["shift"] = config.get("flow_shift", 1.0)
        translated["sigma_schedule"] = class_name
    else:
        translated = {key: config[key] for key in EULER_KEYS if key in config}
    for key in ("plan", "sigma_schedule", "_diffusers_version"):
        if key in config:
            translated[key] = config[key]
    return translated


def _grid_scheduler(config: dict[str, Any], name: str):
    import diffusers

    euler_config = {key: config[key] for key in EULER_KEYS if key in config}
    if name == EULER_GRID:
        return diffusers.FlowMatchEulerDiscreteScheduler(**euler_config)
    kwargs = dict(
        num_train_timesteps=config["num_train_timesteps"],
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=config["shift"],
        use_dynamic_shifting=config["use_dynamic_shifting"],
        time_shift_type=config["time_shift_type"],
        use_karras_sigmas=config["use_karras_sigmas"],
        use_exponential_sigmas=config["use_exponential_sigmas"],
        use_beta_sigmas=config["use_beta_sigmas"],
        final_sigmas_type="zero",
    )
    if name == "UniPCMultistepScheduler":
        kwargs["shift_terminal"] = config["shift_terminal"]
    return getattr(diffusers, name)(**kwargs)


def compute_sigma_grid(
    config: dict[str, Any],
    num_inference_steps: int | None = None,
    sigmas: list[float] | np.ndarray | None = None,
    mu: float | None = None,
    timesteps: list[float] | np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(sigmas, timesteps)`` of the grid: N + 1 sigmas ending at 0 and the N timesteps the model sees.

    Arguments have the meaning of ``FlowMatchEulerDiscreteScheduler.set_timesteps``; custom ``sigmas`` or
    ``timesteps`` are read as that scheduler reads them, whichever grid the config names.
    """
    if not config["use_dynamic_shifting"]:
        mu = None  # ignored, as FlowMatchEulerDiscreteScheduler ignores it without dynamic shifting
    elif mu is None:
        raise ValueError("`mu` must be passed when `use_dynamic_shifting` is set to be `True`")
    custom = {key: value for key, value in (("sigmas", sigmas), ("timesteps", timesteps)) if value is not None}
    scheduler = _grid_scheduler(config, EULER_GRID if custom else config["sigma_schedule"])
    if mu is not None:
        custom["mu"] = mu
    scheduler.set_timesteps(None if "sigmas" in custom or "timesteps" in custom else num_inference_steps, "cpu", **custom)
    grid = scheduler.sigmas.to(torch.float32).cpu()
    model_timesteps = scheduler.timesteps.to(torch.float32).cpu()
    if grid[-1] != 0:
        raise ValueError(f"The sigma grid must end at 0, but {type(scheduler).__name__} ended it at {grid[-1]:.4g}.")
    return grid, model_timesteps

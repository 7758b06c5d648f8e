"""Sigma grids, computed by the diffusers scheduler whose grid a pipeline ships with.

FlowTurbo changes how each interval is integrated, not where the grid points lie: with ``num_inference_steps`` equal to
the plan's step count, the grid is exactly the one the pipeline's own scheduler would use. Rather than re-derive every
diffusers spacing option, we ask that scheduler (``FlowMatchEulerDiscreteScheduler`` for SD3, Flux and most flow
pipelines; ``DPMSolverMultistepScheduler`` / ``UniPCMultistepScheduler`` with flow sigmas for Sana and Wan).
"""

from __future__ import annotations

import math
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


# The defaults of the grid keys _grid_scheduler reads (FlowMatchEulerDiscreteScheduler's), for configs that omit some.
GRID_DEFAULTS = (
    ("num_train_timesteps", 1000), ("shift", 1.0), ("use_dynamic_shifting", False), ("time_shift_type", "exponential"),
    ("use_karras_sigmas", False), ("use_exponential_sigmas", False), ("use_beta_sigmas", False),
    ("shift_terminal", None),
)
# FlowTurboScheduler's settings that no diffusers scheduler has, and Euler's invert_sigmas (Mochi), which changes what
# the model sees and returns rather than the grid.
OWN_KEYS = ("plan", "sigma_schedule", "evaluate_at_zero", "invert_sigmas", "calibrated_grid", "calibration")
GRID_SPACINGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def translate_scheduler_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Map a flow scheduler's config to FlowTurboScheduler's keys, keeping its meaning.

    Returns ``(translated, carried)``: ``translated`` holds FlowTurboScheduler's own settings (a DPM-Solver or UniPC
    ``flow_shift`` becomes ``shift`` on that scheduler's grid); ``carried`` holds the source's other public keys
    (``use_flow_sigmas``, ``prediction_type``, ``solver_order``...) unchanged. FlowTurboScheduler keeps them in its
    config so that ``SourceClass.from_config(pipe.scheduler.config)`` gives the source scheduler back exactly.

    Raises:
        ValueError: for configs FlowTurbo cannot integrate, before any sampling: stochastic sampling, a model output that is not a flow velocity (``prediction_type`` other than
            ``"flow_prediction"``), or a DPM-Solver / UniPC flow config whose karras, exponential or beta spacing
            diffusers computes from the DDPM noise schedule (a grid that starts near sigma 157).
    """
    config = dict(config)
    if config.get("stochastic_sampling"):
        raise ValueError(
            "This scheduler config sets stochastic_sampling=True; FlowTurbo integrates the flow ODE deterministically. "
            "Set stochastic_sampling=False to use FlowTurboScheduler."
        )
    class_name = config.get("_class_name")
    if class_name == "FlowTurboScheduler":  # our own config (pipe.scheduler.config, or a saved folder): as it is
        translated = {key: config[key] for key in (*EULER_KEYS, *OWN_KEYS) if key in config}
        return translated, {key: value for key, value in config.items()
                            if not key.startswith("_") and key not in translated}
    flow_sigma_config = "use_flow_sigmas" in config or "flow_shift" in config
    prediction_type = config.get("prediction_type", "flow_prediction")
    if prediction_type != "flow_prediction" or (flow_sigma_config and not config.get("use_flow_sigmas")):
        reason = (f"its model output is {prediction_type!r}, not a flow velocity ('flow_prediction')"
                  if prediction_type != "flow_prediction" else "it does not use flow sigmas (use_flow_sigmas=False)")
        raise ValueError(
            f"The scheduler config ({class_name or 'a scheduler config'}) is not a flow-matching config: {reason}. "
            "FlowTurboScheduler integrates a flow velocity (SD3, Flux, Sana, Wan...); a pipeline whose model predicts "
            "noise or x0 cannot use it. If the model is a flow model, fix the config: prediction_type="
            "'flow_prediction' (and use_flow_sigmas=True for DPM-Solver or UniPC)."
        )
    if flow_sigma_config:
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
        spacing = [key for key in GRID_SPACINGS if config.get(key)]
        if spacing and class_name in FLOW_SIGMA_GRIDS:
            _check_flow_spacing(translated, class_name, spacing[0])
    else:
        translated = {key: config[key] for key in EULER_KEYS if key in config}
    for key in (*OWN_KEYS, "_diffusers_version"):
        if key in config:
            translated[key] = config[key]
    carried = {key: value for key, value in config.items() if not key.startswith("_") and key not in translated}
    return translated, carried


def _check_flow_spacing(translated: dict[str, Any], class_name: str, spacing: str) -> None:
    """Refuse a DPM-Solver or UniPC flow config whose ``spacing`` diffusers computes from the DDPM noise schedule
    rather than from the flow sigmas (DPM-Solver's karras, exponential and beta spacings, UniPC's exponential and
    beta): its grid starts near sigma 157, for the pipeline's own scheduler too. Found by building the grid."""
    settings = {**dict(GRID_DEFAULTS), **translated}
    scheduler = _grid_scheduler(settings, class_name)
    scheduler.set_timesteps(8, "cpu")
    grid = scheduler.sigmas.to(torch.float32)
    if torch.isfinite(grid).all() and float(grid.max()) <= 1 + 1e-6:
        return
    raise ValueError(
        f"This {class_name} config sets use_flow_sigmas=True and {spacing}=True. diffusers computes that spacing from "
        f"the DDPM noise schedule, not from the flow sigmas, so its grid starts near sigma {float(grid[0]):.0f} (the "
        f"pipeline's own scheduler samples from it too). Set {spacing}=False, or build the scheduler from a "
        f"FlowMatchEulerDiscreteScheduler config with {spacing}=True, whose spacing is of flow sigmas."
    )


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

    Arguments have the meaning of ``FlowMatchEulerDiscreteScheduler.set_timesteps``; custom ``sigmas`` and
    ``timesteps``, alone or together (CogView4 passes both: the sigmas make the grid, shifted as Euler shifts them, and
    the timesteps are what the model sees), are read as that scheduler reads them, whichever grid the config names.

    Raises:
        ValueError: naming the problem and the fix, before any sampling, for custom sigmas or timesteps that are not
            finite, out of range or increasing, a ``mu`` that is missing (dynamic shifting) or not finite, and any
            resulting grid that is not finite, within [0, 1], non-increasing and ending at 0.
    """
    if not config["use_dynamic_shifting"]:
        mu = None  # ignored, as FlowMatchEulerDiscreteScheduler ignores it without dynamic shifting
    elif mu is None:
        raise ValueError(
            "`mu` must be passed when `use_dynamic_shifting` is set to be `True`: this config shifts the grid by the "
            "image size, and the pipeline computes `mu` from it (Flux: calculate_shift(image_seq_len, ...))."
        )
    elif not math.isfinite(float(mu)):
        raise ValueError(f"`mu` must be a finite number (the log of the dynamic shift), got {mu}.")
    custom = {}
    if sigmas is not None:
        custom["sigmas"] = _checked_values(sigmas, "sigmas", 1.0)
    if timesteps is not None:
        custom["timesteps"] = _checked_values(timesteps, "timesteps", float(config["num_train_timesteps"]))
    scheduler = _grid_scheduler(config, EULER_GRID if custom else config["sigma_schedule"])
    if mu is not None:
        custom["mu"] = mu
    scheduler.set_timesteps(None if custom.keys() - {"mu"} else num_inference_steps, "cpu", **custom)
    grid = scheduler.sigmas.to(torch.float32).cpu()
    model_timesteps = scheduler.timesteps.to(torch.float32).cpu()
    if config.get("invert_sigmas"):
        # Mochi's model takes 1 - sigma (Euler's invert_sigmas: timesteps = (1 - sigma) * num_train_timesteps).
        model_timesteps = (1.0 - grid[:-1]) * config["num_train_timesteps"]
    if len(grid) == 2 and config.get("shift_terminal") and not torch.isfinite(grid[0]):
        # One step stretched to a terminal sigma divides 0 by 0 in diffusers (the grid is [nan, 0]). The stretch
        # maps the last sigma of the grid before it onto shift_terminal; with one step that is the first sigma,
        # which must stay the start of the run, so the right one-step grid is the unstretched one.
        grid, model_timesteps = compute_sigma_grid({**config, "shift_terminal": None}, num_inference_steps, sigmas,
                                                   mu, timesteps)
    check_sigma_grid(grid, f"{type(scheduler).__name__}'s grid")
    return grid, model_timesteps


def check_sigma_grid(grid: torch.Tensor, source: str = "the sigma grid") -> None:
    """Refuse a grid that cannot be integrated: it must be finite, within [0, 1], non-increasing and end at 0.

    Raises:
        ValueError: naming what is wrong with ``grid`` (``source`` says where it came from) and what to change.
    """
    values = [round(float(s), 4) for s in grid[:6]] + (["..."] if len(grid) > 6 else [])
    fix = ("Check the scheduler config (shift, shift_terminal, spacing options) and any sigmas or timesteps the "
           "pipeline passes; FlowTurbo integrates from sigma 1 (noise) down to sigma 0 (data).")
    if not torch.isfinite(grid).all():
        raise ValueError(f"{source} has non-finite sigmas {values}. {fix}")
    if (grid < 0).any() or (grid > 1 + 1e-6).any():
        raise ValueError(f"{source} leaves [0, 1]: {values} (sigma {float(grid.max()):.4g} to "
                         f"{float(grid.min()):.4g}). {fix}")
    if (grid[1:] > grid[:-1]).any():
        raise ValueError(f"{source} increases somewhere: {values}; sampling would run backwards. {fix}")
    if grid[-1] != 0:
        raise ValueError(f"{source} must end at 0, but ends at {float(grid[-1]):.4g}. {fix}")


def _checked_values(values, name: str, top: float) -> np.ndarray:
    """Custom ``sigmas`` (in [0, 1]) or ``timesteps`` (in [0, num_train_timesteps]) as a float array, checked."""
    array = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64).reshape(-1)
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` has non-finite values ({array[:6].tolist()}...); pass finite {name}.")
    if (array < 0).any() or (array > top + 1e-6).any():
        raise ValueError(f"`{name}` must lie within [0, {top:g}], got values from {array.min():.4g} to "
                         f"{array.max():.4g}; {name} run from noise ({top:g}) towards the data (0).")
    if (np.diff(array) > 0).any():
        raise ValueError(f"`{name}` must not increase (sampling runs from noise to data), got {array[:6].tolist()}...")
    return array

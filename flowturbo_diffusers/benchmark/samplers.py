"""The samplers the benchmark compares: the families, their points (a step count or a FlowTurbo plan, and the grid
they run on), the default grid of points, and the calibrations the calibrated families come from. How each one is
switched on in a pipeline is :mod:`.switch`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .grids import ays_style_grid, time_uniform_grid

EULER, HEUN, DPM2, DPM3, UNIPC = "Euler", "Heun", "DPM-Solver++(2M)", "DPM-Solver++(3M)", "UniPC"
FLOWTURBO_HP, FLOWTURBO_HPR = "FlowTurbo H/P", "FlowTurbo H/P/R"
PAB, MAGCACHE = "Euler + PAB", "Euler + MagCache"
# Calibrated grids (calibration.py): times before the pipeline's shift, so they follow its shift and mu. FlowTurbo's
# calibrated plans search step kinds and times together; the OSS grids are Euler's (kinds "E", the dynamic program of
# OSS, arXiv 2503.21774), which UniPC also runs on.
FLOWTURBO_CALIBRATED, EULER_OSS, UNIPC_OSS = "FlowTurbo calibrated", "Euler, OSS grid", "UniPC, OSS grid"
# Fixed sigma grids (grids.py), used as they are, without the pipeline's shift.
EULER_UNIFORM, FLOWTURBO_UNIFORM = "Euler, time-uniform grid", "FlowTurbo H/P, time-uniform grid"
EULER_AYS, FLOWTURBO_AYS = "Euler, AYS-style grid", "FlowTurbo H/P, AYS-style grid"

# Every family whose points are FlowTurbo plans: together they make "FlowTurbo (best plan)" in the headline.
FLOWTURBO_FAMILIES = (FLOWTURBO_HP, FLOWTURBO_HPR, FLOWTURBO_CALIBRATED, FLOWTURBO_UNIFORM, FLOWTURBO_AYS)
# Families whose grid holds times before the pipeline's shift (the others' grids are sigmas).
SHIFTED_GRID_FAMILIES = (FLOWTURBO_CALIBRATED, EULER_OSS, UNIPC_OSS)
# Euler on another grid runs as FlowTurbo's E plan, which is exactly Euler's method (docs/scheduler.md).
EULER_ON_A_GRID = (EULER_OSS, EULER_UNIFORM, EULER_AYS)
# Families that are not calibrated: the plans calibration is measured against (analysis.calibration_gains).
UNCALIBRATED_PLAN_FAMILIES = (FLOWTURBO_HP, EULER, HEUN, EULER_UNIFORM, FLOWTURBO_UNIFORM, EULER_AYS, FLOWTURBO_AYS)

FIXED_GRIDS = {EULER_UNIFORM: time_uniform_grid, FLOWTURBO_UNIFORM: time_uniform_grid,
               EULER_AYS: ays_style_grid, FLOWTURBO_AYS: ays_style_grid}


@dataclass(frozen=True)
class SamplerSpec:
    """One point of the benchmark: a sampler family at a step count, or a FlowTurbo plan, on the pipeline's grid or
    on ``grid`` (``steps + 1`` values from 1 to 0: times before the pipeline's shift for
    :data:`SHIFTED_GRID_FAMILIES`, sigmas for the others)."""

    family: str
    steps: int
    plan: str | None = None
    grid: tuple[float, ...] | None = None

    @property
    def name(self) -> str:
        if self.family in FLOWTURBO_FAMILIES:
            return f"{self.family} {self.plan}"
        return f"{self.family}, {self.steps} steps"


def default_samplers(with_refiner: bool, quick: bool = False) -> list[SamplerSpec]:
    """The benchmark's grid of samplers, except the calibrated ones (:func:`calibrated_samplers`). ``quick`` keeps
    two points per family, one on the fixed grids (for smoke tests)."""
    steps = {
        EULER: [4, 6, 8, 12, 16, 24],
        HEUN: [3, 4, 6, 8, 12],
        DPM2: [4, 6, 8, 12, 16],
        DPM3: [4, 6, 8, 12, 16],
        UNIPC: [4, 6, 8, 12, 16],
        PAB: [8, 12, 16, 24],
        MAGCACHE: [8, 12, 16, 24],
    }
    # Steps on the fixed grids: Euler around the fidelity levels, H1P* where calibrated plans are compared at equal
    # cost (4, 6 and 8 evaluations; H1P* at N steps makes N evaluations).
    fixed = {EULER_UNIFORM: [6, 12], FLOWTURBO_UNIFORM: [4, 6, 8], EULER_AYS: [6, 12], FLOWTURBO_AYS: [4, 6, 8]}
    hp_plans = ["H1P2", "H1P3", "H1P4", "H1P5", "H1P7", "H1P9", "H1P11", "H1P13", "H2P10", "H2P12"]
    # FlowTurbo's best plan is read off the Pareto curve of all its plans, so the grid is dense where that curve is
    # made: three R steps after 3 to 13 P steps (more R steps lose fidelity above ~40 dB), two after few P steps.
    hpr_plans = ["H1P1R2", "H1P2R2", "H1P2R3", "H1P2R4", "H1P3R2", "H1P3R3", "H1P3R4", "H1P4R2", "H1P4R3", "H1P4R4",
                 "H1P5R3", "H1P6R3", "H1P7R3", "H1P8R3", "H1P9R3", "H1P9R4", "H1P11R3", "H1P11R4", "H1P13R3", "H2P8R4"]
    if quick:
        steps = {family: counts[1:3] for family, counts in steps.items()}
        fixed = {family: counts[:1] for family, counts in fixed.items()}
        hp_plans, hpr_plans = hp_plans[1:3], hpr_plans[2:4]
    from ..plan import Plan

    specs = [SamplerSpec(family, n) for family, counts in steps.items() for n in counts]
    specs += [SamplerSpec(FLOWTURBO_HP, Plan.parse(p).num_steps, p) for p in hp_plans]
    if with_refiner:
        specs += [SamplerSpec(FLOWTURBO_HPR, Plan.parse(p).num_steps, p) for p in hpr_plans]
    for family, counts in fixed.items():
        for n in counts:
            plan = f"E{n}" if family in EULER_ON_A_GRID else f"H1P{n - 1}"
            specs.append(SamplerSpec(family, n, plan, FIXED_GRIDS[family](n)))
    return specs


def default_calibrations(budgets: tuple[int, ...] | None = None, quick: bool = False) -> list:
    """The calibrations the calibrated families come from (``calibration.CalibrationSettings``): a FlowTurbo plan
    (kinds HPE) and an OSS Euler grid (kinds E) at each of ``budgets`` base evaluations (default 4, 6, 8 and 12), with
    calibration's default search. No held-out samples: the benchmark's own samples are the held-out evaluation.
    ``quick``: the first budget only, on a small search (a smoke test)."""
    from ..calibration import CalibrationSettings

    budgets = tuple(budgets) if budgets is not None else (4, 6, 8, 12)
    search = dict(candidates=8, max_span=4, samples=2, refine_passes=1) if quick else {}
    return [CalibrationSettings(budget=budget, kinds=kinds, held_out_samples=0, **search)
            for kinds in ("HPE", "E") for budget in (budgets[:1] if quick else budgets)]


def calibrated_samplers(calibrations: list[dict]) -> list[SamplerSpec]:
    """The points of the calibrated families, from the benchmark's calibrations (dicts with ``kinds``, ``plan`` and
    ``grid``, as ``run.Benchmark.calibrate`` records them): each FlowTurbo plan on its grid, and Euler and UniPC on
    each OSS grid. DPM-Solver++ is not run on them: in diffusers 0.42.1 its ``set_timesteps`` takes no custom sigmas,
    and custom timesteps only without flow sigmas."""
    from ..plan import Plan

    specs = []
    for calibration in calibrations:
        grid, steps = tuple(calibration["grid"]), len(calibration["grid"]) - 1
        if calibration["kinds"] == "E":
            specs += [SamplerSpec(EULER_OSS, steps, f"E{steps}", grid), SamplerSpec(UNIPC_OSS, steps, None, grid)]
        else:
            plan = str(Plan.parse(calibration["plan"]))
            specs.append(SamplerSpec(FLOWTURBO_CALIBRATED, steps, plan, grid))
    return list(dict.fromkeys(specs))  # two budgets can find the same plan and grid


def flowturbo_spec(plan: str, has_refiner: bool) -> SamplerSpec:
    """The benchmark point of a fixed FlowTurbo plan; a clear error if it needs a refiner the benchmark lacks."""
    from ..plan import Plan

    parsed = Plan.parse(plan)
    if parsed.num_steps is None:
        raise ValueError(f"A benchmarked plan (--compile-plan) must have a fixed step count, e.g. 'H1P5R3', not "
                         f"'{plan}'.")
    if parsed.has_refiner_steps and not has_refiner:
        raise ValueError(f"Plan '{plan}' has refiner steps but the benchmark has no refiner; pass --refiner, or a "
                         "plan without R steps such as --compile-plan H1P5.")
    return SamplerSpec(FLOWTURBO_HPR if parsed.has_refiner_steps else FLOWTURBO_HP, parsed.num_steps, str(parsed))

"""The samplers the benchmark compares: the families, their points (a step count or a FlowTurbo plan) and the default
grid. How each one is switched on in a pipeline is :mod:`.switch`.
"""

from __future__ import annotations

from dataclasses import dataclass

EULER, HEUN, DPM2, DPM3, UNIPC = "Euler", "Heun", "DPM-Solver++(2M)", "DPM-Solver++(3M)", "UniPC"
FLOWTURBO_HP, FLOWTURBO_HPR = "FlowTurbo H/P", "FlowTurbo H/P/R"
PAB, MAGCACHE = "Euler + PAB", "Euler + MagCache"
FLOWTURBO_FAMILIES = (FLOWTURBO_HP, FLOWTURBO_HPR)


@dataclass(frozen=True)
class SamplerSpec:
    """One point of the benchmark: a sampler family at a step count (or a FlowTurbo plan)."""

    family: str
    steps: int
    plan: str | None = None

    @property
    def name(self) -> str:
        return f"{self.family} {self.plan}" if self.plan else f"{self.family}, {self.steps} steps"


def default_samplers(with_refiner: bool, quick: bool = False) -> list[SamplerSpec]:
    """The benchmark's grid of samplers. ``quick`` keeps two points per family (for smoke tests)."""
    steps = {
        EULER: [4, 6, 8, 12, 16, 24, 32],
        HEUN: [3, 4, 6, 8, 12, 16],
        DPM2: [4, 6, 8, 12, 16],
        DPM3: [4, 6, 8, 12, 16],
        UNIPC: [4, 6, 8, 12, 16],
        PAB: [8, 12, 16, 24],
        MAGCACHE: [8, 12, 16, 24],
    }
    hp_plans = ["H1P2", "H1P3", "H1P4", "H1P5", "H1P7", "H1P9", "H1P11", "H1P13", "H2P10", "H2P12"]
    # FlowTurbo's best plan is read off the Pareto curve of all its plans, so the grid is dense where that curve is
    # made: three R steps after 3 to 13 P steps (more R steps lose fidelity above ~40 dB), two after few P steps.
    hpr_plans = ["H1P1R2", "H1P2R2", "H1P2R3", "H1P2R4", "H1P3R2", "H1P3R3", "H1P3R4", "H1P4R2", "H1P4R3", "H1P4R4",
                 "H1P5R3", "H1P6R3", "H1P7R3", "H1P8R3", "H1P9R3", "H1P9R4", "H1P11R3", "H1P11R4", "H1P13R3", "H2P8R4"]
    if quick:
        steps = {family: counts[1:3] for family, counts in steps.items()}
        hp_plans, hpr_plans = hp_plans[1:3], hpr_plans[2:4]
    from ..plan import Plan

    specs = [SamplerSpec(family, n) for family, counts in steps.items() for n in counts]
    specs += [SamplerSpec(FLOWTURBO_HP, Plan.parse(p).num_steps, p) for p in hp_plans]
    if with_refiner:
        specs += [SamplerSpec(FLOWTURBO_HPR, Plan.parse(p).num_steps, p) for p in hpr_plans]
    return specs


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

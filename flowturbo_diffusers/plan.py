"""Sampling plans: which kind of step runs on each interval of the sigma grid.

A plan is written as in the FlowTurbo paper, a run of step kinds with counts, e.g. ``"H1P5R3"``: one Heun step,
five pseudo-corrector steps, three refiner steps (see ``docs/scheduler.md``). One count may be ``*``; that kind then
takes every step the pipeline's ``num_inference_steps`` leaves over, so ``"H1P*"`` fits any step count.

This module is pure bookkeeping (no torch): it parses plans, resolves them to a step count and lays out the model
evaluations a plan needs, which is what the scheduler hands to a diffusers pipeline as ``timesteps``.

No evaluation happens at sigma 0 unless asked for (``evaluate_at_zero``): the step onto the data ends with an Euler
step from its start velocity, as diffusers' ``FlowMatchHeunDiscreteScheduler`` and k-diffusion's ``sample_heun`` end,
because some pipelines divide by sigma (LTX2 converts velocities to x0 and back) and get NaN there. An H step there
then costs 1 evaluation, an R step 1 refiner evaluation, and a P step none (it is an Euler step with the reused
velocity). Every step before it keeps its second order, so the run stays second order (docs/scheduler.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

HEUN, PSEUDO_CORRECTOR, REFINER, EULER = "H", "P", "R", "E"
STEP_KINDS = {
    HEUN: "Heun (2 base-model evaluations)",
    PSEUDO_CORRECTOR: "pseudo-corrector (1 evaluation, reuses the previous step's last velocity)",
    REFINER: "refiner (2 refiner evaluations, no base-model evaluation)",
    EULER: "Euler (1 evaluation)",
}
FILL = "*"
DEFAULT_PLAN = "H1P*"
MAX_STEPS = 10_000  # far above any sampling run; bounds what a plan or a step count may ask for
EXAMPLE = "valid plans look like 'H1P5R3' (9 steps) or 'H1P*' (fills any step count)"

_TOKEN = re.compile(r"([A-Za-z])(\*|[+-]?\d+)?")


@dataclass(frozen=True)
class Evaluation:
    """One velocity evaluation of a plan: the transformer (or the refiner, for R steps) is called once for it.

    ``point`` says where the velocity is evaluated: ``"start"`` is the step's start point ``(x_i, sigma_i)``,
    ``"predicted"`` the Euler-predicted point ``(x~, sigma_{i+1})`` (method.md, "The three kinds of step").
    """

    step: int
    kind: str
    point: Literal["start", "predicted"]

    @property
    def sigma_index(self) -> int:
        """Index in the sigma grid at which the velocity is evaluated."""
        return self.step if self.point == "start" else self.step + 1


@dataclass(frozen=True)
class Plan:
    """A parsed sampling plan: segments of ``(kind, count)``, where ``count is None`` marks the fill segment."""

    segments: tuple[tuple[str, int | None], ...]

    @classmethod
    def parse(cls, plan: str | Plan) -> Plan:
        """Parse a plan string such as ``"H1P5R3"`` or ``"H1P*R3"``; raise ``ValueError`` saying what is wrong."""
        if isinstance(plan, Plan):
            return plan
        if not isinstance(plan, str):
            raise ValueError(f"A plan must be a string, got {type(plan).__name__}; {EXAMPLE}.")
        text = re.sub(r"\s+", "", plan)
        if not text:
            raise ValueError(f"The plan is empty; {EXAMPLE}.")
        segments, position = [], 0
        for match in _TOKEN.finditer(text):
            if match.start() != position:
                break
            position = match.end()
            letter, count = match.group(1).upper(), match.group(2)
            if letter not in STEP_KINDS:
                kinds = ", ".join(f"{k} = {v.split(' (')[0]}" for k, v in STEP_KINDS.items())
                raise ValueError(f"Unknown step kind {letter!r} in plan {plan!r}. Step kinds are {kinds}; {EXAMPLE}.")
            if count is None:
                raise ValueError(f"Step kind {letter!r} in plan {plan!r} has no count; write e.g. '{letter}2'; {EXAMPLE}.")
            if count == FILL:
                segments.append((letter, None))
                continue
            if int(count) <= 0:
                raise ValueError(
                    f"Step counts must be positive, got '{letter}{count}' in plan {plan!r}; {EXAMPLE}."
                )
            if int(count) > MAX_STEPS:
                raise ValueError(
                    f"Step count {int(count)} in plan {plan!r} is more than {MAX_STEPS:,} steps; {EXAMPLE}."
                )
            segments.append((letter, int(count)))
        if position != len(text):
            raise ValueError(f"Cannot read {text[position:]!r} in plan {plan!r}; {EXAMPLE}.")
        if sum(count is None for _, count in segments) > 1:
            raise ValueError(f"Plan {plan!r} has more than one '*' segment; only one kind can fill; {EXAMPLE}.")
        if sum(count or 0 for _, count in segments) > MAX_STEPS:
            raise ValueError(f"Plan {plan!r} has more than {MAX_STEPS:,} steps in all; {EXAMPLE}.")
        if segments[0][0] == REFINER:
            cls._raise_refiner_first(plan)
        return cls(tuple(segments))

    def __str__(self) -> str:
        return "".join(f"{kind}{FILL if count is None else count}" for kind, count in self.segments)

    @property
    def is_fill(self) -> bool:
        """Whether one segment takes all steps left over (written with ``*``)."""
        return any(count is None for _, count in self.segments)

    @property
    def fixed_steps(self) -> int:
        """Number of steps of the segments with a written count."""
        return sum(count for _, count in self.segments if count is not None)

    @property
    def has_refiner_steps(self) -> bool:
        """Whether the plan has R steps (which need a refiner)."""
        return any(kind == REFINER for kind, _ in self.segments)

    @property
    def num_steps(self) -> int | None:
        """The plan's step count, or ``None`` for a fill plan (its count comes from the pipeline)."""
        return None if self.is_fill else self.fixed_steps

    def kinds(self, num_steps: int | None = None, source: str = "num_inference_steps") -> tuple[str, ...]:
        """The step kind of each interval, for ``num_steps`` intervals (``None``: the plan's own count).

        ``source`` names the argument the step count came from (``num_inference_steps``, or ``sigmas`` or
        ``timesteps`` when a pipeline passes a grid), so that an error says what to change.
        """
        if num_steps is None:
            if self.is_fill:
                raise ValueError(f"Plan '{self}' fills the pipeline's step count; pass num_steps.")
            num_steps = self.fixed_steps
        check_step_count(num_steps, source)
        if self.is_fill and num_steps < self.fixed_steps:
            raise ValueError(
                f"Plan '{self}' needs at least {self.fixed_steps} steps but {_requested(num_steps, source)}; "
                f"{_ask_for(self.fixed_steps, source, 'or more')}, or use a shorter plan."
            )
        if not self.is_fill and num_steps != self.fixed_steps:
            more_or_fewer = "more" if self.fixed_steps > num_steps else "fewer"
            fill = str(Plan(tuple((k, None if i == self._longest() else c) for i, (k, c) in enumerate(self.segments))))
            raise ValueError(
                f"Plan '{self}' has {self.fixed_steps} steps, {more_or_fewer} than the {num_steps} "
                f"{_requested(num_steps, source, short=True)}. {_ask_for(self.fixed_steps, source)}, or use a plan "
                f"that fills the requested count, such as '{fill}'."
            )
        fill_count = num_steps - self.fixed_steps
        kinds = tuple(k for kind, count in self.segments for k in kind * (fill_count if count is None else count))
        if kinds and kinds[0] == REFINER:
            self._raise_refiner_first(str(self))
        return kinds

    def _longest(self) -> int:
        return max(range(len(self.segments)), key=lambda i: self.segments[i][1] or 0)

    @staticmethod
    def _raise_refiner_first(plan: str) -> None:
        raise ValueError(
            f"Plan {plan!r} starts with a refiner step, but an R step refines the velocity of an earlier step and "
            f"none exists yet. Start with H, P or E, e.g. 'H1P5R3'."
        )

    def evaluations(self, num_steps: int | None = None, evaluate_at_zero: bool = False) -> tuple[Evaluation, ...]:
        """The plan's model evaluations in call order; see :func:`evaluation_layout`."""
        return evaluation_layout(self.kinds(num_steps), evaluate_at_zero)

    def count_evaluations(self, num_steps: int | None = None, evaluate_at_zero: bool = False) -> dict[str, int]:
        """Base-model and refiner evaluations of a whole run: ``{"base": 2H + P + E (+1 if P first), "refiner": 2R}``,
        less the evaluation at sigma 0 (unless ``evaluate_at_zero``): 1 fewer if the plan ends with H or P, 1 fewer
        refiner evaluation if it ends with R."""
        evaluations = self.evaluations(num_steps, evaluate_at_zero)
        refiner = sum(e.kind == REFINER for e in evaluations)
        return {"base": len(evaluations) - refiner, "refiner": refiner}


def check_step_count(num_steps, source: str = "num_inference_steps") -> int:
    """``num_steps`` if it is a whole number from 1 to :data:`MAX_STEPS`, else a ``ValueError`` naming ``source``."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) and not (
        hasattr(num_steps, "__index__") and not isinstance(num_steps, float)
    ):
        raise ValueError(f"{source} must be a whole number of steps, such as 8; got {num_steps!r}.")
    num_steps = int(num_steps)
    if not 1 <= num_steps <= MAX_STEPS:
        raise ValueError(f"{source} must be between 1 and {MAX_STEPS:,} steps, such as 8; got {num_steps}.")
    return num_steps


def _requested(num_steps: int, source: str, short: bool = False) -> str:
    if source == "num_inference_steps":
        return f"requested (num_inference_steps={num_steps})" if short else f"num_inference_steps={num_steps}"
    what = "sigmas" if source == "sigmas" else "timesteps"
    return f"that the pipeline's {num_steps} {what} ask for" if short else f"the pipeline passed {num_steps} {what}"


def _ask_for(steps: int, source: str, qualifier: str = "") -> str:
    extra = f" {qualifier}" if qualifier else ""
    if source == "num_inference_steps":
        return f"Pass num_inference_steps={steps}{extra}"
    return f"Pass {steps}{extra} {source} (one per step) or num_inference_steps={steps}{extra}"


def evaluation_layout(kinds: tuple[str, ...] | list[str], evaluate_at_zero: bool = False) -> tuple[Evaluation, ...]:
    """Lay out the velocity evaluations of a sequence of step kinds.

    H and R steps evaluate at their start point and at their predicted point; E at its start point only; P only at
    its predicted point, reusing the last velocity of the step before, except when no step came before (then it
    evaluates its start point first, which makes it a Heun step). The last step's predicted point lies at sigma 0;
    unless ``evaluate_at_zero``, it is not evaluated, and the last step ends with an Euler step (module docstring).
    """
    layout = []
    last = len(kinds) - 1
    for step, kind in enumerate(kinds):
        if kind != PSEUDO_CORRECTOR or step == 0:
            layout.append(Evaluation(step, kind, "start"))
        if kind != EULER and (step < last or evaluate_at_zero):
            layout.append(Evaluation(step, kind, "predicted"))
    return tuple(layout)

"""Conformance: FlowTurboScheduler in every flow pipeline family of installed diffusers, as a user would swap it in.

Each pipeline of the catalogue (``tiny_pipelines``, one case per class, built tiny and offline) runs 4 steps with
``FlowTurboScheduler.from_config(pipe.scheduler.config, plan=...)`` for ``H*``, ``H1P*`` and ``H1P*E1``. For each: it
runs; every ``step()`` of the plan is taken and the denoisers are called exactly once per evaluation (times the calls
per evaluation of the case's guidance); the output is finite; and ``H*`` is closer than Euler at the same step count
to a many-step solve of the same pipeline. A pipeline the scheduler cannot drive is refused before sampling with an
error that says why (``REFUSED``). ``docs/scheduler.md``'s support table is this suite's (``support_table.py``).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from tiny_pipelines.cases import all_cases
from tiny_pipelines.support_table import REFUSED, support_table

from flowturbo_diffusers import FlowTurboScheduler, Plan
from flowturbo_diffusers.hooks import count_calls

CASES = all_cases()
PLANS = ("H*", "H1P*", "H1P*E1")
STEPS = 4
REFERENCE_STEPS = 8  # H* at 8 steps: 15 evaluations


@pytest.fixture(scope="module", params=CASES, ids=[case.id for case in CASES])
def case_and_pipe(request):
    case = request.param
    pipe = case.build()
    for name in case.denoisers:
        smooth_in_sigma(getattr(pipe, name))
    yield case, pipe, pipe.scheduler.config
    del pipe


def smooth_in_sigma(denoiser):
    """Make a random-weight denoiser's velocity vary smoothly with sigma, as a trained model's does.

    Sinusoidal timestep embeddings include frequencies of one radian per timestep unit; random weights on them make
    the tiny models' velocity oscillate in sigma on a scale of 0.006 (tried on the Wan family: Heun then gains nothing
    over Euler at any step count below 16), which no sampler can resolve in a few steps. Shrinking the first layer
    after the embedding keeps the time dependence but makes it smooth; models without diffusers' TimestepEmbedding
    are left as they are.
    """
    from diffusers.models.embeddings import TimestepEmbedding

    for module in denoiser.modules():
        if isinstance(module, TimestepEmbedding):
            module.linear_1.weight.data.mul_(0.1)


def sample(case, pipe, scheduler, steps, **overrides):
    """One seeded call with ``scheduler``: ``(latents, denoiser calls)``."""
    pipe.scheduler = scheduler
    with contextlib.ExitStack() as stack:
        counters = [stack.enter_context(count_calls(getattr(pipe, name))) for name in case.denoisers]
        output = pipe(**{**case.call_kwargs(), **overrides}, num_inference_steps=steps,
                      generator=torch.Generator().manual_seed(0), output_type=case.output_type)
    return case.latents(output).float(), sum(counter.count for counter in counters)


def test_the_catalogue_covers_the_families_users_run():
    families = {case.family for case in CASES}
    assert len(CASES) >= 35 and len(families) >= 22
    for family in ("Flux", "Flux 2", "Qwen-Image", "Z-Image", "Wan 2.1", "Wan 2.2", "HunyuanVideo", "HunyuanVideo 1.5",
                   "HunyuanImage 2.1", "LTX-Video", "LTX-2", "Chroma", "SD3", "Sana", "SanaVideo", "CogView4",
                   "Lumina 2", "HiDream-I1", "Kandinsky 5", "Mochi", "AuraFlow", "Bria", "SkyReels V2"):
        assert family in families


def test_every_plan_runs_with_the_planned_evaluations_and_H_is_closer_than_euler(case_and_pipe):
    case, pipe, own_config = case_and_pipe
    if case.id in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[case.id][0]):
            FlowTurboScheduler.from_config(own_config, plan="H*")
        return
    own_strength = case.call_kwargs().get("strength")
    full = {"strength": 1.0} if own_strength is not None else {}
    errors = {}
    reference, _ = sample(case, pipe, FlowTurboScheduler.from_config(own_config, plan="H*"), REFERENCE_STEPS, **full)
    for plan in PLANS:
        scheduler = FlowTurboScheduler.from_config(own_config, plan=plan)
        latents, calls = sample(case, pipe, scheduler, STEPS, **full)
        errors[plan] = ((latents - reference).norm() / reference.norm()).item()
        assert torch.isfinite(latents).all(), f"{plan}: non-finite output"
        evaluations = Plan.parse(plan).count_evaluations(STEPS)["base"]
        assert len(scheduler.timesteps) == evaluations, plan
        assert scheduler.step_index == evaluations, f"{plan}: the run stopped at entry {scheduler.step_index}"
        assert calls == evaluations * case.calls_per_evaluation, f"{plan}: {calls} denoiser calls"
        if own_strength is not None and own_strength < 1:  # part-way, as the case is meant to run
            scheduler = FlowTurboScheduler.from_config(own_config, plan=plan)
            latents, calls = sample(case, pipe, scheduler, STEPS)
            assert torch.isfinite(latents).all(), f"{plan} at strength {own_strength}: non-finite output"
            assert scheduler.step_index == len(scheduler.timesteps), f"{plan} at strength {own_strength}: cut short"
            assert calls % case.calls_per_evaluation == 0 and 0 < calls <= evaluations * case.calls_per_evaluation
    euler, _ = sample(case, pipe, FlowTurboScheduler.from_config(own_config, plan="E*"), STEPS, **full)
    errors["E*"] = ((euler - reference).norm() / reference.norm()).item()
    assert errors["H*"] < errors["E*"], errors


def test_the_support_table_in_the_docs_is_the_suites():
    from pathlib import Path

    root = Path(__file__).parents[1]
    assert support_table() in (root / "docs" / "scheduler.md").read_text(), (
        "regenerate it: python tests/tiny_pipelines/support_table.py")
    supported = sum(case.id not in REFUSED for case in CASES)
    families = len({case.family for case in CASES})
    readme = " ".join((root / "README.md").read_text().split())
    assert f"{supported} of the {len(CASES)} flow pipeline classes the conformance suite builds, in {families} " \
           "families" in readme

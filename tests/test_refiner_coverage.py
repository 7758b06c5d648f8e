"""Refiners for every transformer class of the conformance catalogue (``tiny_pipelines``, 43 pipeline classes).

For each pipeline case, the refiner replaces the last of the case's denoisers (``transformer``, or Wan 2.2 A14B's
low-noise expert ``transformer_2``, which the late R steps reach):

- an oracle refiner (offset = the base model's velocity minus the velocity it is given) makes ``H1P1R2`` give the
  latents of ``H1P1H2`` inside the pipeline, with the case's own guidance (batched ``[uncond, cond]`` or separate
  calls), and the R evaluations go to the refiner;
- ``train_refiner`` trains one for 2 steps from the case's call arguments, saves it, ``VelocityRefiner.from_pretrained``
  loads it back, and it answers the R evaluations of a plan with a finite output;

or the class is refused with its reason, before anything runs. ``docs/refiner.md``'s support table is this file's
(``refiner_support_table.py``).
"""

from __future__ import annotations

import pytest
import torch
from refiner_support_table import refiner_denoiser, support_table
from tiny_pipelines.cases import all_cases

from flowturbo_diffusers import FlowTurboPipeline, Plan, VelocityRefiner
from flowturbo_diffusers.adapters import ADAPTERS, adapter_for
from flowturbo_diffusers.training import train_refiner

CASES = all_cases()
PLAN = "H1P1R2"  # 4 steps: the R steps are the last two, below Wan 2.2 A14B's expert boundary


class OracleRefiner(VelocityRefiner):
    """Its offset is the base model's velocity minus the velocity it is given: R steps then become exact H steps."""

    def offset(self, call, velocity):
        return call.evaluate_base() - velocity


def build(case):
    """The case's pipeline, the component a refiner replaces, and the arguments of a full-strength tiny call."""
    pipe = case.build()
    arguments = case.call_kwargs()
    if "strength" in arguments:
        arguments["strength"] = 1.0  # the whole grid, so that the R steps run (img2img starts part-way otherwise)
    return pipe, refiner_denoiser(case), arguments


def sample(pipe, case, arguments):
    output = pipe(**arguments, generator=torch.Generator().manual_seed(0), output_type=case.output_type)
    return case.latents(output).float()


def refused(case, pipe, denoiser) -> str | None:
    adapter = ADAPTERS.get(type(getattr(pipe, denoiser)).__name__)
    return adapter.refused if adapter is not None else None


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_an_oracle_refiner_reproduces_heun_steps_in_the_pipeline(case):
    pipe, denoiser, arguments = build(case)
    model = getattr(pipe, denoiser)
    if refused(case, pipe, denoiser):
        with pytest.raises(ValueError, match="FlowTurbo refiners do not support"):
            VelocityRefiner.for_transformer(model)
        return
    oracle = OracleRefiner(**VelocityRefiner.config_for_transformer(model, base_denoiser=denoiser))
    turbo = FlowTurboPipeline.from_pipe(pipe, refiner=oracle, plan=PLAN)
    turbo.set_progress_bar_config(disable=True)
    refined = sample(turbo, case, arguments)
    counts = turbo.last_evaluation_counts
    turbo.set_plan(PLAN.replace("R", "H"))
    heun = sample(turbo, case, arguments)
    torch.testing.assert_close(refined, heun, rtol=1e-5, atol=1e-5)
    evaluations = Plan.parse(PLAN).count_evaluations()
    assert counts["refiner"] == evaluations["refiner"] * case.calls_per_evaluation, counts


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_refiner_trains_saves_loads_and_answers_R_steps(case, tmp_path):
    pipe, denoiser, arguments = build(case)
    if refused(case, pipe, denoiser):
        with pytest.raises(ValueError, match=r"do not support .*: .*\w"):
            train_refiner(pipe, prompts=["a red 7"], output_dir=str(tmp_path), steps=2, base_denoiser=denoiser)
        return
    prompt = arguments.pop("prompt")
    result = train_refiner(pipe, prompts=[prompt], output_dir=str(tmp_path), steps=2, batch_size=2, record_steps=3,
                           eval_plan=None, calibration_samples=0, recommendation_samples=0, call_kwargs=arguments, base_denoiser=denoiser,
                           progress=False, checkpoint_every=10)
    assert torch.isfinite(torch.tensor(result.final_loss))
    loaded = VelocityRefiner.from_pretrained(result.output_dir)
    assert loaded.config.base_denoiser == denoiser
    turbo = FlowTurboPipeline.from_pipe(pipe, refiner=loaded, plan=PLAN)
    turbo.set_progress_bar_config(disable=True)
    latents = sample(turbo, case, {**arguments, "prompt": prompt})
    assert turbo.last_evaluation_counts["refiner"] > 0 and torch.isfinite(latents).all()


def test_a_class_without_an_adapter_is_inferred_and_still_reproduces_heun(monkeypatch, tmp_path):
    """Without its recorded data, SD3 is read from its forward and config: image layout, pooled and sequence text
    embeddings from the argument names, sigma from the scheduler's run (sampling) and from the pipeline's own calls
    (training)."""
    case = next(case for case in CASES if case.id == "StableDiffusion3Pipeline")
    monkeypatch.delitem(ADAPTERS, "SD3Transformer2DModel")
    pipe, denoiser, arguments = build(case)
    adapter = adapter_for(pipe.transformer)
    assert adapter.inferred and adapter.layout == "image" and not adapter.knows_timesteps
    assert (adapter.pooled_argument, adapter.context_argument) == ("pooled_projections", "encoder_hidden_states")
    turbo = FlowTurboPipeline.from_pipe(pipe, refiner=OracleRefiner(**VelocityRefiner.config_for_transformer(
        pipe.transformer)), plan=PLAN)
    turbo.set_progress_bar_config(disable=True)
    refined = sample(turbo, case, arguments)
    turbo.set_plan("H1P1H2")
    torch.testing.assert_close(refined, sample(turbo, case, arguments), rtol=1e-5, atol=1e-5)
    prompt = arguments.pop("prompt")
    result = train_refiner(pipe, prompts=[prompt], output_dir=str(tmp_path), steps=2, batch_size=2, record_steps=3,
                           eval_plan=None, calibration_samples=0, recommendation_samples=0, call_kwargs=arguments, progress=False)
    assert torch.isfinite(torch.tensor(result.final_loss))


def test_per_token_timesteps_give_each_sample_the_sigma_of_its_noisiest_tokens():
    """Wan 2.2 TI2V-5B passes (B, L) timesteps; conditioning tokens (timestep 0 here) are cleaner than the rest."""
    case = next(case for case in CASES if case.id == "WanPipeline-TI2V-5B")
    transformer = case.build().transformer
    adapter = adapter_for(transformer)
    sample = torch.zeros(2, 4, 2, 2, 2)
    timestep = torch.tensor([[0.0, 750.0], [0.0, 250.0]])
    call = adapter.read(transformer, (), dict(hidden_states=sample, timestep=timestep), None)
    torch.testing.assert_close(call.sigma, torch.tensor([0.75, 0.25]))
    moved = adapter.with_sample(dict(hidden_states=sample, timestep=timestep), sample, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(moved["timestep"], torch.tensor([[0.0, 500.0], [0.0, 250.0]]))


def test_a_base_output_that_is_not_a_velocity_of_the_latent_is_refused():
    refiner = VelocityRefiner(layout="image", in_channels=4, hidden_size=16, num_attention_heads=2, patch_size=[2])
    with pytest.raises(ValueError, match="not a velocity of its latent"):
        refiner(torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 4, 4), torch.ones(1))


def test_train_refiner_takes_the_expert_to_replace_from_the_command_line(monkeypatch, tmp_path, capsys):
    from types import SimpleNamespace

    from flowturbo_diffusers import cli

    seen = {}

    def train(model, config, **kwargs):
        seen["config"] = config
        return SimpleNamespace(final_loss=0.0, output_dir=tmp_path / "out", metrics={})

    monkeypatch.setattr("flowturbo_diffusers.training.train_refiner", train)
    (tmp_path / "prompts.txt").write_text("a red 7\n")
    assert cli.main(["train-refiner", "--model", "a-two-expert-model", "--prompts", str(tmp_path / "prompts.txt"),
                     "--output-dir", str(tmp_path / "out"), "--base-denoiser", "transformer_2"]) == 0
    assert seen["config"].base_denoiser == "transformer_2"


def test_the_support_table_in_the_docs_is_this_files():
    from pathlib import Path

    docs = (Path(__file__).parents[1] / "docs" / "refiner.md").read_text()
    assert support_table() in docs, "regenerate it: python tests/refiner_support_table.py"

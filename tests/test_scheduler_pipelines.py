"""FlowTurboScheduler inside unchanged diffusers pipelines: SD3, Flux, Sana and Wan, with guidance, img2img, inpaint."""

import functools

import numpy as np
import pytest
import torch
from conftest import CallCounter, call, make_pipe
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FluxImg2ImgPipeline,
    FluxInpaintPipeline,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusion3InpaintPipeline,
)

from flowturbo_diffusers import FlowTurboScheduler, Plan
from ode import integrate

KINDS = ["sd3", "flux", "sana", "wan"]
# Wan runs guidance as two transformer calls per evaluation; the others batch [uncond, cond] in one call.
CALLS_PER_EVALUATION = {"sd3": 1, "flux": 1, "sana": 1, "wan": 2}


def swap(pipe, plan):
    pipe.scheduler = FlowTurboScheduler.from_config(pipe.scheduler.config, plan=plan)
    return pipe.scheduler


@pytest.mark.parametrize("kind", KINDS)
def test_grid_is_the_pipelines_own_grid_at_the_plans_step_count(kind):
    def timesteps_seen(counter):
        return {round(float(kwargs["timestep"].flatten()[0]), 4) for kwargs in counter.kwargs}

    pipe = make_pipe(kind)
    own = CallCounter(pipe.transformer)
    call(pipe, kind, num_inference_steps=6)
    own.remove()
    own_class, own_sigmas = type(pipe.scheduler).__name__, pipe.scheduler.sigmas.clone()
    scheduler = swap(pipe, "H1P5")
    turbo = CallCounter(pipe.transformer)
    call(pipe, kind, num_inference_steps=6)
    assert scheduler.config.sigma_schedule == own_class
    torch.testing.assert_close(scheduler.sigma_grid, own_sigmas.float(), rtol=0, atol=0)
    # The model sees the timesteps of the pipeline's own grid, and no evaluation at the final sigma (0).
    assert timesteps_seen(turbo) == timesteps_seen(own)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("plan, steps", [("H1P5", 6), ("H1P*", 8), ("H2P2E1", 5), ("P4", 4), ("E3", 3)])
def test_pipeline_runs_with_guidance_and_calls_the_transformer_once_per_evaluation(kind, plan, steps):
    pipe = make_pipe(kind)
    swap(pipe, plan)
    counter = CallCounter(pipe.transformer)
    latents = call(pipe, kind, num_inference_steps=steps)
    expected = Plan.parse(plan).count_evaluations(steps)["base"] * CALLS_PER_EVALUATION[kind]
    assert counter.count == expected
    assert torch.isfinite(latents).all()


def test_the_scheduler_changes_the_result_compared_to_euler(sd3_pipe):
    euler = call(sd3_pipe, "sd3", num_inference_steps=4)
    swap(sd3_pipe, "H1P3")
    turbo = call(sd3_pipe, "sd3", num_inference_steps=4)
    assert not torch.allclose(euler, turbo)


def test_sd3_skip_layer_guidance_runs_and_adds_its_calls(sd3_pipe):
    swap(sd3_pipe, "H1P5")
    plain = call(sd3_pipe, "sd3", num_inference_steps=6)
    counter = CallCounter(sd3_pipe.transformer)
    guided = call(
        sd3_pipe, "sd3", num_inference_steps=6, skip_guidance_layers=[1], skip_layer_guidance_start=0.0,
        skip_layer_guidance_stop=0.5,
    )
    layer_skipping_calls = [kwargs for kwargs in counter.kwargs if kwargs.get("skip_layers") is not None]
    evaluations = Plan.parse("H1P5").count_evaluations()["base"]
    assert counter.count == evaluations + len(layer_skipping_calls) and len(layer_skipping_calls) > 0
    assert not torch.allclose(plain, guided)


def test_flux_true_cfg_calls_the_transformer_per_branch(flux_pipe):
    swap(flux_pipe, "H1P4")
    counter = CallCounter(flux_pipe.transformer)
    guided = call(flux_pipe, "flux", num_inference_steps=5, negative_prompt="green", true_cfg_scale=3.0)
    assert counter.count == 2 * Plan.parse("H1P4").count_evaluations()["base"]
    unguided = call(flux_pipe, "flux", num_inference_steps=5)
    assert not torch.allclose(guided, unguided)


def test_flux_guidance_embeds_pipeline_runs():
    pipe = make_pipe("flux", guidance_embeds=True)
    swap(pipe, "H1P3")
    assert torch.isfinite(call(pipe, "flux", num_inference_steps=4, guidance_scale=3.5)).all()


def test_flux_dynamic_shifting_follows_the_resolution(flux_pipe):
    scheduler = swap(flux_pipe, "H1P3")
    grids = []
    for size in (32, 64):
        call(flux_pipe, "flux", num_inference_steps=4, height=size, width=size)
        grids.append(scheduler.sigma_grid.clone())
    assert not torch.allclose(grids[0], grids[1])
    assert grids[1][1] > grids[0][1]  # more tokens, larger mu, more time at high noise


def test_a_dpm_config_used_in_flux_gives_the_grid_dpm_solver_itself_would_use_there(flux_pipe):
    """FlowTurbo built from a scheduler config keeps that config's meaning, including what pipelines read from it:
    Flux sees use_flow_sigmas and leaves the grid to the scheduler, as it does with DPM-Solver itself."""
    from diffusers import DPMSolverMultistepScheduler

    sana_config = make_pipe("sana").scheduler.config
    settings = dict(use_dynamic_shifting=True, base_image_seq_len=16, max_image_seq_len=256)
    scheduler = FlowTurboScheduler.from_config(sana_config, plan="H1P3", **settings)
    flux_pipe.scheduler = scheduler
    received = {}

    @functools.wraps(scheduler.set_timesteps)
    def recording_set_timesteps(*args, **kwargs):
        received.update(kwargs)
        return FlowTurboScheduler.set_timesteps(scheduler, *args, **kwargs)

    scheduler.set_timesteps = recording_set_timesteps
    call(flux_pipe, "flux", num_inference_steps=4)
    assert received.get("sigmas") is None and received["mu"] is not None
    dpm = DPMSolverMultistepScheduler.from_config(sana_config, **settings)
    dpm.set_timesteps(4, mu=received["mu"])
    torch.testing.assert_close(scheduler.sigma_grid, dpm.sigmas.float(), rtol=0, atol=0)


IMAGE = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
MASK = torch.zeros(1, 1, 32, 32)
MASK[..., 8:24, 8:24] = 1


def euler_start_sigma(pipe_class, base, strength, steps, **kwargs):
    pipe = pipe_class.from_pipe(base)
    pipe.set_progress_bar_config(disable=True)
    call(pipe, kwargs.pop("kind"), image=IMAGE, strength=strength, num_inference_steps=steps, **kwargs)
    return float(pipe.scheduler.sigmas[pipe.scheduler.begin_index]), pipe.scheduler.sigmas


@pytest.mark.parametrize(
    "kind, pipe_class",
    [
        ("sd3", StableDiffusion3Img2ImgPipeline),
        ("sd3", StableDiffusion3InpaintPipeline),
        ("flux", FluxImg2ImgPipeline),
        ("flux", FluxInpaintPipeline),
    ],
)
@pytest.mark.parametrize("strength", [0.2, 0.5, 0.8, 1.0])
def test_img2img_and_inpaint_start_where_euler_starts(kind, pipe_class, strength):
    base = make_pipe(kind)
    extra = {"mask_image": MASK} if "Inpaint" in pipe_class.__name__ else {}
    steps = 8
    euler_sigma, euler_grid = euler_start_sigma(pipe_class, base, strength, steps, kind=kind, **extra)
    pipe = pipe_class.from_pipe(base)
    pipe.set_progress_bar_config(disable=True)
    scheduler = swap(pipe, "H1P*")
    counter = CallCounter(pipe.transformer)
    latents = call(pipe, kind, image=IMAGE, strength=strength, num_inference_steps=steps, **extra)
    assert torch.isfinite(latents).all()
    begin = scheduler.begin_index
    assert counter.count == len(scheduler.timesteps) - begin
    start_sigma = float(scheduler.sigmas[begin])
    if kind == "sd3":
        assert start_sigma == pytest.approx(euler_sigma)
    else:
        # Flux counts strength over len(timesteps), which is one more than the steps for an H1P* plan.
        grid = [float(s) for s in euler_grid]
        assert abs(grid.index(min(grid, key=lambda s: abs(s - start_sigma))) - grid.index(euler_sigma)) <= 1


def exact_gaussian_trajectory(noise, sigma, mean=0.7, std=0.5):
    return (1 - sigma) * mean + np.sqrt((1 - sigma) ** 2 * std**2 + sigma**2) * noise


def gaussian_velocity(x, sigma, mean=0.7, std=0.5):
    variance = (1 - sigma) ** 2 * std**2 + sigma**2
    return -mean + (sigma - (1 - sigma) * std**2) / variance * (x - (1 - sigma) * mean)


@pytest.mark.parametrize("plan", ["H1P*", "H*", "H2P*E1", "H1P*R2"])
@pytest.mark.parametrize("start_sigma", [0.75, 0.5, 0.25])
@pytest.mark.parametrize("occurrence", [0, -1])
def test_a_run_starting_anywhere_in_the_plan_converges_at_second_order(plan, start_sigma, occurrence):
    """img2img may start at any entry: a step's start point or a predicted point (``occurrence`` picks the first or
    last entry at ``start_sigma``). Either way the result converges at second order to the exact solution."""
    noise = torch.randn(256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = []
    for steps in (32, 64, 128):
        sigmas = np.linspace(1.0, 1.0 / steps, steps)  # a uniform grid: sigma_k = 1 - k / steps
        scheduler = FlowTurboScheduler(plan=plan)
        scheduler.refiner_attached = True  # R steps run on the base velocity here; silence the warning
        scheduler.set_timesteps(sigmas=sigmas)
        begin = [i for i, s in enumerate(scheduler.sigmas[:-1].tolist()) if abs(s - start_sigma) < 1e-6][occurrence]
        start = exact_gaussian_trajectory(noise, start_sigma)
        latents, _ = integrate(scheduler, gaussian_velocity, start, sigmas=sigmas, begin_index=begin)
        errors.append((latents.double() - exact_gaussian_trajectory(noise, 0.0)).abs().max().item())
    observed_order = np.log2(errors[0] / errors[2]) / 2  # over two halvings of the step
    assert observed_order > 1.8, errors


@pytest.mark.parametrize(
    "kind, pipe_class",
    [("sd3", StableDiffusion3Img2ImgPipeline), ("sd3", StableDiffusion3InpaintPipeline), ("flux", FluxImg2ImgPipeline),
     ("flux", FluxInpaintPipeline)],
)
@pytest.mark.parametrize("plan", ["H*", "H1P*", "H2P*R2", "H1P*E1"])
@pytest.mark.parametrize("strength", [0.3, 0.8])
def test_through_flowturbo_pipeline_strength_starts_at_the_pipelines_own_sigma_for_every_plan(kind, pipe_class,
                                                                                               plan, strength):
    from flowturbo_diffusers import FlowTurboPipeline, VelocityRefiner

    base = make_pipe(kind)
    extra = {"mask_image": MASK} if "Inpaint" in pipe_class.__name__ else {}
    steps = 8
    euler_sigma, _ = euler_start_sigma(pipe_class, base, strength, steps, kind=kind, **extra)
    own = pipe_class.from_pipe(base)
    refiner = VelocityRefiner.for_transformer(base.transformer) if "R" in plan else False
    pipe = FlowTurboPipeline.from_pipe(own, refiner=refiner, plan=plan)
    pipe.set_progress_bar_config(disable=True)
    counter = CallCounter(pipe.transformer)
    latents = call(pipe, kind, image=IMAGE, strength=strength, num_inference_steps=steps, **extra)
    scheduler = pipe.scheduler
    assert torch.isfinite(latents).all()
    assert float(scheduler.sigmas[0]) == pytest.approx(euler_sigma)  # the run starts at the pipeline's own sigma
    assert scheduler.evaluations[0].point == "start"
    assert counter.count == len(scheduler.timesteps) == sum(pipe.last_evaluation_counts.values())


def test_the_bare_scheduler_warns_once_when_strength_starts_at_another_sigma(caplog):
    pipe = StableDiffusion3Img2ImgPipeline.from_pipe(make_pipe("sd3"))
    pipe.set_progress_bar_config(disable=True)
    swap(pipe, "H*")
    with caplog.at_level("WARNING"):
        call(pipe, "sd3", image=IMAGE, strength=0.5, num_inference_steps=8)
        call(pipe, "sd3", image=IMAGE, strength=0.5, num_inference_steps=8)
    warnings = [r.getMessage() for r in caplog.records if "starts part-way" in r.getMessage()]
    assert len(warnings) == 1 and "FlowTurboPipeline" in warnings[0] and "'H1P*'" in warnings[0]


@pytest.mark.parametrize("plan", ["H*", "H1P*", "H2P*E1"])
@pytest.mark.parametrize("how", ["views", "copies"])
def test_a_pipeline_that_slices_timesteps_without_a_begin_index_starts_where_it_sliced(plan, how):
    """WanVideoToVideo slices ``timesteps`` itself and never calls set_begin_index; the scheduler finds the start from
    the timesteps it is given (a view of its own tensor, or a copy, whose value H steps repeat)."""
    noise = torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    results = {}
    for mode in ("begin_index", how):
        scheduler = FlowTurboScheduler(plan=plan, shift=3.0)
        scheduler.set_timesteps(8)
        start = 5 if plan != "H*" else 6  # H*: entry 6 is the start of step 3, whose timestep entry 5 repeats
        timesteps = scheduler.timesteps[start:]
        if mode == "begin_index":
            scheduler.set_begin_index(start)
        latents = exact_gaussian_trajectory(noise, float(scheduler.sigmas[start])).float()
        for t in timesteps:
            if mode == "copies":
                t = t.clone()
            sigma = scheduler.sigmas[scheduler.current_evaluation_index] if scheduler.step_index is not None \
                else scheduler.sigmas[start]
            latents = scheduler.step(gaussian_velocity(latents, sigma), t, latents).prev_sample
        assert scheduler.step_index == len(scheduler.timesteps)  # every correction applied
        results[mode] = latents
    torch.testing.assert_close(results[how], results["begin_index"], rtol=0, atol=0)


def _sd3_with_diffusers_fixture_shape():
    """SD3 shaped like diffusers' own test fixture: 4 latent channels, patch size 1, one layer, shift 1."""
    import tiny_pipelines as tiny
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    tokenizer, tokenizer_2 = tiny.clip_tokenizer(), tiny.clip_tokenizer()
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=1, in_channels=4, out_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=32, pooled_projection_dim=64).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=tiny._autoencoder_kl(4, 1, shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=tiny.clip_text_encoder(tokenizer, 32, 32, 2), tokenizer=tokenizer,
        text_encoder_2=tiny.clip_text_encoder(tokenizer_2, 32, 32, 3), tokenizer_2=tokenizer_2,
        text_encoder_3=None, tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_heun_plans_are_diffusers_heun_inside_sd3_and_more_precise_in_float32():
    from diffusers import FlowMatchHeunDiscreteScheduler

    pipe = _sd3_with_diffusers_fixture_shape()
    own = pipe.scheduler.config
    latents = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))

    def run(scheduler, dtype):
        pipe.to(dtype)
        pipe.scheduler = scheduler
        out = pipe("a red 7 on a blue background", latents=latents.to(dtype), num_inference_steps=4,
                   guidance_scale=5.0, output_type="latent", height=32, width=32, max_sequence_length=16)
        return out.images.double()

    exact = run(FlowMatchHeunDiscreteScheduler.from_config(own), torch.float64)
    diffusers_heun = run(FlowMatchHeunDiscreteScheduler.from_config(own), torch.float32)
    for plan in ("H*", "H3E1"):
        ours = run(FlowTurboScheduler.from_config(own, plan=plan), torch.float32)
        torch.testing.assert_close(ours, diffusers_heun, rtol=0, atol=1e-4)
        # diffusers' Heun divides by sigma (0.001 at the last grid point) to go through x0; ours does not.
        assert (ours - exact).abs().max() < 1e-5 < (diffusers_heun - exact).abs().max()
    pipe.to(torch.float32)


def test_heun_plans_are_diffusers_heun_inside_wan():
    from diffusers import FlowMatchHeunDiscreteScheduler

    pipe = make_pipe("wan")
    heun = FlowMatchHeunDiscreteScheduler(shift=pipe.scheduler.config["flow_shift"])  # on Euler's grid
    pipe.scheduler = heun
    expected = call(pipe, "wan", num_inference_steps=4)
    results = {}
    for plan in ("H*", "E*"):
        pipe.scheduler = FlowTurboScheduler.from_config(heun.config, plan=plan)
        results[plan] = call(pipe, "wan", num_inference_steps=4)
    torch.testing.assert_close(results["H*"], expected, rtol=0, atol=1e-5)
    assert (results["E*"] - expected).abs().max() > 1e-3  # the comparison can tell samplers apart


@pytest.mark.parametrize("plan", ["H*", "H2P*E1"])
def test_through_flowturbo_pipeline_wan_video_to_video_starts_at_unipcs_sigma(plan):
    """WanVideoToVideo slices timesteps in its own get_timesteps (another signature) and never sets a begin index."""
    from diffusers import UniPCMultistepScheduler
    from tiny_pipelines.video import CASES as VIDEO_CASES

    from flowturbo_diffusers import FlowTurboPipeline

    case = next(case for case in VIDEO_CASES if case.id == "WanVideoToVideoPipeline")
    base = case.build()
    steps, strength = 6, 0.5
    own = UniPCMultistepScheduler.from_config(base.scheduler.config)
    own.set_timesteps(steps)
    own_start = float(own.sigmas[steps - int(steps * strength)])
    pipe = FlowTurboPipeline.from_pipe(base, refiner=False, plan=plan)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {**case.call_kwargs(), "strength": strength}
    latents = pipe(**kwargs, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                   output_type="latent").frames
    assert torch.isfinite(latents).all()
    assert float(pipe.scheduler.sigmas[0]) == pytest.approx(own_start)
    assert pipe.scheduler.step_index == len(pipe.scheduler.timesteps)

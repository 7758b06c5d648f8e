"""VelocityRefiner inside FlowTurboPipeline: routing of R evaluations, guidance branches, offloading, bad inputs."""

import json

import pytest
import torch
from conftest import call, make_pipe
from diffusers import StableDiffusion3Img2ImgPipeline, StableDiffusion3Pipeline

from flowturbo_diffusers import FlowTurboPipeline, FlowTurboPipelineMixin, FlowTurboScheduler, Plan, VelocityRefiner


class OracleRefiner(VelocityRefiner):
    """Its offset is the base model's velocity minus the velocity it is given: R steps then become exact H steps."""

    def offset(self, call, velocity):
        return call.evaluate_base() - velocity


def oracle_for(pipe):
    return OracleRefiner(**VelocityRefiner.config_for_transformer(pipe.transformer))


def refined_and_heun(kind, call_kwargs, plan="H1P5R3", build=None, **pipe_kwargs):
    base = make_pipe(kind, **pipe_kwargs)
    pipe = FlowTurboPipeline.from_pipe(build(base) if build else base, refiner=oracle_for(base), plan=plan)
    pipe.set_progress_bar_config(disable=True)
    refined = call(pipe, kind, **call_kwargs)
    counts = pipe.last_evaluation_counts
    pipe.set_plan(plan.replace("R", "H"))
    heun = call(pipe, kind, **call_kwargs)
    return refined, heun, counts


@pytest.mark.parametrize(
    "kind, call_kwargs, pipe_kwargs",
    [
        ("sd3", {}, {}),
        ("sd3", dict(skip_guidance_layers=[1], skip_layer_guidance_start=0.0, skip_layer_guidance_stop=1.0), {}),
        ("flux", dict(guidance_scale=3.5), dict(guidance_embeds=True)),
        ("flux", dict(negative_prompt="green", true_cfg_scale=2.5), {}),
        ("sana", {}, {}),
        ("wan", {}, {}),
    ],
    ids=["sd3-cfg", "sd3-skip-layer-guidance", "flux-guidance-embeds", "flux-true-cfg", "sana", "wan"],
)
def test_oracle_refiner_makes_R_steps_exact_heun_steps(kind, call_kwargs, pipe_kwargs):
    refined, heun, counts = refined_and_heun(kind, call_kwargs, **pipe_kwargs)
    torch.testing.assert_close(refined, heun, rtol=1e-5, atol=1e-5)
    assert counts["refiner"] >= 5


@pytest.mark.parametrize("strength, steps_left", [(0.25, 3), (0.15, 2)], ids=["three-R-steps-left", "two-R-steps-left"])
def test_oracle_refiner_in_img2img_starting_inside_the_R_block(strength, steps_left):
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    refined, heun, counts = refined_and_heun(
        "sd3", dict(image=image, strength=strength), build=StableDiffusion3Img2ImgPipeline.from_pipe
    )
    torch.testing.assert_close(refined, heun, rtol=1e-5, atol=1e-5)
    # SD3 starts at step int(9 * (1 - strength)), inside the R block of H1P5R3; the first R evaluation there has no
    # earlier velocity and asks the base model; the last step makes no evaluation at sigma 0.
    assert counts == {"base": 1, "refiner": 2 * steps_left - 2}


def record_step_inputs(scheduler):
    records = []
    step = scheduler.step

    def recording_step(model_output, timestep, sample, *args, **kwargs):
        records.append((model_output.clone(), sample.clone()))
        return step(model_output, timestep, sample, *args, **kwargs)

    scheduler.step = recording_step
    return records


@pytest.mark.parametrize(
    "kind, call_kwargs",
    [("sd3", {}), ("flux", dict(negative_prompt="green", true_cfg_scale=2.5)), ("wan", {})],
    ids=["sd3-batched-cfg", "flux-true-cfg", "wan-separate-cfg"],
)
def test_zero_initialised_refiner_gives_euler_steps_with_the_frozen_last_velocity(kind, call_kwargs):
    base = make_pipe(kind)
    pipe = FlowTurboPipeline.from_pipe(base, refiner=VelocityRefiner.for_transformer(base.transformer), plan="H1P5R3")
    records = record_step_inputs(pipe.scheduler)
    final = call(pipe, kind, **call_kwargs)
    grid = pipe.scheduler.sigma_grid
    # Entry 6 is P5's evaluation: its guided velocity is the last base velocity; the step after it returns x_6.
    last_velocity = records[6][0].float()
    x6 = records[7][1].float()
    expected = x6 + (grid[9] - grid[6]) * last_velocity
    torch.testing.assert_close(final.float(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("plan, steps", [("H1P5R3", None), ("H2P2R2", None), ("H1P*R2", 7), ("E2R3", None)])
def test_base_and_refiner_calls_follow_the_plan(sd3_pipe, plan, steps):
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, refiner=VelocityRefiner.for_transformer(sd3_pipe.transformer), plan=plan)
    base_blocks, refiner_calls = [], []
    pipe.transformer.transformer_blocks[0].register_forward_pre_hook(lambda *a: base_blocks.append(1))
    pipe.refiner.register_forward_pre_hook(lambda *a: refiner_calls.append(1))
    call(pipe, "sd3", **({"num_inference_steps": steps} if steps else {}))
    expected = Plan.parse(plan).count_evaluations(steps)
    assert len(base_blocks) == expected["base"] and len(refiner_calls) == expected["refiner"]
    assert pipe.last_evaluation_counts == expected


def test_R_steps_are_routed_with_cpu_offload_and_on_repeated_calls(sd3_pipe):
    plain = FlowTurboPipeline.from_pipe(sd3_pipe, refiner=oracle_for(sd3_pipe), plan="H1P5R3")
    expected = call(plain, "sd3")
    pipe = FlowTurboPipeline.from_pipe(make_pipe("sd3"), refiner=oracle_for(sd3_pipe), plan="H1P5R3")
    pipe.enable_model_cpu_offload(device="cpu")
    for _ in range(3):
        torch.testing.assert_close(call(pipe, "sd3"), expected)
        assert pipe.last_evaluation_counts == {"base": 7, "refiner": 5}
    assert not pipe.transformer._diffusers_hook.hooks  # nothing left behind between calls


def test_the_pipeline_is_the_base_models_usual_class(sd3_pipe, tmp_path):
    sd3_pipe.save_pretrained(tmp_path / "base")
    pipe = FlowTurboPipeline.from_pretrained(tmp_path / "base", plan="H1P*")
    assert isinstance(pipe, StableDiffusion3Pipeline) and isinstance(pipe, FlowTurboPipelineMixin)
    assert type(pipe.transformer).__name__ == "SD3Transformer2DModel"
    assert isinstance(pipe.scheduler, FlowTurboScheduler) and pipe.scheduler.config.shift == 3.0
    assert pipe.refiner is None and str(pipe.plan) == "H1P*"


def test_saved_flowturbo_pipeline_reloads_with_refiner_and_plan(sd3_pipe, tmp_path):
    refiner = VelocityRefiner.for_transformer(sd3_pipe.transformer)
    torch.nn.init.normal_(refiner.proj_out.weight, std=0.01)  # make it differ from a fresh refiner
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, refiner=refiner, plan="H1P2R2")
    expected = call(pipe, "sd3")
    pipe.save_pretrained(tmp_path / "turbo")
    assert json.loads((tmp_path / "turbo" / "model_index.json").read_text())["_class_name"] == "StableDiffusion3Pipeline"
    reloaded = FlowTurboPipeline.from_pretrained(tmp_path / "turbo")
    assert str(reloaded.plan) == "H1P2R2" and reloaded.refiner is not None
    reloaded.set_progress_bar_config(disable=True)
    torch.testing.assert_close(call(reloaded, "sd3"), expected)
    plain = StableDiffusion3Pipeline.from_pretrained(tmp_path / "turbo")  # plain diffusers loads it
    assert isinstance(plain.scheduler, FlowTurboScheduler)


def test_from_pipe_shares_modules_and_leaves_the_original_pipeline_alone(sd3_pipe):
    before = call(sd3_pipe, "sd3", num_inference_steps=4)
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, refiner=oracle_for(sd3_pipe), plan="H1P2R1")
    call(pipe, "sd3")
    assert pipe.transformer is sd3_pipe.transformer
    assert type(sd3_pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    torch.testing.assert_close(call(sd3_pipe, "sd3", num_inference_steps=4), before)


def test_fixed_plan_sets_the_step_count_when_none_is_given(sd3_pipe):
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, plan="H1P3")
    call(pipe, "sd3")
    assert pipe.scheduler.num_inference_steps == 4


def test_refiner_follows_the_pipeline_dtype(sd3_pipe):
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, refiner=VelocityRefiner.for_transformer(sd3_pipe.transformer), plan="H1P2R1")
    pipe.to(torch.bfloat16)
    pipe.refiner.to(torch.float32)  # e.g. loaded after the pipeline was cast
    latents = call(pipe, "sd3")
    assert pipe.refiner.dtype == torch.bfloat16 and latents.dtype == torch.bfloat16


def test_a_call_walks_the_pipelines_modules_no_more_than_the_base_pipeline(sd3_pipe, monkeypatch):
    """`pipe._execution_device` / `transformer.dtype` walk every module (~12 ms a call on the bundled model): FlowTurbo
    must not add such walks over the pipeline's components to a call, R steps included (counted as top-level
    `named_modules` calls per module; the refiner's own placement check is allowed)."""
    from collections import Counter

    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, refiner=VelocityRefiner.for_transformer(sd3_pipe.transformer),
                                       plan="H1P2R1")
    call(pipe, "sd3")  # the refiner is placed on the first call
    walks = Counter()
    named_modules = torch.nn.Module.named_modules

    def counting(self, memo=None, *args, **kwargs):
        if memo is None:
            walks[id(self)] += 1
        return named_modules(self, memo, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "named_modules", counting)
    call(sd3_pipe, "sd3", num_inference_steps=4)
    base_walks, walks = walks, Counter()
    call(pipe, "sd3")
    assert pipe.last_evaluation_counts["refiner"] > 0
    walks.pop(id(pipe.refiner), None)
    assert base_walks and not walks - base_walks


def test_a_refiner_for_another_model_is_refused_before_sampling(sd3_pipe):
    flux_refiner = VelocityRefiner.for_transformer(make_pipe("flux").transformer)
    with pytest.raises(ValueError, match="does not fit this pipeline's transformer.*layout"):
        FlowTurboPipeline.from_pipe(sd3_pipe, refiner=flux_refiner, plan="H1P5R3")
    other_sd3 = VelocityRefiner.for_transformer(sd3_pipe.transformer)
    other_sd3.register_to_config(base_fingerprint={**other_sd3.config.base_fingerprint, "in_channels": 4})
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, plan="H1P*")
    with pytest.raises(ValueError, match="in_channels: refiner 4, pipeline 16"):
        pipe.load_refiner(other_sd3)


def test_an_R_plan_without_a_refiner_is_refused(sd3_pipe):
    with pytest.raises(ValueError, match="no refiner is loaded"):
        FlowTurboPipeline.from_pipe(sd3_pipe, plan="H1P5R3")
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, plan="H1P5")
    with pytest.raises(ValueError, match="no refiner is loaded"):
        pipe.set_plan("H1P*R2")


def test_flowturbo_pipeline_cannot_be_instantiated_directly():
    with pytest.raises(EnvironmentError, match="from_pretrained"):
        FlowTurboPipeline()


def test_from_pipe_keeps_the_pipelines_dtype(sd3_pipe):
    sd3_pipe.to(torch.bfloat16)
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, plan="H1P*")
    assert pipe.transformer.dtype == torch.bfloat16 and sd3_pipe.transformer.dtype == torch.bfloat16


def test_calls_from_another_thread_on_the_shared_transformer_are_neither_routed_nor_counted(sd3_pipe):
    """A base pipeline and its FlowTurbo twin share one transformer; a server may run them at once in two threads."""
    import threading

    refiner = VelocityRefiner.for_transformer(sd3_pipe.transformer)
    torch.nn.init.normal_(refiner.proj_out.weight, std=0.1)  # a refiner whose answers differ from the transformer's
    turbo = FlowTurboPipeline.from_pipe(sd3_pipe, refiner=refiner, plan="H1P5R3")
    expected_base = call(sd3_pipe, "sd3", num_inference_steps=4)
    from_other_thread = {}

    def base_call_in_another_thread(pipe, step, timestep, callback_kwargs):
        if step == 7:  # inside the R block of the twin's call, its routing hook installed
            worker = threading.Thread(target=lambda: from_other_thread.update(
                latents=call(sd3_pipe, "sd3", num_inference_steps=4)))
            worker.start()
            worker.join()
        return {}

    call(turbo, "sd3", callback_on_step_end=base_call_in_another_thread)
    assert turbo.last_evaluation_counts == {"base": 7, "refiner": 5}
    torch.testing.assert_close(from_other_thread["latents"], expected_base)


def test_unloading_the_refiner_of_an_R_plan_says_to_set_a_training_free_plan_first(sd3_pipe):
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, refiner=oracle_for(sd3_pipe), plan="H1P5R3")
    with pytest.raises(ValueError, match=r"Set a training-free plan first, e.g. pipe.set_plan\('H1P\*'\)"):
        pipe.unload_refiner()
    assert pipe.refiner is not None
    pipe.set_plan("H1P*")
    pipe.unload_refiner()
    assert pipe.refiner is None


def test_a_scheduler_the_user_put_in_samples_as_in_the_plain_pipeline(sd3_pipe):
    from diffusers import UniPCMultistepScheduler

    flow_unipc = UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction")
    sd3_pipe.scheduler = flow_unipc
    expected = call(sd3_pipe, "sd3", num_inference_steps=4)
    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, refiner=oracle_for(sd3_pipe), plan="H1P2R2")
    pipe.scheduler = UniPCMultistepScheduler.from_config(flow_unipc.config)
    assert pipe.plan is None
    torch.testing.assert_close(call(pipe, "sd3", num_inference_steps=4), expected)
    assert pipe.last_evaluation_counts == {"base": 4, "refiner": 0}
    pipe.set_plan("H1P2R2")  # FlowTurbo back
    call(pipe, "sd3")
    assert pipe.last_evaluation_counts == {"base": 4, "refiner": 3}


def _wan_a14b():
    from tiny_pipelines.video import CASES as VIDEO_CASES

    case = next(case for case in VIDEO_CASES if case.id == "WanPipeline-A14B")
    return case, case.build()


def test_two_expert_wan_routes_R_steps_on_the_expert_that_the_pipeline_calls():
    """Wan 2.2 A14B calls `transformer` above its boundary and `transformer_2` below: the late R steps reach the
    second expert, which is what the refiner replaces."""
    case, base = _wan_a14b()
    oracle = OracleRefiner(**VelocityRefiner.config_for_transformer(base.transformer_2),)
    oracle.register_to_config(base_denoiser="transformer_2")
    pipe = FlowTurboPipeline.from_pipe(base, refiner=oracle, plan="H1P1R1")
    pipe.set_progress_bar_config(disable=True)

    def run():
        return pipe(**case.call_kwargs(), num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                    output_type="latent").frames

    refined = run()
    assert pipe.last_evaluation_counts == {"base": 6, "refiner": 2}  # CFG: two calls per evaluation
    pipe.set_plan("H1P1H1")
    torch.testing.assert_close(refined, run(), rtol=1e-5, atol=1e-5)


def test_R_steps_that_reach_an_expert_the_refiner_does_not_replace_raise():
    case, base = _wan_a14b()
    refiner = VelocityRefiner.for_transformer(base.transformer)  # made for the high-noise expert
    pipe = FlowTurboPipeline.from_pipe(base, refiner=refiner, plan="H1P1R1")
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match="reaches 'transformer_2' in this pipeline, but the refiner replaces 'transformer'"):
        pipe(**case.call_kwargs(), num_inference_steps=3, output_type="latent")


def test_an_R_evaluation_that_no_hook_answered_raises_instead_of_running_the_base_model(sd3_pipe, monkeypatch):
    from flowturbo_diffusers.pipeline import FlowTurboPipelineMixin

    pipe = FlowTurboPipeline.from_pipe(sd3_pipe, refiner=oracle_for(sd3_pipe), plan="H1P2R2")
    monkeypatch.setattr(FlowTurboPipelineMixin, "_denoisers", lambda self: [])  # a model the routing does not know
    with pytest.raises(ValueError, match="reached no refiner"):
        call(pipe, "sd3")


def test_from_pipe_does_not_repeat_diffusers_cast_warning(sd3_pipe):
    """diffusers' from_pipe casts the shared modules to the dtype they have, and ModelMixin.to then warns about
    float32 modules even when there are none; FlowTurboPipeline.from_pipe drops that warning (and only it)."""
    import logging

    from diffusers.utils import logging as diffusers_logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("diffusers.models.modeling_utils")
    logger.addHandler(handler)
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_warning()
    try:
        FlowTurboPipeline.from_pipe(sd3_pipe, refiner=False)
        assert not [r for r in records if "kept in float32" in r.getMessage()]
        sd3_pipe.transformer.to(dtype=torch.float32)  # outside from_pipe, diffusers' warning is untouched
        assert [r for r in records if "kept in float32" in r.getMessage()]
    finally:
        logger.removeHandler(handler)
        diffusers_logging.set_verbosity(verbosity)

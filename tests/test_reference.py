"""The fidelity reference shared by the benchmark and the refiner evaluation: latents from fixed prompts and noise
seeds, and the many-step Heun solve they are compared with."""

import pytest
import torch
from conftest import CALL_KWARGS

from flowturbo_diffusers.reference import heun_pipeline, reference_solve, sample_latents

PROMPTS, SEEDS = ["a red 7 on a blue background", "a blue 2", "a green 5"], [3, 4, 5]


def relative_error(latents, reference):
    return ((latents - reference).norm() / reference.norm()).item()


def test_each_prompt_gets_its_own_seed_s_noise_whatever_the_batching(sd3_pipe):
    call_kwargs = dict(CALL_KWARGS["sd3"], num_inference_steps=2)
    together = sample_latents(sd3_pipe, PROMPTS, SEEDS, call_kwargs)
    assert together.shape[0] == 3 and together.dtype == torch.float32 and together.device.type == "cpu"
    torch.testing.assert_close(sample_latents(sd3_pipe, PROMPTS, SEEDS, call_kwargs, batch_size=2), together,
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(sample_latents(sd3_pipe, PROMPTS[2:], SEEDS[2:], call_kwargs), together[2:],
                               atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="one noise seed per prompt"):
        sample_latents(sd3_pipe, PROMPTS, SEEDS[:2], call_kwargs)


def test_the_reference_is_a_heun_solve_that_leaves_the_pipeline_alone(sd3_pipe):
    fine = reference_solve(sd3_pipe, PROMPTS, SEEDS, 16, CALL_KWARGS["sd3"])
    heun = reference_solve(sd3_pipe, PROMPTS, SEEDS, 8, CALL_KWARGS["sd3"])
    euler = sample_latents(sd3_pipe, PROMPTS, SEEDS, dict(CALL_KWARGS["sd3"], num_inference_steps=8))
    # Second order: 8 Heun steps land much closer to the 16-step solve than the pipeline's own 8 Euler steps.
    assert relative_error(heun, fine) < 0.5 * relative_error(euler, fine)
    assert str(heun_pipeline(sd3_pipe).plan) == "H*" and heun_pipeline(sd3_pipe).refiner is None
    assert type(sd3_pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"  # the user's pipeline is unchanged


def test_video_pipelines_latents_come_from_their_frames():
    # WanPipeline (like every video pipeline) returns `.frames`, not `.images`: sampling, the reference solve and so the
    # refiner's calibration and recommendation all stopped with an AttributeError on video models.
    from conftest import make_pipe

    from flowturbo_diffusers.reference import output_tensor

    pipe = make_pipe("wan")
    call_kwargs = dict(CALL_KWARGS["wan"], num_inference_steps=2)
    latents = sample_latents(pipe, PROMPTS[:2], SEEDS[:2], call_kwargs)
    assert latents.dim() == 5 and latents.shape[0] == 2 and torch.isfinite(latents).all()
    solved = reference_solve(pipe, PROMPTS[:2], SEEDS[:2], 2, CALL_KWARGS["wan"])
    assert solved.shape == latents.shape and not torch.equal(solved, latents)  # Heun, not the pipeline's own steps
    with pytest.raises(TypeError, match="neither `images` nor `frames`"):
        output_tensor(object())

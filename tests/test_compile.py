"""Sample-aware compilation on CPU with inductor: full graphs, no recompilation after warm-up, eager agreement."""

import logging

import pytest
import torch
import torch._dynamo
from conftest import call, make_pipe

from flowturbo_diffusers import FlowTurboPipeline, FlowTurboScheduler, VelocityRefiner
from flowturbo_diffusers.steps import UPDATES

pytestmark = pytest.mark.slow  # inductor compiles C++ kernels: seconds per graph on a cold cache


def test_every_step_update_compiles_as_one_graph_and_matches_eager():
    x, v0, v1 = (torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    h, h_next = torch.tensor(-0.11), torch.tensor(-0.07)
    arguments = {
        "predict": (x, v0, h),
        "correct": (x, v0, v1, h),
        "correct_then_predict": (x, v0, v1, h, h_next),
        "euler_then_predict": (x, v0, h, h_next),
    }
    for name, update in UPDATES.items():
        compiled = torch.compile(update, fullgraph=True, dynamic=False)
        torch.testing.assert_close(compiled(*arguments[name]), update(*arguments[name]), rtol=0, atol=1e-6)


def test_compiled_scheduler_steps_match_eager_for_each_plan():
    def run(scheduler):
        scheduler.set_timesteps(6)
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        for i, t in enumerate(scheduler.timesteps):
            x = scheduler.step(torch.cos(x + i), t, x).prev_sample
        return x

    for plan in ("H1P4E1", "H6", "P3E3"):
        eager, compiled = FlowTurboScheduler(plan=plan), FlowTurboScheduler(plan=plan)
        compiled.compile_steps()
        torch.testing.assert_close(run(compiled), run(eager), rtol=0, atol=1e-6)


def test_on_cpu_step_updates_stay_eager_by_default_and_cuda_graphs_still_copy_held_velocities():
    pipe = FlowTurboPipeline.from_pipe(make_pipe("sd3"), plan="H1P3")
    report = pipe.enable_flowturbo_compile(mode="reduce-overhead")  # compilation itself is lazy: nothing runs here
    assert report["scheduler updates"] == "eager" and report["transformer"] == "whole model"
    assert pipe.scheduler._updates == UPDATES
    assert pipe.scheduler.copy_held_velocities  # CUDA graph outputs are overwritten by the next replay


@pytest.mark.parametrize("layout_kind", ["sd3", "flux"])
def test_the_refiner_compiles_with_fullgraph(layout_kind):
    pipe = make_pipe(layout_kind)
    refiner = VelocityRefiner.for_transformer(pipe.transformer).eval()
    torch.nn.init.normal_(refiner.proj_out.weight, std=0.05)
    if layout_kind == "sd3":
        inputs = (torch.randn(2, 16, 16, 16), torch.randn(2, 16, 16, 16), torch.rand(2))
        extra = dict(pooled=torch.randn(2, 32))
    else:
        inputs = (torch.randn(2, 64, 16), torch.randn(2, 64, 16), torch.rand(2))
        extra = dict(pooled=torch.randn(2, 16), positions=torch.randn(64, 3))
    with torch.no_grad():
        expected = refiner(*inputs, **extra)
        compiled = torch.compile(refiner, fullgraph=True, dynamic=False)
        torch.testing.assert_close(compiled(*inputs, **extra), expected, rtol=1e-5, atol=1e-5)


def twin_pipelines(kind, plan, device="cpu"):
    """Two identical FlowTurbo pipelines (same weights, a refiner with a non-zero output), to compile one of them."""
    refiner = VelocityRefiner.for_transformer(make_pipe(kind).transformer)
    torch.nn.init.normal_(refiner.proj_out.weight, std=0.02)
    pipes = []
    for _ in range(2):
        twin = VelocityRefiner.from_config(refiner.config)
        twin.load_state_dict(refiner.state_dict())
        pipes.append(FlowTurboPipeline.from_pipe(make_pipe(kind).to(device), refiner=twin.to(device), plan=plan))
        pipes[-1].set_progress_bar_config(disable=True)
    return pipes


@pytest.fixture(scope="module")
def eager_and_compiled():
    eager, compiled = twin_pipelines("sd3", "H1P5R3")
    report = compiled.enable_flowturbo_compile(steps=True)  # the step updates too, as on GPU
    warmup = compiled.flowturbo_warmup(batch_size=1, height=32, width=32, max_sequence_length=16)
    return eager, compiled, report, warmup


def test_warmup_compiles_everything_and_reports_its_time(eager_and_compiled):
    _, _, report, warmup = eager_and_compiled
    assert report == {"scheduler updates": "fullgraph", "refiner": "fullgraph", "transformer": "whole model"}
    assert warmup["seconds"] > 0 and warmup["latent_shapes"] == [(2, 16, 16, 16)]


def test_calls_after_warmup_do_not_recompile(eager_and_compiled):
    _, compiled, _, _ = eager_and_compiled
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        call(compiled, "sd3")
        call(compiled, "sd3", seed=1)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_compiled_pipeline_call_agrees_with_eager(eager_and_compiled):
    eager, compiled, _, _ = eager_and_compiled
    torch.testing.assert_close(call(compiled, "sd3"), call(eager, "sd3"), rtol=1e-4, atol=1e-4)
    assert compiled.last_evaluation_counts == {"base": 7, "refiner": 5}


def test_a_new_batch_size_recompiles_once_and_says_so(eager_and_compiled, caplog):
    eager, compiled, _, _ = eager_and_compiled
    prompts = ["a red 7", "a blue 1"]
    with caplog.at_level(logging.WARNING):
        first = call(compiled, "sd3", prompt=prompts)
    assert any("are new to the compiled graphs" in record.getMessage() for record in caplog.records)
    caplog.clear()
    with torch._dynamo.config.patch(error_on_recompile=True), caplog.at_level(logging.WARNING):
        call(compiled, "sd3", prompt=prompts)
    assert not any("are new to the compiled graphs" in record.getMessage() for record in caplog.records)
    torch.testing.assert_close(first, call(eager, "sd3", prompt=prompts), rtol=1e-4, atol=1e-4)


def test_reduce_overhead_mode_path_agrees_with_eager_on_cpu():
    """On CPU inductor skips the CUDA graphs themselves, but the step markers and held-velocity copies still run."""
    eager, compiled = twin_pipelines("flux", "H1P2R2")
    report = compiled.enable_flowturbo_compile(mode="reduce-overhead", steps=True)
    assert report["transformer"] == "repeated blocks"  # Flux supports diffusers' regional compilation
    assert compiled.scheduler.copy_held_velocities
    torch.testing.assert_close(call(compiled, "flux"), call(eager, "flux"), rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_agree_with_eager_on_gpu():
    eager, compiled = twin_pipelines("sd3", "H1P5R3", device="cuda")
    compiled.enable_flowturbo_compile(mode="reduce-overhead")
    compiled.flowturbo_warmup(1, 32, 32, max_sequence_length=16)
    for seed in range(3):
        torch.testing.assert_close(call(compiled, "sd3", seed=seed).cpu(), call(eager, "sd3", seed=seed).cpu(),
                                   rtol=1e-3, atol=1e-3)

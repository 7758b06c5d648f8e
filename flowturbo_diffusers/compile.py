"""Sample-aware compilation (method.md): a plan fixes the step kinds, the batch and the resolution, so every piece
of a FlowTurbo call becomes a static graph.

- the refiner: ``torch.compile(fullgraph=True)``;
- the scheduler's updates (``steps.UPDATES``): compiled pure functions of tensors, step sizes included;
- the base transformer: by its repeated blocks where diffusers supports ``compile_repeated_blocks`` (Flux, Wan),
  otherwise its whole forward (SD3, Sana);
- optionally the VAE decoder.

Shapes are static (``dynamic=False``): a new batch size or resolution compiles once more, and
``FlowTurboPipelineMixin`` logs it. With ``mode="reduce-overhead"`` the transformer and refiner graphs run as CUDA
graphs; the routing hook then marks every model call with ``torch.compiler.cudagraph_mark_step_begin()`` and copies the
velocities it holds across calls out of the graph buffers. See ``docs/compile.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class CompileOptions:
    """What to compile and how (``mode`` and ``backend`` as in ``torch.compile``)."""

    mode: str | None = None
    backend: str = "inductor"
    transformer: bool = True
    refiner: bool = True
    steps: bool | None = None  # None: compile the step updates on CUDA only (see compile_pipeline)
    vae: bool = False

    @property
    def cuda_graphs(self) -> bool:
        return self.mode in CUDA_GRAPH_MODES

    def torch_compile_kwargs(self) -> dict:
        kwargs = {"dynamic": False, "backend": self.backend}
        if self.mode is not None:
            kwargs["mode"] = self.mode
        return kwargs


def compile_refiner(refiner: torch.nn.Module, options: CompileOptions) -> None:
    """Compile the refiner in place, as one graph (``fullgraph=True``)."""
    refiner.compile(fullgraph=True, **options.torch_compile_kwargs())


def compile_transformer(transformer: torch.nn.Module, options: CompileOptions) -> str:
    """Compile the base transformer; returns ``"repeated blocks"`` or ``"whole model"``.

    Regional compilation compiles one block's code for all its copies (much faster to compile). For a whole model, the
    compiled function replaces the instance's ``forward``, so hooks registered later (our routing hook) stay outside
    the graph and R evaluations skip it entirely.
    """
    kwargs = options.torch_compile_kwargs()
    if getattr(transformer, "_repeated_blocks", None):
        transformer.compile_repeated_blocks(**kwargs)
        return "repeated blocks"
    transformer.forward = torch.compile(transformer.forward, **kwargs)
    return "whole model"


def compile_vae_decoder(vae: torch.nn.Module, options: CompileOptions) -> None:
    decoder = getattr(vae, "decoder", None)
    if decoder is None:
        raise ValueError(f"{type(vae).__name__} has no `decoder` module to compile.")
    decoder.compile(**options.torch_compile_kwargs())


def compile_pipeline(pipe, options: CompileOptions) -> dict[str, str]:
    """Compile the parts of a FlowTurbo pipeline that ``options`` select; returns what was compiled and how."""
    compiled = {}
    pipe.scheduler.copy_held_velocities = options.cuda_graphs
    steps = options.steps
    if steps is None:
        # A compiled call of these tiny element-wise updates costs ~80-100 us on CPU (guards, wrapper) against
        # 10-25 us eager at the bundled model's size, so they pay only on GPU, where fusing saves kernel launches.
        steps = torch.device(pipe._execution_device).type == "cuda"
    if steps:
        pipe.scheduler.compile_steps(backend=options.backend)
        compiled["scheduler updates"] = "fullgraph"
    else:
        compiled["scheduler updates"] = "eager"
    if options.refiner and pipe.refiner is not None:
        compile_refiner(pipe.refiner, options)
        compiled["refiner"] = "fullgraph"
    if options.transformer:
        compiled["transformer"] = compile_transformer(pipe.transformer, options)
    if options.vae:
        compile_vae_decoder(pipe.vae, options)
        compiled["vae decoder"] = "whole module"
    return compiled

"""Build a FlowTurbo pipeline with a refiner, run it, save it, and load it back.

The refiner here is freshly initialised (it returns the previous velocity unchanged until trained; see
docs/training.md). Uses the bundled model, so it runs offline.

    python examples/refiner_pipeline.py --output-dir flowturbo-pipeline
"""

from __future__ import annotations

import argparse

import torch

from flowturbo_diffusers import FlowTurboPipeline, VelocityRefiner
from flowturbo_diffusers.generate import load_default_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="flowturbo-pipeline")
    parser.add_argument("--plan", default="H1P5R3")
    args = parser.parse_args()

    base, call_kwargs = load_default_model()
    call_kwargs.pop("num_inference_steps", None)
    refiner = VelocityRefiner.for_transformer(base.transformer, base_model="my-org/my-flow-model")
    fraction = refiner.num_parameters() / base.transformer.num_parameters()
    print(f"refiner: {refiner.num_parameters():,} parameters ({100 * fraction:.1f}% of the transformer)")

    pipe = FlowTurboPipeline.from_pipe(base, refiner=refiner, plan=args.plan)
    image = pipe("a red 7 on a blue background", generator=torch.Generator().manual_seed(0), **call_kwargs).images[0]
    print(f"{type(pipe).__name__} with plan {pipe.plan}: {pipe.last_evaluation_counts}")

    pipe.save_pretrained(args.output_dir)  # the pipeline, its FlowTurbo scheduler and refiner/ with a model card
    reloaded = FlowTurboPipeline.from_pretrained(args.output_dir)
    print(f"reloaded: plan {reloaded.plan}, refiner {type(reloaded.refiner).__name__}; saved in {args.output_dir}/")
    image.save(f"{args.output_dir}/sample.png")


if __name__ == "__main__":
    main()

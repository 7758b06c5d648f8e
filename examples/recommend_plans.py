"""Which plans to recommend for a refiner, by measurement: the bundled refiner's R plans against the training-free
plans of the same cost, with the refiner's cost measured on this machine (docs/refiner.md, "Recommended plans,
measured"). Prints the table the model card shows and the recommendation.

    python examples/recommend_plans.py                      # the bundled model and refiner, 16 samples
    python examples/recommend_plans.py --samples 4           # a quick look

`flowturbo calibrate-refiner --recommendation-samples N` does the same for any refiner and saves the result in it.
"""

from __future__ import annotations

import argparse

from flowturbo_diffusers import VelocityRefiner
from flowturbo_diffusers.bundled import BUNDLED_CALL_DEFAULTS, bundled_model_path, digits, load_bundled_pipeline
from flowturbo_diffusers.model_card import measured_plans_table
from flowturbo_diffusers.training.evaluation import recommend_plans


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=16, help="held-out prompts x seeds")
    parser.add_argument("--seed", type=int, default=60_000, help="first noise seed (not one the refiner saw)")
    args = parser.parse_args(argv)

    pipe = load_bundled_pipeline()
    pipe.set_progress_bar_config(disable=True)
    refiner = VelocityRefiner.from_pretrained(bundled_model_path() / "refiner")
    call = {k: v for k, v in BUNDLED_CALL_DEFAULTS.items() if k != "num_inference_steps"}
    prompts = digits.render_batch(args.samples, seed=args.seed).prompts
    seeds = [args.seed + i for i in range(args.samples)]
    recommendation = recommend_plans(pipe, refiner, prompts, seeds, call)
    print(measured_plans_table(recommendation))
    print(f"\nRecommended: {', '.join(recommendation['recommended_plans'])} (the refiner ships with "
          f"{', '.join(refiner.config.recommended_plans)})")


if __name__ == "__main__":
    main()

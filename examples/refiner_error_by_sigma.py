"""Where a refiner is accurate: its velocity offsets against the teacher's, by noise level, on the bundled model.

Every transformer call of the bundled pipeline's own sampler on held-out prompts and seeds becomes a pair as in
training (a step of dt towards the data, the teacher's velocity there); the table gives, per bin of sigma, the size of
the true offset, each refiner's relative error (0 is exact, 1 no better than no offset; offset scale included) and the
offset scale that would minimise that bin's error. R steps on sigmas where the error is near 1 gain nothing over
freezing the velocity (docs/training.md, "Where a refiner is accurate").

    python examples/refiner_error_by_sigma.py                                  # the bundled refiner
    python examples/refiner_error_by_sigma.py flowturbo_diffusers/bundled/model/refiner my-refiner/refiner
"""

from __future__ import annotations

import argparse

from flowturbo_diffusers import VelocityRefiner, bundled
from flowturbo_diffusers.bundled import digits
from flowturbo_diffusers.training.evaluation import offset_errors_by_sigma


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("refiners", nargs="*", help="refiner folders (default: the bundled refiner)")
    parser.add_argument("--prompts", type=int, default=112, help="held-out prompts (one trajectory each)")
    parser.add_argument("--steps", type=int, default=28, help="steps of the pipeline's own sampler (as in training)")
    parser.add_argument("--dt-range", type=float, nargs=2, default=(0.06, 0.12), metavar=("MIN", "MAX"))
    parser.add_argument("--seed", type=int, default=50_000, help="first noise seed (training used seeds below 1000)")
    args = parser.parse_args(argv)

    info = bundled.bundled_model_info()
    call = dict(info["call_defaults"], num_inference_steps=args.steps)
    pipe = bundled.load_bundled_pipeline()
    pipe.set_progress_bar_config(disable=True)
    prompts = digits.all_prompts()
    prompts = [prompts[(7 * i + 3) % len(prompts)] for i in range(args.prompts)]
    folders = args.refiners or [str(bundled.bundled_model_path() / "refiner")]
    tables = {}
    for folder in folders:
        refiner = VelocityRefiner.from_pretrained(folder)
        tables[folder] = offset_errors_by_sigma(pipe, refiner, prompts, args.seed, call, tuple(args.dt_range))

    first = tables[folders[0]]
    print(f"\n{len(prompts)} held-out trajectories of {args.steps} steps, dt in {tuple(args.dt_range)}; per refiner: "
          "relative error of its offset (best offset scale for the bin)\n")
    print("| sigma | pairs | true offset rms | " + " | ".join(folders) + " |")
    print("|---|---|---|" + "---|" * len(folders))
    for index, row in enumerate(first):
        cells = []
        for folder in folders:
            other = tables[folder][index]
            best = "—" if other["best_scale"] is None else f"{other['best_scale']:.2f}"
            cells.append(f"{other['relative_error']:.2f} ({best})")
        print(f"| {row['sigma_min']:g}-{row['sigma_max']:g} | {row['pairs']} | {row['true_offset_rms']:.3f} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

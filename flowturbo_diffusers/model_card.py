"""Model cards for refiners, built with huggingface_hub's ``ModelCard`` so they render and index on the Hub."""

from __future__ import annotations

import json

from .plan import Plan

CARD_TEMPLATE = """---
{{ card_data }}
---

# FlowTurbo velocity refiner{{ for_base }}

A small learned model that answers the **R (refiner) steps** of [FlowTurbo](https://arxiv.org/abs/2409.18128) sampling
in place of the base transformer: it predicts how the velocity changes from the last evaluated one, so late sampling
steps cost a fraction of a base-model call. It is used through the `flowturbo-diffusers` library and plugs into the
base model's usual diffusers pipeline.

- Parameters: {{ parameters }}{{ fraction }}
- Architecture: {{ architecture }}

## Usage

```python
import torch
from flowturbo_diffusers import FlowTurboPipeline

pipe = FlowTurboPipeline.from_pretrained(
    "{{ base_model_id }}", refiner="{{ repo_id }}", plan="{{ first_plan }}"
)
image = pipe("a photo of a cat", generator=torch.Generator().manual_seed(0)).images[0]
```

## Recommended plans

| plan | steps | base-model evaluations | refiner evaluations |
| --- | --- | --- | --- |
{{ plans_table }}

{{ measured_plans }}

## Training

{{ training }}

## Metrics

{{ metrics }}

## Compatibility

Made for `{{ base_model_id }}`; attaching it to a transformer with a different fingerprint raises an error before any
sampling:

```json
{{ fingerprint }}
```
"""


def _plans_table(plans) -> str:
    rows = []
    for plan in plans:
        parsed = Plan.parse(plan)
        if parsed.is_fill:
            rows.append(f"| `{plan}` | N ≥ {parsed.fixed_steps} | {_fill_formula(parsed, 'base')} | "
                        f"{_fill_formula(parsed, 'refiner')} |")
        else:
            counts = parsed.count_evaluations()
            rows.append(f"| `{plan}` | {parsed.num_steps} | {counts['base']} | {counts['refiner']} |")
    return "\n".join(rows)


def measured_plans_table(recommendation: dict) -> str:
    """Markdown: what ``recommend_plans`` measured (latent PSNR against a many-step Heun solve, cost in base-model
    evaluations with the refiner's measured cost) and what it concluded."""
    cost = recommendation["refiner_cost"]
    if recommendation["refiner_pays"]:
        verdict = ("The recommended plans are the R plans that beat the training-free (H/P) plans of the same cost "
                   "on this model, best first.")
    else:
        verdict = ("**No R plan beat the training-free (H/P) plans of the same cost on this model**, so the "
                   "recommended plans are training-free; the refiner does not pay here.")
    lines = [
        f"Measured on {recommendation['samples']} held-out prompts and seeds, latent PSNR against "
        f"{recommendation['reference']}; cost in base-model evaluations, a refiner evaluation measured at "
        f"{cost:.3g} of one. {verdict} The last column is the same plan with an untrained (zero-offset) refiner, which "
        "reuses the last velocity: the difference is what training added.",
        "",
        "| plan | base evaluations | refiner evaluations | cost | latent PSNR | H/P at the same cost | gain "
        "| untrained refiner |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in recommendation["plans"]:
        reference = row.get("training_free_psnr_db")
        gain = row.get("gain_db")
        lines.append(f"| `{row['plan']}` | {row['base_evaluations']} | {row['refiner_evaluations']} | {row['cost']:.2f} "
                     f"| {row['psnr_db']:.2f} dB | {'' if reference is None else f'{reference:.2f} dB'} | "
                     f"{'' if gain is None else f'{gain:+.2f} dB'} | {_db(row.get('zero_refiner_psnr_db'))} |")
    return "\n".join(lines)


def _db(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} dB"


def _fill_formula(plan: Plan, key: str) -> str:
    """``key`` ("base" or "refiner") evaluations of a fill plan at N steps, as ``a·N + b`` (the count is linear in N)."""
    first = max(plan.fixed_steps, 1) + 1
    at_first, at_next = (plan.count_evaluations(n)[key] for n in (first, first + 1))
    slope = at_next - at_first
    offset = at_first - slope * first
    term = {0: "", 1: "N"}.get(slope, f"{slope}N")
    if not term:
        return str(offset)
    return term + (f" + {offset}" if offset > 0 else f" − {-offset}" if offset < 0 else "")


def _section(info: dict | None, empty: str) -> str:
    if not info:
        return empty
    lines = []
    for key, value in info.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        lines.append(f"- **{key.replace('_', ' ')}**: {value}")
    return "\n".join(lines)


def refiner_model_card(refiner, repo_id: str | None = None):
    """The model card of ``refiner``: YAML metadata (library, base model, tags, license), usage, plans, training."""
    from huggingface_hub import ModelCard, ModelCardData

    config = refiner.config
    training = dict(config.training_info or {})
    metrics = training.pop("metrics", None)
    measurements = training.pop("plan_measurements", None)
    license_name = training.pop("license", "apache-2.0")
    base_fraction = training.get("base_model_parameters")
    card_data = ModelCardData(
        library_name="diffusers",
        license=license_name,
        base_model=config.base_model if config.base_model and "/" in config.base_model else None,
        tags=["flowturbo", "velocity-refiner", "diffusers", "flow-matching"],
    )
    parameters = refiner.num_parameters()
    layers = f"{config.num_layers} DiT block{'s' if config.num_layers > 1 else ''}"
    architecture = (
        f"{layers}, width {config.hidden_size}, {config.num_attention_heads} heads, {config.layout} latents, "
        f"adaLN conditioning on sigma{' + pooled text' if config.pooled_dim else ''}"
        f"{' + guidance' if config.guidance_embeds else ''}"
        f"{', cross-attention to the text tokens' if config.cross_attention else ''}"
    )
    return ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        for_base=f" for {config.base_model}" if config.base_model else "",
        parameters=f"{parameters:,}",
        fraction=f" ({100 * parameters / base_fraction:.1f}% of the base transformer)" if base_fraction else "",
        architecture=architecture,
        base_model_id=config.base_model or "<base model>",
        repo_id=repo_id or "<this repo>",
        first_plan=list(config.recommended_plans)[0],
        plans_table=_plans_table(config.recommended_plans),
        measured_plans=measured_plans_table(measurements) if measurements else (
            "These plans are the defaults, not measured on this model: `flowturbo calibrate-refiner` measures R plans "
            "against training-free plans of the same cost and recommends by it."),
        training=_section(
            training,
            "Not trained yet: the output layer is zero-initialised, so this refiner returns the previous velocity "
            "unchanged. Train one with `flowturbo train-refiner` (see the flowturbo-diffusers docs).",
        ),
        metrics=_section(metrics, "No metrics recorded yet."),
        fingerprint=json.dumps(config.base_fingerprint, indent=2),
    )


SCHEDULER_CARD_TEMPLATE = """---
{{ card_data }}
---

# FlowTurbo calibrated plan{{ for_base }}

A [FlowTurbo](https://arxiv.org/abs/2409.18128) sampling plan and sigma grid calibrated for one model by
`flowturbo calibrate` (flowturbo-diffusers): the step kinds (Heun, pseudo-corrector, Euler) and where the steps lie,
chosen against the model's own many-step solves. It is a diffusers scheduler config; the grid follows the pipeline's
shift, so it adapts to resolution as the pipeline's own grid does.

- Plan: `{{ plan }}` ({{ steps }} steps, {{ evaluations }} model evaluations)
- Grid (times before the pipeline's shift): {{ grid }}

## Usage

```python
from diffusers import DiffusionPipeline
from flowturbo_diffusers import FlowTurboScheduler

pipe = DiffusionPipeline.from_pretrained("{{ base_model_id }}")
pipe.scheduler = FlowTurboScheduler.from_pretrained("{{ repo_id }}", subfolder="scheduler")
image = pipe("a photo of a cat", num_inference_steps={{ steps }}).images[0]
```

## Calibration

{{ calibration }}

## Compatibility

Made for `{{ base_model_id }}` (its transformer's fingerprint below); `flowturbo calibrate` checks it when it
evaluates the plan on a model:

```json
{{ fingerprint }}
```
"""


def scheduler_model_card(scheduler, repo_id: str | None = None):
    """The model card of a calibrated FlowTurboScheduler: base model, plan, grid and what calibration measured."""
    from huggingface_hub import ModelCard, ModelCardData

    config = scheduler.config
    calibration = dict(config.calibration or {})
    base_model = calibration.get("base_model")
    fingerprint = calibration.pop("base_fingerprint", None)
    card_data = ModelCardData(
        library_name="diffusers",
        license="apache-2.0",
        base_model=base_model if base_model and "/" in base_model else None,
        tags=["flowturbo", "scheduler", "diffusers", "flow-matching"],
    )
    plan = Plan.parse(config.plan)
    return ModelCard.from_template(
        card_data,
        template_str=SCHEDULER_CARD_TEMPLATE,
        for_base=f" for {base_model}" if base_model else "",
        plan=str(plan),
        steps=plan.num_steps,
        evaluations=plan.count_evaluations()["base"],
        grid=", ".join(f"{value:.4f}" for value in config.calibrated_grid or []),
        base_model_id=base_model or "<base model>",
        repo_id=repo_id or "<this repo>",
        calibration=_section(calibration, "No calibration recorded."),
        fingerprint=json.dumps(fingerprint, indent=2),
    )

"""The refiner support table of docs/refiner.md, made from the conformance suite's catalogue and the adapters.

``python tests/refiner_support_table.py`` prints it; ``tests/test_refiner_coverage.py`` runs every case of the
catalogue through an oracle refiner, training, saving, loading and an R plan (or checks the refusal), and checks that
the docs hold exactly this table, so the docs cannot claim more (or less) than the tests show.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tiny_pipelines`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_pipelines.cases import PipelineCase, all_cases  # noqa: E402

from flowturbo_diffusers.adapters import ADAPTERS, adapter_for  # noqa: E402

SUPPORTED = "supported (oracle, train, save, load, R plan)"


def refiner_denoiser(case: PipelineCase) -> str:
    """The component a refiner replaces in the case's pipeline: the last of its denoisers (Wan 2.2 A14B's low-noise
    expert ``transformer_2``, whose steps are the late ones)."""
    return case.denoisers[-1]


def sigma_source(adapter) -> str:
    """How the refiner gets the sigma of a call of this class."""
    if adapter.timestep_per_sigma is None:
        return "the scheduler's run (the timestep is not a fixed map of sigma)"
    scale, zero = adapter.timestep_per_sigma, adapter.timestep_at_zero_sigma
    if zero == 0:
        return "timestep" if scale == 1 else f"timestep / {scale:g}"
    if zero == -scale:
        return "1 - timestep" if zero == 1 else f"1 - timestep / {zero:g}"
    return f"(timestep - {zero:g}) / {scale:g}"


def conditioning(model) -> str:
    """What the refiner conditions on besides the latent, the sigma and the velocity."""
    from flowturbo_diffusers import VelocityRefiner

    config = VelocityRefiner.config_for_transformer(model, hidden_size=16, num_attention_heads=2)
    adapter = adapter_for(model)
    parts = []
    if config["pooled_dim"]:
        parts.append(f"pooled text (`{adapter.pooled_argument}`)")
    if config["cross_attention"]:
        parts.append(f"text tokens (`{adapter.context_argument}`)")
    if config["guidance_embeds"]:
        parts.append("guidance")
    if adapter.positions_argument:
        parts.append(f"token positions (`{adapter.positions_argument}`)")
    return ", ".join(parts) or "velocity only"


def layout(adapter) -> str:
    shapes = {"image": "(B, C, H, W)", "sequence": "(B, L, C)", "video": "(B, C, F, H, W)"}
    text = "(B, F, H, W, C)" if adapter.channels_last else shapes[adapter.layout]
    if adapter.per_sample_lists and adapter.sample_argument in adapter.per_sample_lists:
        text += ", one tensor per sample"
    return text


def support_table() -> str:
    """The Markdown table: one row per transformer class of the catalogue, in catalogue order."""
    rows: dict[str, dict] = {}
    for case in all_cases():
        pipe = case.build()
        name = refiner_denoiser(case)
        model = getattr(pipe, name)
        row = rows.setdefault(type(model).__name__, {"model": model, "pipelines": []})
        details = [case.variant] * bool(case.variant) + [f"`{name}`"] * (name != "transformer")
        row["pipelines"].append(f"`{case.pipeline}`" + (f" ({', '.join(details)})" if details else ""))
    lines = [
        "| transformer | pipelines | status | conditioning | sigma from | latent |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for class_name, row in rows.items():
        recorded = ADAPTERS.get(class_name)
        if recorded is not None and recorded.refused:
            status, used, sigma = f"refused: {recorded.refused}", "-", "-"
            shape = layout(recorded)
        else:
            adapter = adapter_for(row["model"])
            status, used, sigma, shape = SUPPORTED, conditioning(row["model"]), sigma_source(adapter), layout(adapter)
        lines.append(f"| `{class_name}` | {', '.join(row['pipelines'])} | {status} | {used} | {sigma} | {shape} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(support_table())

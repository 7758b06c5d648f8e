"""The benchmark: FlowTurbo against the samplers a diffusers user would pick, quality against latency.

``flowturbo bench`` or ``python -m flowturbo_diffusers.benchmark``; see ``docs/benchmarks.md`` for the latest run.
Modules: ``samplers`` (what is compared and how it is switched on), ``metrics`` (PSNR, FID, KID), ``run`` (the
measurements), ``report`` (Pareto curves, headline, tables, plots, docs).
"""

"""The benchmark: FlowTurbo against the samplers a diffusers user would pick, quality against latency.

``flowturbo bench`` or ``python -m flowturbo_diffusers.benchmark``; see ``docs/benchmarks.md`` for the latest run.
Modules, in the order a run uses them:

- ``run``: the settings, loading the model, and the run itself (``run_benchmark``);
- ``samplers``: what is compared (families, points, the default grid, the calibrations behind the calibrated
  families); ``grids``: the fixed time-uniform and AYS-style grids; ``switch``: how each sampler is switched on;
- ``sampling``: the fixed samples every sampler generates, decoding, the reference solve, evaluation counts;
- ``scoring``: the ``Scorer`` interface for FID, KID and prompt accuracy (the bundled model's is
  ``flowturbo_diffusers.bundled.scoring``); ``metrics``: PSNR, FID, KID;
- ``timing``: interleaved wall times with the machine's drift removed, FlowTurbo's overhead, the share of a whole
  call outside the denoising loop, compiled vs eager;
- ``analysis``: Pareto fronts, headline savings, timing-noise intervals, targets; ``markdown`` and ``plots``: the
  report's prose, tables and figures; ``report``: writes them all (and again from ``benchmark.json``).
"""

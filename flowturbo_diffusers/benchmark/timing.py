"""Timing on a machine whose speed drifts: take the drift out of interleaved wall times.

On a shared machine (a cloud VM, a CI runner) the speed of the whole machine wanders over seconds to minutes, so
consecutive calls are slow or fast together. Interleaving the samplers in a new random order every round already
makes the drift hit every sampler alike on average, but with a few rounds it still moves each sampler's median by
several per cent (in an 11-round run of the bundled benchmark, enough to time a plan slower than one with two more
model calls). Because the calls are interleaved,
the drift can be measured from the calls themselves: a call's neighbours in time, each compared with its own
sampler's typical time, show how fast the machine was just then.
"""

from __future__ import annotations

import numpy as np

ITERATIONS = 10


def remove_drift(keys: list, seconds: list[float], window: int = 4) -> tuple[list[float], list[float]]:
    """Each call's time with the machine's speed at that moment divided out, and that speed factor.

    ``keys[i]`` names what call ``i`` ran (a sampler and batch size) and ``seconds[i]`` is its wall time, in the order
    the calls ran, which must interleave the keys (a new random order each round). The model is
    ``log seconds = typical(key) + drift(moment) + noise``: alternately, each key's typical time is the median of its
    calls with the drift removed, and the drift at call ``i`` is the median, over the ``window`` calls before and after
    it (not ``i`` itself, so that a call's own noise stays in its time), of how much slower than typical they were.
    The drift is centred on its median, so the corrected times are wall times at the run's median speed.

    ``window=0`` (or too few calls) returns the times unchanged, with factors of 1.
    """
    count = len(seconds)
    if len(keys) != count:
        raise ValueError(f"remove_drift needs one key per call: {len(keys)} keys for {count} times.")
    if window < 0:
        raise ValueError(f"The drift window must be 0 (no correction) or more calls, got {window}.")
    if window == 0 or count < 2 * window + 1 or len(set(keys)) < 2:
        return list(seconds), [1.0] * count
    log_seconds = np.log(np.asarray(seconds, dtype=float))
    index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    key_of_call = np.asarray([index[key] for key in keys])
    members = [np.flatnonzero(key_of_call == i) for i in range(len(index))]
    neighbours = [np.r_[max(0, i - window):i, i + 1:min(count, i + window + 1)] for i in range(count)]
    drift = np.zeros(count)
    for _ in range(ITERATIONS):
        typical = np.empty(len(index))
        for i, calls in enumerate(members):
            typical[i] = np.median(log_seconds[calls] - drift[calls])
        slower = log_seconds - typical[key_of_call]
        drift = np.asarray([np.median(slower[near]) for near in neighbours])
        drift -= np.median(drift)
    return np.exp(log_seconds - drift).tolist(), np.exp(drift).tolist()

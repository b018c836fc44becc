"""Round-robin timing of the backends: the same machine noise for all of them."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence

import torch

from .runtimes import Run


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# Calls of a backend per turn; only the last is timed. The first call after another
# runtime ran pays for waking its thread pool and for caches the other runtime evicted
# (measured: ExecuTorch 5.0 ms alone, 6.2-7.0 ms right after torch eager, 5.1 with one
# untimed call first); an app that runs one runtime never pays that.
CALLS_PER_TURN = 2


def time_interleaved(
    runs: dict[str, Run],
    x: torch.Tensor,
    rounds: int,
    warmup: int,
    advance: Callable[[str], None],
    label: str,
    calls_per_turn: int = CALLS_PER_TURN,
) -> dict[str, list[float]]:
    """Each round, every backend takes a turn of ``calls_per_turn`` calls of which the
    last is timed, the first backend rotating; seconds per timed call."""
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one timed call would land on whichever backend runs then
    try:
        with torch.inference_mode():
            for round_index in range(warmup + rounds):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    for _ in range(calls_per_turn - 1):
                        runs[name](x)
                    start = time.perf_counter()
                    runs[name](x)
                    elapsed = time.perf_counter() - start
                    if round_index >= warmup:
                        times[name].append(elapsed)
                if round_index < warmup:
                    advance(f"{label}: warm-up {round_index + 1}/{warmup}")
                else:
                    advance(f"{label}: round {round_index + 1 - warmup}/{rounds}")
    finally:
        if gc_was_enabled:
            gc.enable()
    return times

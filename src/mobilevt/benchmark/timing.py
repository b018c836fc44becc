"""Round-robin timing of the backends: the same machine noise for all of them."""
from __future__ import annotations


import gc
import time
from typing import Callable, Sequence

import torch

from .runtimes import Run


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def time_interleaved(
    runs: dict[str, Run], x: torch.Tensor, rounds: int, warmup: int, advance: Callable[[str], None], label: str
) -> dict[str, list[float]]:
    """One call of each backend per round, the first backend rotating; seconds per call."""
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

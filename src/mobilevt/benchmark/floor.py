"""This machine's FLOP floor: the peak fp32 matmul throughput on the benchmark's threads."""
from __future__ import annotations


import time
from typing import Sequence

import torch

from .report import MatmulPeak


def measure_matmul_peak(threads: int, sizes: Sequence[int] = (1024, 2048), repeats: int = 5) -> MatmulPeak:
    """Peak fp32 matmul GFLOP/s of this CPU on ``threads`` threads: the best of ``repeats``
    ``torch.mm`` calls at each square size (2 * n^3 FLOPs each)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        by_size: dict[int, float] = {}
        generator = torch.Generator().manual_seed(0)
        for n in sizes:
            a = torch.rand(n, n, generator=generator)
            b = torch.rand(n, n, generator=generator)
            out = torch.empty(n, n)
            torch.mm(a, b, out=out)  # warm-up: thread pool, page faults
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                torch.mm(a, b, out=out)
                best = min(best, time.perf_counter() - start)
            by_size[int(n)] = 2 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(previous)
    return MatmulPeak(max(by_size.values()), threads, tuple(int(s) for s in sizes), by_size, repeats)

"""This machine's floor: the fastest matrix-multiply kernels of each runtime, measured on
the benchmark's threads, and the CPU's theoretical peak from its instruction set.

The fp32 floor of a model is its FLOPs divided by the fastest fp32 kernel measured here
(torch.mm through oneDNN/MKL, onnxruntime's MLAS, XNNPACK): a backend can only approach it.
The int8 kernels (torch._int_mm, onnxruntime's u8s8 MatMulInteger, XNNPACK's quantized
linear) tell what an int8 file could gain at most.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..export.formats.executorch import executorch_runner, set_executorch_threads, write_xnnpack_program
from ..export.formats.onnx import onnx_session
from ..export.quantize import quantize_pt2e_xnnpack
from .report import KernelPeak, MatmulPeak, TheoreticalPeak

GEMM_SIZE = 1024  # square: large enough for every kernel to reach its peak on a few cores


def measure_matmul_peak(
    threads: int, runtimes: Sequence[str] = (), sizes: Sequence[int] = (1024, 2048), repeats: int = 5
) -> MatmulPeak:
    """The best GEMM throughput of torch (fp32 at each of ``sizes``, int8) and, for each of
    ``runtimes`` installed ("onnxruntime", "executorch"), of its own kernels, on ``threads``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        by_size = {int(n): 2 * n**3 / _best_seconds(_torch_mm(n), repeats) / 1e9 for n in sizes}
        kernels = [KernelPeak("torch.mm (oneDNN/MKL)", "fp32", max(by_size.values()), max(by_size, key=by_size.get))]
        kernels += _measured([("torch._int_mm", "int8", lambda: _torch_int_mm(GEMM_SIZE))], repeats)
        with tempfile.TemporaryDirectory(prefix="mobilevt-floor-") as folder:
            if "onnxruntime" in runtimes:
                kernels += _measured(_onnxruntime_kernels(Path(folder), threads), repeats)
            if "executorch" in runtimes:
                kernels += _measured(_xnnpack_kernels(Path(folder), threads), repeats)
    finally:
        torch.set_num_threads(previous)
    fp32 = max(k.gops for k in kernels if k.dtype == "fp32")
    return MatmulPeak(fp32, threads, tuple(int(s) for s in sizes), by_size, repeats, kernels, theoretical_peak(threads))


def _best_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: thread pool, page faults, packing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _measured(candidates: list[tuple[str, str, Callable[[], Callable[[], object]]]], repeats: int) -> list[KernelPeak]:
    """Each (name, dtype, make runner) timed on a GEMM_SIZE cube; a kernel that this
    install cannot build is left out (its runtime's rows say why)."""
    peaks = []
    for name, dtype, make in candidates:
        try:
            run = make()
        except Exception:  # noqa: BLE001 - an optional kernel
            continue
        peaks.append(KernelPeak(name, dtype, 2 * GEMM_SIZE**3 / _best_seconds(run, repeats) / 1e9, GEMM_SIZE))
    return peaks


def _torch_mm(n: int) -> Callable[[], object]:
    generator = torch.Generator().manual_seed(0)
    a, b, out = torch.rand(n, n, generator=generator), torch.rand(n, n, generator=generator), torch.empty(n, n)
    return lambda: torch.mm(a, b, out=out)


def _torch_int_mm(n: int) -> Callable[[], object]:
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=generator)
    b = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=generator)
    torch._int_mm(a, b)  # raises where this torch has no CPU int8 GEMM
    return lambda: torch._int_mm(a, b)


def _onnxruntime_kernels(folder: Path, threads: int):

    n = GEMM_SIZE
    rng = np.random.default_rng(0)
    fp32 = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    int8 = rng.integers(0, 256, (n, n), dtype=np.uint8), rng.integers(-128, 128, (n, n), dtype=np.int8)
    return [
        ("onnxruntime MatMul (MLAS)", "fp32", lambda: _onnx_gemm("MatMul", *fp32, folder, threads)),
        ("onnxruntime MatMulInteger u8s8 (MLAS)", "int8", lambda: _onnx_gemm("MatMulInteger", *int8, folder, threads)),
    ]


def _onnx_gemm(op: str, a, b, folder: Path, threads: int) -> Callable[[], object]:
    """onnxruntime running the one-node graph ``op(A, B)``, ``B`` a constant, on ``a``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    a_type = TensorProto.UINT8 if a.dtype.name == "uint8" else TensorProto.FLOAT
    out_type = TensorProto.INT32 if op == "MatMulInteger" else TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["C"])],
        "gemm",
        [helper.make_tensor_value_info("A", a_type, list(a.shape))],
        [helper.make_tensor_value_info("C", out_type, [a.shape[0], b.shape[1]])],
        [numpy_helper.from_array(b, "B")],
    )
    path = folder / f"{op}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    session = onnx_session(path, threads)
    return lambda: session.run(None, {"A": a})


def _xnnpack_kernels(folder: Path, threads: int):
    def build(int8: bool) -> Callable[[], object]:

        linear = torch.nn.Linear(GEMM_SIZE, GEMM_SIZE, bias=False).eval()
        x = torch.rand(GEMM_SIZE, GEMM_SIZE, generator=torch.Generator().manual_seed(0))
        if int8:
            linear = quantize_pt2e_xnnpack(linear, (x,), [(x,)])
        path = folder / f"linear{'-int8' if int8 else ''}.pte"
        write_xnnpack_program(torch.export.export(linear, (x,)), path)
        set_executorch_threads(threads)
        run, _ = executorch_runner(path)
        return lambda: run(x)

    return [
        ("XNNPACK linear (ExecuTorch)", "fp32", lambda: build(False)),
        ("XNNPACK int8 linear (ExecuTorch; with quantizing its input)", "int8", lambda: build(True)),
    ]


def theoretical_peak(threads: int) -> TheoreticalPeak | None:
    """cores x clock x operations per cycle of the widest FMA units (Linux's /proc/cpuinfo):
    fp32 FLOPs, and int8 operations with VNNI (4 int8 products per fp32 lane)."""
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read()
    except OSError:
        return None
    flags, mhz = set(_cpuinfo_field(info, "flags").split()), _cpuinfo_field(info, "cpu MHz")
    if not flags or not mhz:
        return None
    family = _cpuinfo_field(info, "cpu family")
    amd = _cpuinfo_field(info, "vendor_id") == "AuthenticAMD"
    per_cycle, how = _fp32_flops_per_cycle(flags, amd, int(family) if family.isdigit() else 0)
    cores = min(threads, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    ghz = float(mhz) / 1e3
    fp32 = cores * ghz * per_cycle
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    return TheoreticalPeak(
        fp32_gflops=fp32,
        int8_gops=fp32 * 4 if vnni else fp32 * 2,
        cores=cores,
        ghz=ghz,
        fp32_flops_per_cycle=per_cycle,
        how=f"{cores} cores x {ghz:.2f} GHz (reported clock; boost can exceed it) x {per_cycle} fp32 FLOP/cycle "
        f"({how}); int8: {'4 products per fp32 lane (VNNI)' if vnni else '2 per lane (no VNNI)'}"
        + ("; AMX tiles are not counted" if "amx_tile" in flags else ""),
    )


def _cpuinfo_field(info: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", info, re.M)
    return match.group(1).strip() if match else ""


def _fp32_flops_per_cycle(flags: set[str], amd: bool, family: int) -> tuple[int, str]:
    if "avx512f" in flags:
        if amd and family < 26:  # Zen 4 runs 512-bit instructions on 256-bit units
            return 32, "AVX-512 on two 256-bit FMA units (AMD Zen 4)"
        return 64, "AVX-512: two 512-bit FMA units"
    if "fma" in flags and "avx2" in flags:
        return 32, "AVX2: two 256-bit FMA units"
    return 8, "SSE: no FMA"

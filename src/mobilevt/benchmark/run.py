"""The benchmark run: every model x batch size x backend, built, checked and timed."""

from __future__ import annotations

import gc
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..console import terminal
from ..errors import InvalidInputError
from ..factory import create_model
from ..profiling import count_macs
from ..registry import get_model_entry
from ..version import __version__
from .floor import measure_matmul_peak
from .memory import MEMORY_RUNS, MemoryHelper, measure_backend_memory
from .models import resolve_models
from .profile import BackendProfile, profile_executorch, profile_onnxruntime, profile_torch
from .report import (
    BACKEND_LABELS,
    BACKENDS,
    INT8_BACKENDS,
    KNOWN_BACKENDS,
    PEER_BACKENDS,
    REFERENCE_BACKEND,
    BenchMeta,
    BenchReport,
    BenchRow,
)
from .runtimes import Backend, Run, build_backends, missing_package, one_line, runtime_of
from .timing import CALLS_PER_TURN, percentile, time_interleaved


def _versions() -> dict[str, str]:

    versions = {"mobilevt": __version__, "torch": torch.__version__}
    for package in ("onnxruntime", "executorch", "timm", "transformers", "ai_edge_litert"):
        try:
            versions[package] = version(package.replace("_", "-"))
        except Exception:  # noqa: BLE001 - not installed
            continue
    return versions


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            match = re.search(r"^model name\s*:\s*(.+)$", fh.read(), re.M)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_benchmark(
    models: Sequence[str] | None = None,
    *,
    backends: Sequence[str] = BACKENDS,
    batch_sizes: Sequence[int] = (1, 8),
    image_size: int = 256,
    threads: int | None = None,
    runs: int = 20,
    warmup: int = 3,
    measure_memory: bool = True,
    progress: bool = True,
    seed: int = 0,
    profile: bool = False,
) -> BenchReport:
    """Time every (model, batch, backend) interleaved and return the report.

    Args:
        models: names or shell patterns; default: every registered variant.
        backends: any of ``BACKENDS``; ``timm`` is the reference of the ratio column.
        threads: torch, onnxruntime, ExecuTorch (and TFLite) threads; default: the cores
            this process may use.
        runs: timed rounds per (model, batch), one call of each backend per round.
        warmup: untimed rounds before them.
        measure_memory: peak RSS of each backend, in a process of its own (Linux and macOS).
        profile: also each backend's time by operator, at the first batch size, from its
            runtime's own profiler (``benchmark.profile``).
    """

    names = resolve_models(models)
    backends, batch_sizes, threads, measure_memory, notes = _checked_options(
        backends, batch_sizes, threads, runs, warmup, image_size, measure_memory
    )
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    clock = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    steps_per_model = len(backends) * (2 if measure_memory else 1) + len(batch_sizes) * (warmup + runs)
    bar = tqdm(
        total=steps_per_model * len(names), unit="step", disable=not progress, file=terminal(), desc="mobilevt bench"
    )

    def advance(text: str) -> None:
        bar.set_description_str(text, refresh=False)
        bar.update(1)

    rows: list[BenchRow] = []
    profiles: list[BackendProfile] = []
    helpers: list[MemoryHelper] = []  # one, made when the first model's memory is measured
    try:
        peak = measure_matmul_peak(threads, runtimes=_runtimes_of(backends))
        with tempfile.TemporaryDirectory(prefix="mobilevt-bench-") as tmp:
            for name in names:
                cost = _model_cost(name, image_size)
                built = build_backends(name, backends, image_size, threads, batch_sizes[-1], seed, Path(tmp), advance)
                model_rows = [
                    row
                    for batch in batch_sizes
                    for row in _bench_batch(name, batch, built, image_size, runs, warmup, seed, advance)
                ]
                _add_model_facts(name, model_rows, cost, peak)
                if profile:
                    advance(f"{name}: profiling each backend")
                    profiles += profile_backends(name, built, batch_sizes[0], image_size, threads, runs, seed)
                if measure_memory:
                    helpers = helpers or [_memory_helper(backends)]
                    _add_memory(
                        model_rows,
                        measure_backend_memory(name, built, batch_sizes, image_size, threads, helpers[0], advance),
                    )
                rows += model_rows
                del built
                gc.collect()
    finally:
        bar.close()
        torch.set_num_threads(previous_threads)
        for helper in helpers:
            helper.close()
    meta = BenchMeta(
        image_size=image_size,
        threads=threads,
        runs=runs,
        warmup=warmup,
        batch_sizes=batch_sizes,
        backends=backends,
        models=names,
        matmul_peak=peak,
        cpu=_cpu_name(),
        cpu_count=os.cpu_count(),
        versions=_versions(),
        memory_method=_memory_method(measure_memory),
        started=started,
        seconds=time.perf_counter() - clock,
        **_METHODS,
        timing_method=(
            f"all backends of a (model, batch) built first, then {warmup} warm-up and {runs} timed rounds; "
            f"in each round every backend takes a turn of {CALLS_PER_TURN} calls in a row of which the last "
            "is timed (the first wakes its thread pool after another runtime ran), the first backend "
            "rotating; median and p90 of the timed calls; images/s = batch / median; same random fp32 "
            "input for all"
        ),
    )
    return BenchReport(meta, rows, notes, profiles)


def _runtimes_of(backends: Sequence[str]) -> list[str]:
    """The runtimes whose own GEMM kernels the floor measures: those being benchmarked."""
    return [
        r for r in ("onnxruntime", "executorch") if any(b.endswith(r) for b in backends) and missing_package(r) is None
    ]


def _checked_options(
    backends: Sequence[str],
    batch_sizes: Sequence[int],
    threads: int | None,
    runs: int,
    warmup: int,
    image_size: int,
    measure_memory: bool,
):
    """The backends (unique, in order), the sorted batch sizes, the thread count, whether
    memory can be measured here and the notes to report; bad options are refused."""
    backends = list(dict.fromkeys(backends))
    unknown = [b for b in backends if b not in KNOWN_BACKENDS]
    if unknown or not backends:
        raise InvalidInputError(
            f"unknown backend(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(KNOWN_BACKENDS)}"
        )
    batch_sizes = sorted(set(int(b) for b in batch_sizes))
    if not batch_sizes or batch_sizes[0] < 1:
        raise InvalidInputError("batch sizes must be positive integers, e.g. --batch-sizes 1 8")
    threads = threads or _available_cores()
    notes = []
    if measure_memory and not hasattr(os, "fork"):
        measure_memory = False  # the measuring processes are forked
        notes.append("peak memory not measured: it needs os.fork (Linux, macOS)")
    if threads < 1 or runs < 1 or warmup < 0 or image_size < 32:
        raise InvalidInputError("need threads >= 1, runs >= 1, warmup >= 0 and image size >= 32")
    return backends, batch_sizes, threads, measure_memory, notes


def _model_cost(name: str, image_size: int):

    return count_macs(create_model(name).eval(), (image_size, image_size))


def _add_model_facts(name: str, model_rows: list[BenchRow], cost, peak) -> None:
    """MACs, parameters, the classifier's ImageNet top-1 and the floor of every row."""

    entry = get_model_entry(name)
    top1 = entry.default_weights.top1 if entry.default_weights else None  # classifiers' ImageNet top-1
    floor_per_image_ms = 2 * cost.macs / (peak.gflops * 1e9) * 1e3
    for row in model_rows:
        row.macs_g = cost.macs / 1e9
        row.params_m = cost.params / 1e6
        row.top1 = top1
        row.floor_ms = floor_per_image_ms * row.batch
        if row.status == "ok":
            row.ratio_to_floor = row.median_ms / row.floor_ms
            row.fraction_of_peak = row.floor_ms / row.median_ms


def _memory_helper(backends: Sequence[str]) -> MemoryHelper:
    # timm is imported by the helper once; onnxruntime, ExecuTorch and transformers start
    # threads on import, so each measuring process imports them after the fork
    timm_ok = "timm" in backends and missing_package("timm") is None
    return MemoryHelper(["mobilevt.benchmark.runtimes"] + (["timm"] if timm_ok else []))


def _add_memory(model_rows: list[BenchRow], memory: dict) -> None:
    for row in model_rows:
        measured = memory.get(row.backend)
        if isinstance(measured, dict):
            row.peak_memory_mb = measured.get(row.batch)
        elif isinstance(measured, str):
            row.note = "; ".join(filter(None, [row.note, measured]))


def _memory_method(measure_memory: bool) -> str:
    if not measure_memory:
        return "not measured (--no-memory)"
    if os.path.exists("/proc/self/clear_refs"):
        return (
            "peak resident set size of a process of its own per backend (forked from a helper that imported torch "
            f"and mobilevt) while it runs {MEMORY_RUNS} calls at each batch size after one untimed call, minus its "
            "RSS before loading the model: weights, runtime arenas, activations and the input. Linux VmHWM, reset "
            "through /proc/self/clear_refs before each batch size"
        )
    return (
        "peak resident set size (getrusage ru_maxrss) of a process of its own per backend, minus its peak "
        "before loading the model; the peak cannot be reset here, so larger batches include smaller ones'"
    )


_METHODS = dict(
    weights=(
        "random (well scaled, no denormals); mobilevt and timm share the same values, transformers has its "
        "own; latency does not depend on weight values and nothing is downloaded"
    ),
    backend_method=(
        "ONNX Runtime, ExecuTorch and TFLite run files written by mobilevt.export.export_model (BatchNorm "
        "folded) to a temporary folder, with the same thread count as torch; TorchScript is the fused "
        "channels-last model scripted or traced (whichever ran faster in a quick check; its note "
        "says which) and frozen. Peer paths (timm -> ...) run timm's model, with the same weights, "
        "exported by each runtime's own tool as a user without mobilevt would (torch.onnx.export at opset "
        "17; torch.export + XnnpackPartitioner; litert_torch.convert) in the same runtimes"
    ),
    floor_method=(
        "2 x MACs (mobilevt.profiling.count_macs: convolutions, linear layers, attention matmuls) x "
        "batch / the fastest fp32 GEMM measured on the same threads in the same run (torch.mm, and the "
        "benchmarked runtimes' own kernels: onnxruntime's MLAS, XNNPACK); '% of fp32 peak' is floor / "
        "median."
    ),
)


def _bench_batch(
    name: str,
    batch: int,
    built: dict[str, Backend],
    size: int,
    runs: int,
    warmup: int,
    seed: int,
    advance: Callable[[str], None],
) -> list[BenchRow]:
    rows = {
        backend: BenchRow(name, batch, backend, BACKEND_LABELS[backend], state.status, state.note)
        for backend, state in built.items()
    }
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + batch))
    runners: dict[str, Run] = {}
    expected: torch.Tensor | None = None
    with torch.inference_mode():
        if built.get("eager") and built["eager"].status == "ok":
            expected = built["eager"].runner_for(batch)(x)
        for backend, state in built.items():
            if state.status != "ok":
                continue
            row = rows[backend]
            if state.max_batch is not None and batch > state.max_batch:
                row.status = "unsupported"
                row.note = f"the exported program runs batch <= {state.max_batch}; {state.note}"
                continue
            try:
                run = state.runner_for(batch)
                out = run(x)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                row.status, row.note = "failed", f"failed at batch {batch}: {one_line(exc)}"
                continue
            if not torch.isfinite(out).all() or out.abs().max() < 1e-6:
                row.note = "; ".join(filter(None, [row.note, "warning: logits not finite or ~0 (denormal timings?)"]))
            if expected is not None and state.same_weights:
                row.max_abs_diff = (out.float() - expected.float()).abs().max().item()
                if row.max_abs_diff > 1e-3 and backend not in INT8_BACKENDS:  # int8 differs by design
                    row.note = "; ".join(filter(None, [row.note, "warning: logits differ from eager"]))
            runners[backend] = run
    if runners:
        times = time_interleaved(runners, x, runs, warmup, advance, f"{name} batch {batch}")
    else:
        times = {}
        for _ in range(warmup + runs):
            advance(f"{name} batch {batch}")
    for backend, samples in times.items():
        row = rows[backend]
        row.median_ms = statistics.median(samples) * 1e3
        row.p90_ms = percentile(samples, 0.9) * 1e3
        row.throughput_ips = batch / (row.median_ms / 1e3)
        row.runs = len(samples)
    _add_ratios(rows)
    return list(rows.values())


def _add_ratios(rows: dict[str, BenchRow]) -> None:
    """Each timed row against timm eager and against the fastest peer path of its batch."""
    reference = rows.get(REFERENCE_BACKEND)
    peers = [rows[b] for b in PEER_BACKENDS if b in rows and rows[b].status == "ok"]
    best_peer = min(peers, key=lambda r: r.median_ms) if peers else None
    for row in rows.values():
        if row.status != "ok":
            continue
        if reference is not None and reference.status == "ok":
            row.ratio_to_timm = row.median_ms / reference.median_ms
        if best_peer is not None:
            row.ratio_to_best_peer = row.median_ms / best_peer.median_ms


def profile_backends(model: str, built: dict, batch: int, size: int, threads: int, runs: int, seed: int) -> list:
    """The profile of every backend of ``built`` that ran (``runtimes.Backend``), at ``batch``;
    a backend whose runtime has no per-operator profiler here gets a note instead."""
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + batch))
    profiles = []
    for backend, state in built.items():
        if state.status != "ok" or (state.max_batch is not None and batch > state.max_batch):
            continue
        runtime = runtime_of(backend)
        if runtime == "onnxruntime":
            found = profile_onnxruntime(backend, state.artifact, x, runs, threads)
        elif runtime == "executorch":
            found = profile_executorch(backend, state.artifact, x, runs)
        elif runtime in ("eager", "fused", "timm", "transformers", "scripted"):
            found = profile_torch(backend, state.runner_for(batch), x, runs)
        else:
            found = BackendProfile(backend, "none", 0, 0.0, note=f"no per-operator profiler for {runtime} here")
        found.model, found.batch = model, batch
        profiles.append(found)
    return profiles

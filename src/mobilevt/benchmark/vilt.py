"""``mobilevt bench vilt_b32_vqa``: ViLT VQA latency in mobilevt's runtimes against transformers.

Both models get the same random weights (transformers' initialisation, converted to
mobilevt's layout); the input is one image and a full-length question (40 tokens), as
``ViltProcessor`` pads them. Every candidate is timed interleaved with the others (the
first one rotating) so that machine noise hits them alike. Each row gives its median, its
ratio to transformers eager, its max-abs logit difference from mobilevt eager in the same
setting, and its share of the fp32 floor: 2 x the setting's FLOPs (counted on the eager
model with ``torch.utils.flop_counter``) over the fastest fp32 GEMM measured in the run.

Runtimes (``backends``): ``eager``, ``scripted`` (``torch.jit.script``), ``onnxruntime``
and ``executorch`` (the files of :func:`mobilevt.export.vilt.export_vilt_onnx` /
:func:`~mobilevt.export.vilt.export_vilt_executorch`, through the format objects' runners).

With a MobiVQA setting (pruning after ``prune_layer`` keeping ``keep_ratio`` of the image
tokens, and / or a fixed exit after ``exit_layer``) every runtime is timed in it too, and
the row gives the setting's FLOP share of the full model next to its measured share on the
same runtime: the model's own cost model beside what the runtime makes of it.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch.jit.mobile import _load_for_lite_interpreter
from torch.utils.flop_counter import FlopCounterMode

from ..engine import convert_state_dict
from ..errors import InvalidInputError, MissingDependencyError
from ..export.formats import get_format
from ..export.formats.executorch import set_executorch_threads
from ..export.formats.torchscript import save_torchscript
from ..export.vilt import export_vilt_executorch, export_vilt_onnx
from ..factory import create_model
from ..fileio import write_text_atomic
from ..weights.vilt_layouts import vilt_options_from_hf_config
from .floor import measure_matmul_peak
from .profile import BackendProfile, profile_executorch, profile_onnxruntime, profile_torch

VQA_BACKENDS = ("eager", "scripted", "lite", "onnxruntime", "executorch")
VQA_INT8_BACKENDS = ("onnxruntime_int8", "executorch_int8")  # on request: --backends onnxruntime,onnxruntime_int8
RUNTIME_NAMES = {
    "eager": "mobilevt eager",
    "scripted": "mobilevt TorchScript",
    "lite": "lite interpreter (.ptl)",
    "onnxruntime": "ONNX Runtime (CPU EP)",
    "onnxruntime_int8": "ONNX Runtime, dynamic int8 linears",
    "executorch": "ExecuTorch (XNNPACK)",
    "executorch_int8": "ExecuTorch (XNNPACK), dynamic int8 linears",
    "transformers": "transformers eager",
}
_PROFILED = ("eager", "onnxruntime", "onnxruntime_int8", "executorch", "executorch_int8")
Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class MobiVqaSetting:
    """Token pruning after ``prune_layer`` (0: off) keeping ``keep_ratio`` of the image
    tokens, and a fixed exit after ``exit_layer`` (0: off)."""

    prune_layer: int = 0
    keep_ratio: float = 0.5
    exit_layer: int = 0

    @property
    def is_on(self) -> bool:
        return bool(self.prune_layer or self.exit_layer)

    def describe(self) -> str:
        parts = []
        if self.prune_layer:
            parts.append(f"keep {self.keep_ratio:g} of the image tokens after layer {self.prune_layer}")
        if self.exit_layer:
            parts.append(f"exit after layer {self.exit_layer}")
        return "MobiVQA: " + ", ".join(parts)

    def apply(self, model) -> None:
        model.set_token_pruning(self.prune_layer, self.keep_ratio)
        model.set_early_exit(layer=self.exit_layer)


def mobivqa_grid(
    prune_layers: Sequence[int] = (2, 4),
    keep_ratios: Sequence[float] = (0.75, 0.5, 0.25),
    exit_layers: Sequence[int] = (4, 6, 8, 12),
    depth: int = 12,
) -> list[MobiVqaSetting]:
    """Every (prune after k keeping r, exit after m) setting; an exit after the last layer
    is no exit, and the exits alone (no pruning) come too."""
    exits = list(dict.fromkeys(0 if m >= depth else m for m in exit_layers))
    prunes = [k for k in prune_layers if k < depth]
    grid = [MobiVqaSetting(k, r, m) for k in prunes for r in keep_ratios for m in exits if m == 0 or m > k]
    grid += [MobiVqaSetting(0, 0.5, m) for m in exits if m]
    return grid


@dataclass
class ViltRow:
    size: str
    text_tokens: int
    setting: str  # "full" or "mobivqa"
    setting_name: str
    runtime: str
    runtime_name: str
    median_ms: float | None
    ratio_to_transformers: float | None
    max_abs_diff_vs_eager: float | None
    gflops: float  # 2 x multiply-adds of the setting, counted on the eager model
    floor_share: float | None  # floor ms / median ms: 1.0 would run at the fastest GEMM's rate
    flop_share: float  # the setting's FLOPs / the full model's
    measured_share: float | None  # the setting's median / the full model's on the same runtime
    expected_ms: float | None = None  # the cost model: FLOP share x the full model's ms on the same runtime
    export_s: float | None = None
    status: str = "ok"  # ok / missing / failed
    note: str = ""


@dataclass
class ViltBenchReport:
    rows: list[ViltRow]
    threads: int
    runs: int
    warmup: int
    fp32_gemm_gflops: float
    fastest_gemm: str
    versions: dict[str, str] = field(default_factory=dict)
    hf_config: dict[str, Any] | None = None
    grid: list[ViltRow] = field(default_factory=list)  # --grid: each setting timed beside the full model
    profiles: list[BackendProfile] = field(default_factory=list)  # --profile: time by operator

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["profiles"] = [p.to_dict() for p in self.profiles]
        return payload

    def to_markdown(self) -> str:
        lines = [
            f"ViLT VQA, batch 1, {self.threads} threads, {self.runs} interleaved rounds (medians); fp32 floor: "
            f"2 x FLOPs / {self.fp32_gemm_gflops:.0f} GFLOP/s ({self.fastest_gemm}, measured in the run)",
            "",
            "| input | setting | runtime | median (ms) | / transformers eager | % of fp32 floor | FLOP share "
            "| measured share | max-abs diff vs eager |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in self.rows:
            if row.status != "ok":
                lines.append(
                    f"| {row.size} + {row.text_tokens} tokens | {row.setting_name} | {row.runtime_name} "
                    f"| {row.status} | | | | | {row.note} |"
                )
                continue
            lines.append(
                f"| {row.size} + {row.text_tokens} tokens | {row.setting_name} | {row.runtime_name} "
                f"| {row.median_ms:.1f} | {_num(row.ratio_to_transformers, 3)} | {_percent(row.floor_share)} "
                f"| {row.flop_share:.2f} | {_num(row.measured_share, 2)} | {_num(row.max_abs_diff_vs_eager, 2, 'e')} |"
            )
        profiles = [line for p in self.profiles for line in p.to_markdown()]
        return (
            "\n".join(lines + self._grid_markdown() + (["", "Where the time goes:", *profiles] if profiles else []))
            + "\n"
        )

    def _grid_markdown(self) -> list[str]:
        if not self.grid:
            return []
        lines = [
            "",
            f"MobiVQA grid on {self.grid[0].runtime_name}: each setting timed interleaved with the full model "
            "(measured share = its median / the full model's in that pairing); expected = FLOP share x the full "
            "model's time; within 15%: |measured share / FLOP share - 1| <= 0.15",
            "",
            "| setting | GFLOP | FLOP share | expected (ms) | measured (ms) | measured share | within 15% "
            "| max-abs diff vs eager |",
            "|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        for row in self.grid:
            if row.status != "ok":
                lines.append(f"| {row.setting_name} | {row.gflops:.1f} | {row.flop_share:.2f} | | {row.status} | | | |")
                continue
            within = abs(row.measured_share / row.flop_share - 1) <= 0.15
            lines.append(
                f"| {row.setting_name} | {row.gflops:.1f} | {row.flop_share:.2f} | {_num(row.expected_ms, 1)} "
                f"| {row.median_ms:.1f} | {row.measured_share:.2f} | {'yes' if within else 'no'} "
                f"| {_num(row.max_abs_diff_vs_eager, 2, 'e')} |"
            )
        return lines


def _num(value: float | None, digits: int, kind: str = "f") -> str:
    return "-" if value is None else f"{value:.{digits}{kind}}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


@dataclass
class _Candidate:
    setting: str
    runtime: str
    run: Callable[[], torch.Tensor] | None
    export_s: float | None = None
    status: str = "ok"
    note: str = ""
    artifact: Path | None = None  # the file a runtime runs (profiled with --profile)


def build_models(hf_overrides: dict[str, Any] | None = None, num_answers: int = 3129):
    """transformers' ViltForQuestionAnswering with its random initialisation (``hf_overrides``:
    ViltConfig fields, for a small model) and mobilevt's with the same weights."""
    try:
        from transformers import ViltConfig, ViltForQuestionAnswering
    except ImportError:
        raise MissingDependencyError(
            'the ViLT bench compares with transformers: pip install "mobilevt[reference]"'
        ) from None
    reference = ViltForQuestionAnswering(ViltConfig(num_labels=num_answers, **(hf_overrides or {}))).eval()
    arch, _ = vilt_options_from_hf_config(reference.config.to_dict())
    with torch.device("meta"):  # every tensor is assigned from the reference: skip the initialisation
        ours = create_model("vilt_b32_vqa", num_classes=num_answers, **arch).eval()
    ours.load_state_dict(convert_state_dict(reference.state_dict(), ours), assign=True)
    return reference, ours


def gflops(model, inputs: Inputs) -> float:
    """2 x multiply-adds of one forward pass (``torch.utils.flop_counter``), in GFLOP."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(*inputs)
    return counter.get_total_flops() / 1e9


def run_vilt_benchmark(
    image_size: tuple[int, int] = (384, 384),
    text_length: int = 40,
    backends: Sequence[str] = VQA_BACKENDS,
    mobivqa: MobiVqaSetting = MobiVqaSetting(),
    threads: int | None = None,
    runs: int = 15,
    warmup: int = 3,
    workdir: str | Path | None = None,
    hf_overrides: dict[str, Any] | None = None,
    progress: Callable[[str], None] = lambda stage: None,
    grid: Sequence[MobiVqaSetting] = (),
    profile: bool = False,
) -> ViltBenchReport:
    """Time transformers eager and each of ``backends`` at one input size, full and (when
    ``mobivqa`` is on) in the MobiVQA setting; one row per (setting, runtime). ``grid``: more
    settings, each timed on the first backend interleaved with that backend's full model
    (one pair at a time, so that a full-size model's files are not all in memory at once)."""
    unknown = [b for b in backends if b not in VQA_BACKENDS + VQA_INT8_BACKENDS]
    if unknown:
        known = ", ".join(VQA_BACKENDS + VQA_INT8_BACKENDS)
        raise InvalidInputError(f"ViLT benches {known}, not {', '.join(unknown)}")
    threads = threads or torch.get_num_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        progress("building transformers' ViLT and mobilevt's with the same weights")
        reference, ours = build_models(hf_overrides)
        exits = sorted({s.exit_layer for s in (mobivqa, *grid) if s.exit_layer})
        if exits:  # heads at the exit layers; off, they change nothing
            ours.add_early_exits(exits, predictor_layer=1)
        inputs = _inputs(reference.config.vocab_size, image_size, text_length)
        progress("measuring the fastest fp32 GEMM (the floor's divisor)")
        peak = measure_matmul_peak(
            threads, [r for r in ("onnxruntime", "executorch") if any(b.startswith(r) for b in backends)]
        )
        settings = {"full": MobiVqaSetting()} | ({"mobivqa": mobivqa} if mobivqa.is_on else {})
        costs = {name: _setting_gflops(ours, setting, inputs) for name, setting in settings.items()}
        candidates = [_Candidate("full", "transformers", lambda: _run_transformers(reference, inputs))]
        with tempfile.TemporaryDirectory(dir=workdir) as folder:
            scripted = torch.jit.script(ours) if "scripted" in backends else None
            for name, setting in settings.items():
                for backend in backends:
                    progress(f"{name}: building {backend}")
                    candidates.append(_candidate(ours, scripted, inputs, backend, name, setting, Path(folder), threads))
            progress(f"timing {len(candidates)} candidates, {runs} interleaved rounds")
            with torch.inference_mode():
                medians, diffs = _measure(ours, candidates, inputs, runs, warmup, settings)
            profiles = _profiles(ours, candidates, settings, inputs, runs, threads) if profile else []
            full = next((c for c in candidates if c.setting == "full" and c.runtime == backends[0]), None)
            if grid and (full is None or full.run is None):
                raise InvalidInputError(f"the grid runs on {backends[0]}, which could not be built: {full.note}")
            grid_rows = []
            for index, setting in enumerate(grid):
                progress(f"grid {index + 1}/{len(grid)}: {setting.describe()}")
                grid_rows.append(_grid_row(ours, scripted, full, setting, inputs, Path(folder), threads, runs, warmup))
    finally:
        torch.set_num_threads(previous_threads)
    rows = _rows(candidates, medians, diffs, costs, peak.gflops, settings, image_size, text_length)
    for row in grid_rows:
        row.size, row.text_tokens = rows[0].size, text_length
        row.floor_share = None if row.median_ms is None else round(row.gflops / peak.gflops * 1e3 / row.median_ms, 3)
    fastest = max((k for k in peak.kernels if k.dtype == "fp32"), key=lambda k: k.gops).name
    return ViltBenchReport(
        rows, threads, runs, warmup, peak.gflops, fastest, _versions(), hf_overrides, grid_rows, profiles
    )


def _grid_row(ours, scripted, full: _Candidate, setting: MobiVqaSetting, inputs: Inputs, folder, threads, runs, warmup):
    """One grid setting on ``full``'s runtime, timed interleaved with ``full``."""
    settings = {"full": MobiVqaSetting(), "grid": setting}
    costs = {name: _setting_gflops(ours, s, inputs) for name, s in settings.items()}
    candidate = _candidate(ours, scripted, inputs, full.runtime, "grid", setting, folder, threads)
    with torch.inference_mode():
        medians, diffs = _measure(ours, [full, candidate], inputs, runs, warmup, settings)
    (row,) = _rows([full, candidate], medians, diffs, costs, 1.0, settings, (0, 0), 0)[1:]
    row.ratio_to_transformers = None  # not timed beside transformers
    for leftover in folder.glob("vilt_grid.*"):
        leftover.unlink()
    return row


def _inputs(vocab_size: int, image_size: tuple[int, int], text_length: int) -> Inputs:
    height, width = image_size
    generator = torch.Generator().manual_seed(0)
    return (
        torch.randint(min(1000, vocab_size - 1), vocab_size, (1, text_length), generator=generator),
        torch.ones(1, text_length, dtype=torch.long),
        torch.randn(1, 3, height, width, generator=generator),
        torch.ones(1, height, width, dtype=torch.long),
    )


def _run_transformers(reference, inputs: Inputs) -> torch.Tensor:
    return reference(input_ids=inputs[0], attention_mask=inputs[1], pixel_values=inputs[2], pixel_mask=inputs[3]).logits


def _setting_gflops(model, setting: MobiVqaSetting, inputs: Inputs) -> float:
    setting.apply(model)
    try:
        return gflops(model, inputs)
    finally:
        MobiVqaSetting().apply(model)


def _candidate(
    ours, scripted, inputs: Inputs, backend: str, name: str, setting: MobiVqaSetting, folder: Path, threads: int
) -> _Candidate:
    """One runtime in one setting: the eager and scripted models switch the setting on
    around each call (microseconds); the exported files capture it."""
    if backend in ("eager", "scripted"):
        model = ours if backend == "eager" else scripted
        return _Candidate(name, backend, lambda: _switched(model, setting, inputs))
    if backend == "lite":  # what an Android app loads: the setting saved into the file
        start = time.perf_counter()
        setting.apply(ours)
        try:
            path = folder / f"vilt_{name}.ptl"
            save_torchscript(ours, path, lite=True)
        finally:
            MobiVqaSetting().apply(ours)
        lite = _load_for_lite_interpreter(str(path))
        return _Candidate(name, backend, lambda: lite(*inputs), round(time.perf_counter() - start, 1))
    missing = get_format("onnx" if backend.startswith("onnxruntime") else "executorch").missing()
    if missing is not None:
        return _Candidate(name, backend, None, status="missing", note=f"missing: {missing}")
    start = time.perf_counter()
    setting.apply(ours)
    try:
        if backend.startswith("onnxruntime"):
            int8 = backend == "onnxruntime_int8"
            path = folder / f"vilt_{name}{'.int8' if int8 else ''}.onnx"
            run_file, _ = export_vilt_onnx(ours, path, inputs, threads=threads, int8=int8)
        else:
            set_executorch_threads(threads)
            int8 = backend == "executorch_int8"
            path = folder / f"vilt_{name}{'.int8' if int8 else ''}.pte"
            run_file, _, _ = export_vilt_executorch(ours, path, [inputs], int8=int8)
    except Exception as exc:  # noqa: BLE001 - a runtime that cannot take the model is a row, not a crash
        return _Candidate(name, backend, None, status="failed", note=f"{type(exc).__name__}: {str(exc)[:200]}")
    finally:
        MobiVqaSetting().apply(ours)
    seconds = round(time.perf_counter() - start, 1)
    return _Candidate(name, backend, lambda: run_file(inputs), seconds, artifact=path)


def _profiles(ours, candidates: Sequence[_Candidate], settings, inputs: Inputs, runs: int, threads: int) -> list:
    """Each candidate's time by operator (``benchmark.profile``): eager through torch.profiler,
    the ONNX and ExecuTorch files through their runtimes' profilers."""
    profiles = []
    for candidate in candidates:
        if candidate.run is None or candidate.runtime not in _PROFILED:
            continue
        label = f"{candidate.runtime} ({candidate.setting})"
        if candidate.runtime == "eager":
            setting = settings[candidate.setting]
            found = profile_torch(label, lambda *args, s=setting: _switched(ours, s, args), inputs, runs)
        elif candidate.runtime.startswith("executorch"):
            found = profile_executorch(label, candidate.artifact, inputs, runs)
        else:
            found = profile_onnxruntime(label, candidate.artifact, inputs, runs, threads)
        found.model = "vilt_b32_vqa"
        profiles.append(found)
    return profiles


def _switched(model, setting: MobiVqaSetting, inputs: Inputs) -> torch.Tensor:
    if not setting.is_on:
        return model(*inputs)
    setting.apply(model)
    try:
        return model(*inputs)
    finally:
        MobiVqaSetting().apply(model)


def _measure(
    ours, candidates: Sequence[_Candidate], inputs: Inputs, runs: int, warmup: int, settings: dict[str, MobiVqaSetting]
) -> tuple[list[float | None], list[float | None]]:
    """Median milliseconds of each candidate (interleaved) and its max-abs logit difference
    from mobilevt eager in the same setting."""
    eager_logits = {name: _switched(ours, setting, inputs) for name, setting in settings.items()}
    ready = [i for i, c in enumerate(candidates) if c.run is not None]
    diffs: list[float | None] = [None] * len(candidates)
    for i in ready:
        diffs[i] = float((candidates[i].run() - eager_logits[candidates[i].setting]).abs().max())
    for _ in range(warmup):
        for i in ready:
            candidates[i].run()
    times: dict[int, list[float]] = {i: [] for i in ready}
    for round_index in range(runs):
        shift = round_index % len(ready)  # rotate which goes first so none always runs on a warmer cache
        for i in ready[shift:] + ready[:shift]:
            start = time.perf_counter()
            candidates[i].run()
            times[i].append(time.perf_counter() - start)
    medians: list[float | None] = [None] * len(candidates)
    for i in ready:
        medians[i] = statistics.median(times[i]) * 1e3
    return medians, diffs


def _rows(candidates, medians, diffs, costs, gemm_gflops: float, settings, image_size, text_length) -> list[ViltRow]:
    full_ms = {c.runtime: m for c, m in zip(candidates, medians) if c.setting == "full"}
    reference_ms = medians[0]
    rows = []
    for candidate, median, diff in zip(candidates, medians, diffs):
        cost = costs[candidate.setting]
        floor_ms = cost / gemm_gflops * 1e3
        own_full = full_ms.get(candidate.runtime)
        rows.append(
            ViltRow(
                size=f"{image_size[0]}x{image_size[1]}",
                text_tokens=text_length,
                setting=candidate.setting,
                setting_name="full model" if candidate.setting == "full" else settings[candidate.setting].describe(),
                runtime=candidate.runtime,
                runtime_name=RUNTIME_NAMES[candidate.runtime],
                median_ms=None if median is None else round(median, 2),
                ratio_to_transformers=None if median is None or not reference_ms else round(median / reference_ms, 3),
                max_abs_diff_vs_eager=diff,
                gflops=round(cost, 6),
                floor_share=None if median is None else round(floor_ms / median, 3),
                flop_share=round(cost / costs["full"], 3),
                measured_share=None if median is None or not own_full else round(median / own_full, 3),
                expected_ms=None if not own_full else round(own_full * cost / costs["full"], 2),
                export_s=candidate.export_s,
                status=candidate.status,
                note=candidate.note,
            )
        )
    return rows


def _versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "transformers", "onnxruntime", "executorch"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def write_vilt_report(report: ViltBenchReport, output_dir: str | Path) -> dict[str, Path]:
    """``vilt-bench.md`` and ``vilt-bench.json`` in ``output_dir``, atomically."""
    out = Path(output_dir)
    return {
        "markdown": write_text_atomic(out / "vilt-bench.md", report.to_markdown()),
        "json": write_text_atomic(out / "vilt-bench.json", json.dumps(report.to_json(), indent=2) + "\n"),
    }

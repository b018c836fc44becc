"""``mobilevt bench --profile``: where each backend's time goes, operator by operator.

Each runtime's own profiler: ``torch.profiler`` for eager and TorchScript (self CPU time of
each ``aten::`` operator), onnxruntime's ``enable_profiling`` (each node's kernel time, by
operator type) and ExecuTorch's ETDump (each XNNPACK operator inside the delegate, and each
operator left outside it). The operators are split into kernels (convolutions, matrix
products, attention, norms, activations ...) and glue (transposes, copies, reshapes,
quantize / dequantize, and in ExecuTorch every operator outside the delegate); ``named`` is
the share of the wall time that the operators account for.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

TOP_OPERATORS = 8
Inputs = tuple[torch.Tensor, ...]  # a model of several inputs (ViLT: ids, mask, pixels, pixel mask)


def _as_tuple(x: torch.Tensor | Inputs) -> Inputs:
    return (x,) if isinstance(x, torch.Tensor) else tuple(x)


_TORCH_GLUE = re.compile(
    r"copy|clone|contiguous|permute|transpose|reshape|view|_to_copy|aten::to$|cat$|stack|expand|slice|select|"
    r"unfold|col2im|im2col|pad|empty|as_strided|squeeze|flatten|split|chunk|index|gather|quantize|dequantize|"
    r"fill_|zero_|detach|alias|resize_|_unsafe_view|aten::t$|numpy_T",
    re.IGNORECASE,
)
_ONNX_GLUE = re.compile(
    r"^(Transpose|Reshape|Cast|Concat|Slice|Gather|GatherElements|Expand|Unsqueeze|Squeeze|Shape|Identity|"
    r"Flatten|Split|Pad|Tile|QuantizeLinear|DequantizeLinear|DynamicQuantizeLinear|MemcpyFromHost|MemcpyToHost|"
    r"Constant|ConstantOfShape|Range|Where|Equal|ScatterND)$"
)
_XNNPACK_GLUE = re.compile(
    r"^(Transpose|Copy|Convert|Static Reshape|Reshape|Concatenate|Slice|Even Split|Constant Pad)"
)


@dataclass
class OperatorTime:
    name: str
    calls: float  # per run
    ms: float  # per run
    share: float  # of the wall time
    glue: bool


@dataclass
class BackendProfile:
    backend: str
    source: str  # the profiler
    runs: int
    wall_ms: float  # per run, with the profiler on
    operators: list[OperatorTime] = field(default_factory=list)  # every operator, slowest first
    note: str = ""
    model: str = ""
    batch: int = 1

    @property
    def named_ms(self) -> float:
        return sum(op.ms for op in self.operators)

    @property
    def glue_ms(self) -> float:
        return sum(op.ms for op in self.operators if op.glue)

    @property
    def named_share(self) -> float:
        return self.named_ms / self.wall_ms if self.wall_ms else 0.0

    def summary_line(self) -> str:
        if not self.wall_ms:
            return f"{self.backend}: {self.note}"
        kernels = self.named_ms - self.glue_ms
        top = ", ".join(f"{op.name} {100 * op.share:.0f}%" for op in self.operators[:3])
        return (
            f"{self.backend} ({self.source}): kernels {kernels:.2f} ms ({100 * kernels / self.wall_ms:.0f}%), glue "
            f"{self.glue_ms:.2f} ms ({100 * self.glue_ms / self.wall_ms:.0f}%), named {100 * self.named_share:.0f}% "
            f"of {self.wall_ms:.2f} ms; top: {top}"
        )

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "batch": self.batch,
            "backend": self.backend,
            "source": self.source,
            "runs": self.runs,
            "wall_ms": self.wall_ms,
            "named_ms": self.named_ms,
            "glue_ms": self.glue_ms,
            "named_share": self.named_share,
            "operators": [vars(op) for op in self.operators],
            "note": self.note,
        }

    def to_markdown(self) -> list[str]:
        if not self.wall_ms:
            return ["", f"**{self.backend}**: {self.note}"]
        lines = [
            "",
            f"**{self.backend}** ({self.source}, {self.runs} runs): {self.summary_line().split(': ', 1)[1]}",
            "",
            *([self.note, ""] if self.note else []),
            "| operator | calls per run | ms per run | share | glue |",
            "|---|---:|---:|---:|---|",
        ]
        for op in self.operators[:TOP_OPERATORS]:
            lines.append(
                f"| {op.name} | {op.calls:g} | {op.ms:.3f} | {100 * op.share:.1f}% | {'glue' if op.glue else ''} |"
            )
        return lines


def _ranked(totals: dict[str, list[float]], runs: int, wall_ms: float, is_glue: Callable[[str], bool]):
    """``{name: [calls, ms]}`` summed over ``runs`` as per-run operators, slowest first."""
    operators = [
        OperatorTime(name, calls / runs, ms / runs, ms / runs / wall_ms if wall_ms else 0.0, is_glue(name))
        for name, (calls, ms) in totals.items()
    ]
    return sorted(operators, key=lambda op: op.ms, reverse=True)


def profile_torch(backend: str, module: Callable[..., object], x: torch.Tensor | Inputs, runs: int):
    """Self CPU time of each operator (``torch.profiler``) of an eager or TorchScript module."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        inputs = _as_tuple(x)
        module(*inputs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(runs):
                module(*inputs)
            wall_ms = 1e3 * (time.perf_counter() - start) / runs
    totals: dict[str, list[float]] = {}
    for event in prof.key_averages():
        if event.self_cpu_time_total > 0:
            totals[event.key] = [event.count, event.self_cpu_time_total / 1e3]
    operators = _ranked(totals, runs, wall_ms, lambda name: bool(_TORCH_GLUE.search(name)))
    return BackendProfile(backend, "torch.profiler", runs, wall_ms, operators)


def profile_onnxruntime(backend: str, path: Path, x: torch.Tensor | Inputs, runs: int, threads: int):
    """Each node's kernel time by operator type (onnxruntime's ``enable_profiling``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {arg.name: value.numpy() for arg, value in zip(session.get_inputs(), _as_tuple(x))}
        session.run(None, feed)  # the first run (allocations) is profiled too: left out below
        start = time.perf_counter()
        for _ in range(runs):
            session.run(None, feed)
        wall_ms = 1e3 * (time.perf_counter() - start) / runs
        events = json.loads(Path(session.end_profiling()).read_text())
    node_events = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    per_run = len(node_events) // (runs + 1)
    model_runs = [e["dur"] / 1e3 for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if len(model_runs) > runs:  # the session's own time per run, without Python's feed and fetch
        wall_ms = sum(model_runs[-runs:]) / runs
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for event in node_events[per_run:]:  # the timed runs only
        total = totals[event["args"]["op_name"]]
        total[0] += 1
        total[1] += event["dur"] / 1e3
    operators = _ranked(totals, runs, wall_ms, lambda name: bool(_ONNX_GLUE.match(name)))
    return BackendProfile(backend, "onnxruntime profiler", runs, wall_ms, operators)


def profile_executorch(backend: str, path: Path, x: torch.Tensor | Inputs, runs: int):
    """Each operator's time from ExecuTorch's ETDump: XNNPACK's operators inside the delegate
    and the operators left outside it (glue, whatever they compute)."""
    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    # debug_buffer_size 0: times only (intermediate outputs would not fit on a full-size model)
    program = _load_for_executorch(str(path), enable_etdump=True, debug_buffer_size=0)
    with tempfile.TemporaryDirectory() as folder:
        etdump = Path(folder) / "run.etdp"
        inputs = list(_as_tuple(x))
        program.forward(inputs)  # the first call (allocations, caches): left out below
        for _ in range(runs):
            program.forward(inputs)
        program.write_etdump_result_to_file(str(etdump), str(Path(folder) / "debug.bin"))
        with warnings.catch_warnings():  # "Output Buffer not found": no tensors were asked for
            warnings.simplefilter("ignore", UserWarning)
            inspector = Inspector(etdump_path=str(etdump))
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    outside: set[str] = set()
    wall_ms = 0.0
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for event in block.events:
            if event.perf_data is None:
                continue
            timed = event.perf_data.raw[-runs:]  # one entry per call of the method
            if event.name == "Method::execute":  # the runtime's own time for the whole call
                wall_ms = sum(timed) / len(timed)
            if event.name in ("Method::execute", "DELEGATE_CALL", "OPERATOR_CALL"):
                continue
            name = re.sub(r" #\d+$", "", event.name)
            if not event.is_delegated_op:
                outside.add(name)
            totals[name][0] += len(timed)
            totals[name][1] += sum(timed)
    executed_runs = runs
    operators = _ranked(totals, executed_runs, wall_ms, lambda n: n in outside or bool(_XNNPACK_GLUE.match(n)))
    note = f"outside the delegate: {', '.join(sorted(outside))}" if outside else "every operator in the delegate"
    return BackendProfile(backend, "ExecuTorch ETDump", executed_runs, wall_ms, operators, note)

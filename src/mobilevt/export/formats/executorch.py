"""ExecuTorch ``.pte`` programs lowered to the XNNPACK delegate, run in the ExecuTorch runtime.

``torch.export`` captures the graph (dynamic dims as the graph says), the XNNPACK
partitioner lowers it and the program is written atomically. Before capture, attention and
norm layers are rewritten into ops XNNPACK delegates (``export/rewrite.py``) unless the
family asks not to. ``quantize="int8"`` quantizes with PT2E and the XNNPACK quantizer,
calibrated on the given inputs (PT2E calibrates one static shape, so these programs are
static); ``"int8-dynamic"`` quantizes the linears with activations quantized per call and
keeps the dynamic dims.

A program with dynamic dims is run on the family's probe inputs after writing (the XNNPACK
delegate can keep a tensor at the example's size: ExecuTorch 1.5, mobilevitv2_050 at
224x320); where one fails, the static program is written instead, with a note.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.fx.traceback import NodeSource

from ...fileio import atomic_path
from ..native_logs import CPU_PROBE, RESIZE_ERRORS, THREADPOOL_RESET, load_executorch_method, native_stderr_without
from ..quantize import DYNAMIC_INT8, STATIC_INT8, quantize_pt2e_xnnpack
from ..report import file_size
from ..rewrite import delegate_friendly
from .base import ExportFormat, Graph, Runner, WriteOptions, Written, get_format

RUNTIME = "ExecuTorch runtime (XNNPACK delegate)"


class ExecutorchFormat(ExportFormat):
    name = "executorch"
    plans_fixed_shapes = True
    order = 2
    suffixes = (".pte",)
    extra = "executorch"
    packages = ("executorch.exir", "executorch.runtime")
    runtime_packages = ("executorch.runtime",)
    options = frozenset({"dynamic_batch", "max_batch", "quantize"})
    bench_backend = "executorch"
    bench_label = "ExecuTorch (XNNPACK)"
    check_stage = "running the file in the ExecuTorch runtime"

    def write(self, graph: Graph, path: Path, options: WriteOptions) -> Written:
        options.stage(
            "loading ExecuTorch"
            + (" and rewriting attention and norms for XNNPACK" if options.delegate_rewrite else "")
        )
        self.require()
        if options.quantize == STATIC_INT8:
            graph = graph.static()  # PT2E calibrates one static shape
        written = self._write(graph, path, options)
        if options.quantize is not None:
            self._add_fp32(written, graph, options)
        return written

    def _write(self, graph: Graph, path: Path, options: WriteOptions) -> Written:
        """The program with the graph's dynamic dims, or with the example's shapes where
        the dynamic one fails in the runtime."""
        if not graph.is_dynamic:
            return self._lower(graph, path, options)
        try:
            written = self._lower(graph, path, options)
            failure = self._probe(graph, written, options)
        except Exception as exc:  # noqa: BLE001 - the lowering refused the dynamic shapes
            failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if failure is None:
            return written
        options.stage("the dynamic program failed in the runtime: exporting again with the example's shapes")
        written = self._lower(graph.static(), path, options)
        written.notes.insert(
            0,
            "dynamic shapes failed in the ExecuTorch runtime for this model: exported with the "
            "example's shapes (" + ", ".join(_shape_text(t) for t in graph.example) + ")",
        )
        written.details["dynamic_failure"] = failure
        return written

    def _probe(self, graph: Graph, written: Written, options: WriteOptions) -> str | None:
        """Why the dynamic program cannot be kept (None: it runs every probe)."""
        probes = list(options.probes)
        batch = graph.dynamic[0].get(0)
        if batch is not None and written.max_batch is not None:
            if batch.max is not None and written.max_batch < batch.max:
                written.notes.append(
                    f"the ExecuTorch memory planner bounded the batch at {written.max_batch} "
                    f"(asked for up to {batch.max})"
                )
            probes = [_zeros_at_batch(graph.example, size) for size in (1, written.max_batch)] + probes
        batches = f"batch 1 and {written.max_batch}" if batch is not None else ""
        others = f"the {len(options.probes)} check inputs" if options.probes else ""
        options.stage(
            f"checking that the program runs at {batches}"
            if not others
            else f"checking that the program runs on {' and '.join(filter(None, [batches, others]))}"
        )
        return None if _runs_on(written.run, probes) else "a probe input failed in the runtime"

    def runner(self, path: Path, threads: int = 0) -> Runner:
        if threads > 0:
            set_executorch_threads(threads)
        run, _ = executorch_runner(path)
        return run

    def _lower(self, graph: Graph, path: Path, options: WriteOptions) -> Written:

        module = delegate_friendly(graph.module) if options.delegate_rewrite else graph.module
        if options.quantize is not None:
            module = self._quantize(module, graph, options)
        batch = graph.dynamic[0].get(0)
        options.stage(
            "capturing the graph with torch.export"
            + (f" (batch 1 to {batch.max})" if batch is not None else " (batch 1)" if not graph.is_dynamic else "")
        )
        program = torch.export.export(module, graph.example, dynamic_shapes=graph.torch_export_shapes())
        options.stage("lowering to ExecuTorch's XNNPACK delegate and writing the .pte (the longest stage)")
        outside = outside_delegate(write_xnnpack_program(program, path))
        run, loaded = executorch_runner(path)
        written = Written(path, run, RUNTIME, graph.is_dynamic, details={"outside_delegate": outside})
        if batch is not None:
            # memory planning may bound the batch below the exported range (ExecuTorch 1.5
            # planned mobilevit_xxs at 256x256 for 15 when asked for 32)
            written.max_batch = loaded.metadata("forward").input_tensor_meta(0).sizes()[0]
        elif graph.example[0].shape[0] == 1:
            written.max_batch = 1
        note = _outside_delegate_note(outside)
        written.notes += [note] if note else []
        return written

    def _quantize(self, module: torch.nn.Module, graph: Graph, options: WriteOptions) -> torch.nn.Module:
        if options.quantize == DYNAMIC_INT8:
            options.stage("quantizing the linears to int8 (PT2E, XNNPACK quantizer, dynamic activations)")
            return quantize_pt2e_xnnpack(module, graph.example, None, graph.torch_export_shapes())
        if options.quantize != STATIC_INT8 or not options.calibration:
            raise ValueError(f"quantize={options.quantize!r} needs calibration inputs or {DYNAMIC_INT8!r}")
        options.stage(f"quantizing to int8 (PT2E, XNNPACK quantizer), calibrating on {len(options.calibration)} photos")
        return quantize_pt2e_xnnpack(module, graph.example, options.calibration, only=options.quantize_only)

    def _add_fp32(self, written: Written, graph: Graph, options: WriteOptions) -> None:
        """The int8 program's note, and (``options.int8_baseline``) the fp32 program of the
        same graph to compare its size and speed with."""
        written.notes.insert(
            0,
            "int8: PT2E static quantization with the XNNPACK quantizer (per-channel int8 weights, "
            "int8 activations), batch 1"
            if options.quantize == STATIC_INT8
            else "int8: PT2E dynamic quantization with the XNNPACK quantizer (per-channel int8 weights of the "
            "linears, each activation quantized per call from its own range)",
        )
        if not options.int8_baseline:
            return
        with tempfile.TemporaryDirectory() as folder:
            fp32_path = Path(folder) / "fp32.pte"
            options.stage("exporting the fp32 program to compare size and speed with")
            fp32_options = WriteOptions(delegate_rewrite=options.delegate_rewrite, probes=options.probes)
            fp32 = self._write(graph if written.dynamic else graph.static(), fp32_path, fp32_options)
            written.fp32 = (fp32.run, file_size(fp32_path))


def write_xnnpack_program(program: torch.export.ExportedProgram, output: str | os.PathLike) -> torch.fx.Graph:
    """Lower ``program`` to ExecuTorch with the XNNPACK delegate and write it to ``output``
    atomically; returns the lowered graph (to count what stayed outside the delegate)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with _provenance_shared_not_copied():
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        graph = edge.exported_program().graph
        lowered = edge.to_executorch()
    buffer = lowered.buffer
    with atomic_path(output, needed=len(buffer)) as tmp:
        tmp.write_bytes(buffer)
    return graph


@contextlib.contextmanager
def _provenance_shared_not_copied() -> Iterator[None]:
    """Each FX pass records where a node came from (``node.meta["from_node"]``) by deep-
    copying the node's whole provenance chain, which grows by one level per pass: over the
    hundreds of passes of an XNNPACK lowering that is a fifth of its time. The records are
    never changed once made, so the chains can share them; the lowered program is the same."""

    saved = NodeSource.__dict__.get("__deepcopy__")
    NodeSource.__deepcopy__ = lambda self, memo: self  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if saved is None:
            del NodeSource.__deepcopy__
        else:
            NodeSource.__deepcopy__ = saved  # type: ignore[attr-defined]


def executorch_runner(path: str | os.PathLike) -> tuple[Runner, object]:
    """Run ``path`` in the ExecuTorch runtime; also returns the loaded program (its
    ``metadata("forward")`` tells the planned input sizes)."""
    program, method = load_executorch_method(path)

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(method.execute([t.contiguous() for t in inputs]))

    return run, program


def set_executorch_threads(threads: int) -> bool:
    """Size ExecuTorch's thread pool; False where this ExecuTorch cannot."""
    try:
        from executorch.extension.pybindings import portable_lib

        with native_stderr_without(THREADPOOL_RESET, CPU_PROBE):  # the pool probes the CPU as it starts
            portable_lib._unsafe_reset_threadpool(threads)  # experimental API of ExecuTorch 1.x
        return portable_lib._threadpool_get_thread_count() == threads
    except (ImportError, AttributeError, RuntimeError):
        return False


def outside_delegate(graph: torch.fx.Graph) -> dict[str, int]:
    """Tensor operators of a lowered ExecuTorch graph left to the portable CPU kernels (not
    delegated to XNNPACK), by name (``aten.view_copy.default``) with their counts. Shape
    arithmetic (``sym_size``, SymInt products) is not counted."""
    counts: dict[str, int] = {}
    for node in graph.nodes:
        target = str(getattr(node.target, "_op", node.target))  # an edge op wraps its ATen op
        value = node.meta.get("val")
        is_tensor_op = isinstance(value, torch.Tensor) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, torch.Tensor) for v in value)
        )
        if node.op == "call_function" and is_tensor_op and "getitem" not in target and "call_delegate" not in target:
            counts[target] = counts.get(target, 0) + 1
    return counts


def _outside_delegate_note(counts: dict[str, int]) -> str | None:
    if not counts:
        return None
    listed = ", ".join(f"{name} x{count}" for name, count in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{sum(counts.values())} operators run on ExecuTorch's portable kernels, outside XNNPACK: {listed}"


def _runs_on(run: Runner, probes) -> bool:
    # a failure is expected here and reported as a note: not the runtime's C++ error lines
    with native_stderr_without(RESIZE_ERRORS):
        for inputs in probes:
            try:
                if run(*inputs)[0].shape[0] != inputs[0].shape[0]:
                    return False
            except RuntimeError:
                return False
    return True


def _zeros_at_batch(example, size: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros((size, *t.shape[1:]), dtype=t.dtype) for t in example)


def _shape_text(tensor: torch.Tensor) -> str:
    return "x".join(str(s) for s in tensor.shape)


EXECUTORCH = get_format("executorch")

"""The ONNX and ExecuTorch backends every family's export uses: checking that the
tools are installed, lowering a program to XNNPACK, and the one way mobilevt runs a
written file (for the export checks and for ``mobilevt bench``).

A runner takes the model's input tensors positionally and returns its outputs as a tuple
of tensors, whatever the model (classifier logits, detector boxes and scores, ViLT
answers).
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Tuple

import torch

from ..fileio import atomic_path
from .errors import ExportError
from .native_logs import load_executorch_method
from .report import EXTRAS

Runner = Callable[..., Tuple[torch.Tensor, ...]]


def require_onnx():
    """The ``onnx`` module, after checking that onnx and onnxruntime are installed."""
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the check runs the file in it)
    except ImportError as exc:
        raise ExportError(f"the onnx export needs {exc.name}: {EXTRAS['onnx']}") from None
    return onnx


def require_executorch() -> None:
    """Check, before any lowering, that the ExecuTorch exporter and runtime are installed."""
    try:
        import executorch.exir  # noqa: F401
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
        from executorch.runtime import Runtime  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"the executorch export needs {exc.name}: {EXTRAS['executorch']}") from None


def write_xnnpack_program(program: torch.export.ExportedProgram, output: str | os.PathLike) -> torch.fx.Graph:
    """Lower ``program`` to ExecuTorch with the XNNPACK delegate and write it to ``output``
    atomically; returns the lowered graph (to count what stayed outside the delegate)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with _provenance_shared_not_copied():
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        graph = edge.exported_program().graph
        lowered = edge.to_executorch()
    with atomic_path(output) as tmp:
        tmp.write_bytes(lowered.buffer)
    return graph


@contextlib.contextmanager
def _provenance_shared_not_copied() -> Iterator[None]:
    """Each FX pass records where a node came from (``node.meta["from_node"]``) by deep-
    copying the node's whole provenance chain, which grows by one level per pass: over the
    hundreds of passes of an XNNPACK lowering that is a fifth of its time. The records are
    never changed once made, so the chains can share them; the lowered program is the same."""
    from torch.fx.traceback import NodeSource

    saved = NodeSource.__dict__.get("__deepcopy__")
    NodeSource.__deepcopy__ = lambda self, memo: self  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if saved is None:
            del NodeSource.__deepcopy__
        else:
            NodeSource.__deepcopy__ = saved  # type: ignore[attr-defined]


def onnx_session(path: str | os.PathLike, threads: int = 0):
    """An onnxruntime CPU session of ``path`` with ``threads`` intra-op threads (0: as
    many as torch uses, so that a comparison with eager runs on equal terms)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads > 0 else torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle onnxruntime threads spin for a while after each run and would slow the torch
    # code timed right after them; without spinning both latencies are fair.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_runtime_name() -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__} (CPUExecutionProvider)"


def onnx_runner(path: str | os.PathLike, threads: int = 0) -> Runner:
    """Run ``path`` in onnxruntime: tensors in (in the file's input order), tensors out."""
    session = onnx_session(path, threads)
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feeds = {name: tensor.detach().contiguous().numpy() for name, tensor in zip(names, inputs)}
        return tuple(torch.from_numpy(out) for out in session.run(None, feeds))

    return run


def executorch_runner(path: str | os.PathLike) -> Tuple[Runner, object]:
    """Run ``path`` in the ExecuTorch runtime; also returns the loaded program (its
    ``metadata("forward")`` tells the planned input sizes)."""
    program, method = load_executorch_method(path)

    def run(*inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(method.execute([t.contiguous() for t in inputs]))

    return run, program


def set_executorch_threads(threads: int) -> bool:
    """Size ExecuTorch's thread pool; False where this ExecuTorch cannot."""
    try:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)  # experimental API of ExecuTorch 1.x
        return portable_lib._threadpool_get_thread_count() == threads
    except (ImportError, AttributeError, RuntimeError):
        return False

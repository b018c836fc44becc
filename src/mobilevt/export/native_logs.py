"""Log lines and warnings of the libraries an export drives, filtered to what a user can act on.

ExecuTorch's runtime prints what it probes about the CPU each time it loads an XNNPACK
program, and a C++ error for each input it cannot resize: neither is anything a user can
act on, and the export reports the outcome in its own words."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from re import Pattern

import torch

CPU_PROBE = re.compile(r"^\[cpuinfo_utils\.cpp:\d+\] ")
# the runtime's note each time its thread pool is resized (mobilevt says how many threads it uses)
THREADPOOL_RESET = re.compile(r"^\[threadpool\.cpp:\d+\] Resetting threadpool")
# the runtime's complaints about an input batch beyond the planned one
RESIZE_ERRORS = re.compile(r"^\[(tensor_impl|method|XNNExecutor)\.cpp:\d+\] .*(resize|set_inputs|CALL_DELEGATE)")
# LiteRT's converter and interpreter: absl's start-up notice, TensorFlow's note that oneDNN is
# on, the converter's op count and the interpreter's note that it created the XNNPACK delegate
# (the report says so)
LITERT_LOGS = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on"
    r"|I\d{4} [\d:. ]+\d+ flatbuffer_export\.cc:\d+\] Estimated count of arithmetic ops"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)"
)


@contextlib.contextmanager
def native_stderr_without(*patterns: Pattern[str]) -> Iterator[None]:
    """Capture file descriptor 2 for the block; afterwards write back every line that no
    pattern matches (Python's own warnings included)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [
                line
                for line in sink.read().decode(errors="replace").splitlines()
                if not any(p.search(line) for p in patterns)
            ]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


def load_executorch_method(path: str | os.PathLike, method: str = "forward"):
    """``(program, method)`` of a ``.pte`` file in the ExecuTorch runtime, without the
    runtime's CPU-probe log lines."""
    from executorch.runtime import Runtime

    with native_stderr_without(CPU_PROBE):
        program = Runtime.get().load_program(str(Path(path)))
        return program, program.load_method(method)


class _DropEnumRegistration(logging.Filter):
    """torch logs a deprecation each time a library (torchao, under ExecuTorch's quantizer)
    registers an Enum as a pytree constant: nothing a mobilevt user can change."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is an Enum subclass and is now natively supported" not in record.getMessage()


_PYTREE_FILTER = _DropEnumRegistration()


@contextlib.contextmanager
def expected_warnings_silenced() -> Iterator[None]:
    """Exports trigger warnings that are expected and explained, none a user can act on
    (this is the one place that says why each path stays). Other warnings still show.

    - ``TracerWarning``: tracing treats the MobileViT blocks' shape checks as constants; the
      export fixes the shapes it checks, and every file is compared with eager on them.
    - TorchScript's ``torch.jit.*`` deprecation: TorchScript is the format asked for, and what
      a libtorch C++ app and the VQA pipeline (tokenizer inside) load.
    - the lite interpreter's deprecation: ``.ptl`` is what PyTorch Android and iOS apps load.
    - the TorchScript-based ONNX exporter's deprecation: at opset 17 it writes the files with
      a dynamic batch that onnxruntime and ONNX Runtime Web run, the same bytes release after
      release; the dynamo exporter writes opset 18 and up (``--opset 18``), and runtimes that
      predate opset 18 cannot load its files.
    - ExecuTorch's ``ExperimentalWarning`` (a ``DeprecationWarning``) for the pybindings runtime
      that checks and times each ``.pte``."""
    pytree_log = logging.getLogger("torch.utils._pytree")
    pytree_log.addFilter(_PYTREE_FILTER)
    try:
        # ExecuTorch probes the CPU when its thread pool first starts, which can be anywhere
        # in an export that runs a program (lowering, checking, timing)
        with warnings.catch_warnings(), native_stderr_without(CPU_PROBE):
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"Lite Interpreter is deprecated")
            warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", message=r"This API is experimental", category=DeprecationWarning)
            yield
    finally:
        pytree_log.removeFilter(_PYTREE_FILTER)

"""Each backend built (exported where it is a file) and wrapped as a runner of one input."""

from __future__ import annotations

import copy
import importlib
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..engine import convert_state_dict
from ..errors import InvalidInputError
from ..export.core import export_model
from ..export.errors import ExportError
from ..export.formats.executorch import set_executorch_threads
from ..factory import create_model
from ..fileio import atomic_path
from .models import fast_path, mobilevt_model, timm_model, transformers_model
from .peers import PEER_RUNTIMES, PEER_SUFFIX, export_peer
from .report import FILE_BACKENDS, INT8_BACKENDS

Run = Callable[[torch.Tensor], torch.Tensor]

# the backends that are not an export format: what each needs and how to install it
_INSTALL = {
    "timm": 'pip install "mobilevt[reference]"',
    "transformers": 'pip install "mobilevt[reference]"',
    "timm_onnxruntime": 'pip install "mobilevt[onnx,reference]"',
    "timm_executorch": 'pip install "mobilevt[executorch,reference]"',
    "timm_tflite": 'pip install "mobilevt[tflite,reference]"',
}
REQUIRED_MODULES = {
    "timm": ("timm",),
    "transformers": ("transformers",),
    "timm_onnxruntime": ("timm", "onnx", "onnxruntime"),
    "timm_executorch": ("timm", "executorch.runtime"),
    "timm_tflite": ("timm", "litert_torch"),
}


def _executorch_threads(threads: int) -> bool:

    return set_executorch_threads(threads)


def _scripted_runner(path: Path) -> Callable[[int], Run]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        module = torch.jit.load(str(path)).eval()
    return lambda batch: module


def torch_runner(model: nn.Module) -> Callable[[int], Run]:
    return lambda batch: model


def file_runner(backend: str, path: Path, threads: int) -> Callable[[int], Run]:
    backend = runtime_of(backend)
    if backend == "scripted":
        return _scripted_runner(path)
    if backend not in FILE_BACKENDS:
        raise InvalidInputError(f"{backend} does not run from a file")
    run_file = FILE_BACKENDS[backend].runner(path, threads)
    return lambda batch: lambda x: run_file(x)[0]


# --------------------------------------------------------------------------- building backends


@dataclass
class Backend:
    name: str
    status: str  # ok / missing / failed
    note: str = ""
    runner_for: Callable[[int], Run] | None = None
    max_batch: int | None = None  # largest batch it runs (an ExecuTorch static-batch fallback)
    same_weights: bool = True  # logits comparable with mobilevt eager
    artifact: Path | None = None  # the file a memory child loads


def runtime_of(backend: str) -> str:
    """The runtime that runs a backend's file: a peer's or an int8 file runs where mobilevt's does."""
    return PEER_RUNTIMES.get(backend, backend.removesuffix("_int8"))


def missing_package(backend: str) -> str | None:
    """``missing: <module> (<pip command>)`` when a package the backend needs is absent."""
    # (a missing converter, litert-torch, is reported by export_model with its pip command)
    runtime = FILE_BACKENDS.get(runtime_of(backend))
    if runtime is not None and runtime.runner_missing() is not None:
        return f"missing: {runtime.runner_missing()} ({_INSTALL.get(backend, runtime.install_hint)})"
    for module in REQUIRED_MODULES.get(backend, ()):
        try:
            importlib.import_module(module)
        except ImportError:
            return f"missing: {module} ({_INSTALL[backend]})"
    return None


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _choose_script_or_trace(fused: nn.Module, size: int, path: Path) -> str:
    """TorchScript of the fast path: scripted, or traced when tracing gives a faster
    program that still matches at another batch size; the chosen one is saved to ``path``."""
    example = torch.rand(1, 3, size, size)
    check = torch.rand(2, 3, size, size)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches
        expected = fused(check)
        candidates = {"torch.jit.script + freeze": torch.jit.freeze(torch.jit.script(fused))}
        try:
            traced = torch.jit.freeze(torch.jit.trace(fused, example))
            if (traced(check) - expected).abs().max().item() <= 1e-4:
                candidates["torch.jit.trace + freeze"] = traced
        except RuntimeError:
            pass
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for round_index in range(9):
            for name, module in candidates.items():
                start = time.perf_counter()
                module(example)
                if round_index >= 4:  # TorchScript's profiling executor optimises the graph in the first runs
                    times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        chosen = min(medians, key=medians.get)
        with atomic_path(path) as tmp:
            torch.jit.save(candidates[chosen], str(tmp))
    others = ", ".join(f"{n}: {ms:.1f} ms" for n, ms in medians.items() if n != chosen)
    return chosen + (f" (quick check, batch 1: {medians[chosen]:.1f} ms vs {others})" if others else "")


def _check_image_folder(workdir: Path) -> Path:
    """Two small random photos-to-be for export_model's verification step (the bench times
    the files; whether they agree with eager is checked again on the timed input)."""
    from PIL import Image

    folder = workdir / "check-images"
    folder.mkdir(exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    for i in range(2):
        pixels = torch.randint(0, 256, (300, 320, 3), dtype=torch.uint8, generator=generator)
        Image.fromarray(pixels.numpy()).save(folder / f"random{i}.png")
    return folder


def build_backends(
    name: str,
    backends: Sequence[str],
    size: int,
    threads: int,
    max_batch: int,
    seed: int,
    workdir: Path,
    advance: Callable[[str], None],
) -> dict[str, Backend]:

    built: dict[str, Backend] = {}
    missing = {b: missing_package(b) for b in backends}
    reference: nn.Module | None = None
    if any(b == "timm" or b in PEER_RUNTIMES for b in backends) and missing_package("timm") is None:
        # mobilevt loads timm's weights: the two are then checked against each other too

        reference = timm_model(name, seed)
        base = create_model(name).eval()
        base.load_state_dict(convert_state_dict(reference.state_dict(), name))
    else:
        base = mobilevt_model(name, seed)
    fused = fast_path(copy.deepcopy(base))
    check_dir: Path | None = None
    for backend in backends:
        advance(f"{name}: building {backend}")
        if missing[backend]:
            built[backend] = Backend(backend, "missing", missing[backend])
            continue
        try:
            if backend == "eager":
                built[backend] = Backend(backend, "ok", "", torch_runner(base))
            elif backend == "fused":
                built[backend] = Backend(backend, "ok", "model.fuse() + channels_last", torch_runner(fused))
            elif backend == "timm":
                built[backend] = Backend(backend, "ok", "same weights as mobilevt", torch_runner(reference))
            elif backend == "transformers":
                model = transformers_model(name, seed)
                built[backend] = Backend(backend, "ok", "own random weights", torch_runner(model), same_weights=False)
            elif backend in PEER_RUNTIMES:
                built[backend] = _peer_backend(backend, name, reference, size, threads, max_batch, workdir)
            elif backend == "scripted":
                path = workdir / f"{name}.scripted.pt"
                note = _choose_script_or_trace(fused, size, path)
                built[backend] = Backend(backend, "ok", note, file_runner(backend, path, threads), artifact=path)
            else:
                check_dir = check_dir or _check_image_folder(workdir)
                built[backend] = _exported_backend(backend, name, base, size, threads, max_batch, workdir, check_dir)
        except ImportError as exc:
            hint = (
                _INSTALL[backend]
                if backend in _INSTALL
                else (FILE_BACKENDS[backend].install_hint if backend in FILE_BACKENDS else "")
            )
            built[backend] = Backend(backend, "missing", f"missing: {exc.name or exc} ({hint})")
        except ExportError as exc:
            # export_model names a missing converter package with its pip command
            status = "missing" if "pip install" in str(exc) else "failed"
            built[backend] = Backend(backend, status, f"{status}: {one_line(exc)}")
        except Exception as exc:  # noqa: BLE001 - a backend that cannot be built is a table row, not a crash
            built[backend] = Backend(backend, "failed", f"failed: {one_line(exc)}")
    return built


def _exported_backend(
    backend: str, name: str, model: nn.Module, size: int, threads: int, max_batch: int, workdir: Path, check_dir: Path
) -> Backend:
    """``model`` exported by mobilevt.export.export_model for ``backend`` (ONNX Runtime,
    ExecuTorch, TFLite, Core ML) into ``workdir``, with what its report says about it."""

    export_format = INT8_BACKENDS.get(backend) or FILE_BACKENDS[backend]
    path = workdir / f"{name}{'_int8' if backend in INT8_BACKENDS else ''}{export_format.suffixes[0]}"
    # a batch-1-only run gets a static program (ExecuTorch needs max > min for a dynamic one)
    batch_options: dict = {"dynamic_batch": False} if max_batch == 1 else {}
    if "max_batch" in export_format.options:
        batch_options["max_batch"] = max_batch
    if backend in INT8_BACKENDS:  # calibrated on the random check photos: speed only
        batch_options |= {"quantize": "int8", "calibration": check_dir}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / exporter chatter
        report = export_model(
            model,
            path,
            export_format.name,
            image_size=(size, size),
            check_images=check_dir,
            max_check_images=2,
            latency_runs=0,
            **batch_options,
        )
    notes = [report.runtime] + (["int8 calibrated on random photos: speed only"] if backend in INT8_BACKENDS else [])
    if runtime_of(backend) == "executorch" and not _executorch_threads(threads):
        notes.append("its thread pool could not be resized: default thread count")
    static = not report.dynamic_batch
    if static and max_batch > 1:
        # the export's own explanation (a converter that cannot lower a symbolic batch ...)
        why = next((n for n in report.notes if "batch" in n), "the exported program has a static batch")
        notes.append(why[:160] if why.lower().startswith("batch 1 only") else f"batch 1 only ({why[:160]})")
    elif report.details.get("max_batch"):
        notes.append(f"memory planned for batch <= {report.details['max_batch']}")
    planned = report.details.get("max_batch")
    return Backend(
        backend,
        "ok",
        "; ".join(notes),
        file_runner(backend, path, threads),
        max_batch=1 if static else planned,
        artifact=path,
    )


def _peer_backend(
    backend: str, name: str, reference: nn.Module, size: int, threads: int, max_batch: int, workdir: Path
) -> Backend:
    """timm's model (with mobilevt's weights) exported the way a user without mobilevt would."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / exporter chatter
        peer = export_peer(backend, reference, size, max_batch, workdir / f"{name}.{backend}{PEER_SUFFIX[backend]}")
    note = peer.note
    if PEER_RUNTIMES[backend] == "executorch" and not _executorch_threads(threads):
        note += "; its thread pool could not be resized: default thread count"
    return Backend(
        backend, "ok", note, file_runner(backend, peer.path, threads), max_batch=peer.max_batch, artifact=peer.path
    )

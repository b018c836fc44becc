"""Peak memory per backend, each measured in a fresh child process."""

from __future__ import annotations

import importlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .models import fast_path, mobilevt_model, timm_model, transformers_model
from .runtimes import REQUIRED_MODULES, Backend, file_runner, one_line, torch_runner

MEMORY_RUNS = 3


def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            match = re.search(rf"^{field_name}:\s+(\d+) kB", fh.read(), re.M)
        return int(match.group(1)) if match else None
    except OSError:
        return None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM) to its current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _maxrss_kb() -> int:

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


def _peak_memory_in_this_process(spec: dict) -> dict:
    """Load one backend, run each batch size; peak RSS growth (MB) per batch size."""
    backend, name, size, threads = spec["backend"], spec["model"], spec["image_size"], spec["threads"]
    torch.set_num_threads(threads)
    # everything imported before the baseline: only what loading and running adds is counted
    for module in REQUIRED_MODULES.get(backend, ()):
        importlib.import_module(module)
    if backend == "transformers":
        import transformers

        transformers.MobileViTForImageClassification, transformers.MobileViTV2ForImageClassification  # noqa: B018 - loads the lazy modules
    baseline = _status_kb("VmRSS")
    precise = baseline is not None
    if not precise:
        baseline = _maxrss_kb()
    if backend in ("eager", "fused", "timm", "transformers"):
        builders = {
            "eager": lambda: mobilevt_model(name, 0),
            "fused": lambda: fast_path(mobilevt_model(name, 0)),
            "timm": lambda: timm_model(name, 0),
            "transformers": lambda: transformers_model(name, 0),
        }
        runner_for = torch_runner(builders[backend]())
    else:
        runner_for = file_runner(backend, Path(spec["artifact"]), threads)
    peaks: dict[str, float] = {}
    for batch in spec["batches"]:
        run = runner_for(batch)
        x = torch.rand(batch, 3, size, size)
        with torch.inference_mode():
            run(x)  # first call: lazy initialisation outside the window, as in the timed runs
            precise = precise and _reset_peak_rss()
            for _ in range(MEMORY_RUNS):
                run(x)
        peak = _status_kb("VmHWM") if precise else _maxrss_kb()
        peaks[str(batch)] = (peak - baseline) / 1024
    return {"peak_mb": peaks, "precise": precise}


_CHILD_TIMEOUT_S = 900


def memory_helper_main(preload: Sequence[str]) -> None:
    """Helper process: import torch, mobilevt (and ``preload``) once, then fork one fresh
    child per request read from stdin, so that each backend is measured in a process of
    its own without paying the imports again. It runs no computation itself: the thread
    pools of torch and the runtimes start in each child."""

    for module in preload:
        importlib.import_module(module)
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read_fd)
            os.dup2(2, 1)  # stray prints of libraries must not reach the result channel
            signal.alarm(_CHILD_TIMEOUT_S)  # a hung runtime ends the child, not the run
            try:
                result = _peak_memory_in_this_process(json.loads(line))
            except BaseException as exc:  # noqa: BLE001 - reported back as one line
                result = {"error": one_line(exc)}
            with os.fdopen(write_fd, "w") as channel:
                channel.write(json.dumps(result))
            os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd) as channel:
            text = channel.read()
        _, status = os.waitpid(pid, 0)
        if not text:
            text = json.dumps({"error": f"the measuring process died (wait status {status})"})
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


class MemoryHelper:
    """The parent's end of :func:`memory_helper_main`."""

    def __init__(self, preload: Sequence[str]):
        self._stderr = tempfile.TemporaryFile(mode="w+")
        code = "import sys; from mobilevt.benchmark.memory import memory_helper_main; memory_helper_main(sys.argv[1:])"
        self._process = subprocess.Popen(
            [sys.executable, "-c", code, *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=_child_env(),
        )

    def measure(self, spec: dict) -> dict[int, float] | str:
        try:
            self._process.stdin.write(json.dumps(spec) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            self._stderr.seek(0)
            tail = [text for text in self._stderr.read().splitlines() if text.strip()][-1:] or ["no output"]
            return f"memory not measured: the helper process failed ({tail[0][:200]})"
        result = json.loads(line)
        if "error" in result:
            return f"memory not measured: {result['error']}"
        return {int(b): float(mb) for b, mb in result["peak_mb"].items()}

    def close(self) -> None:
        if self._process.stdin:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._stderr.close()


def measure_backend_memory(
    name: str,
    built: dict[str, Backend],
    batch_sizes: Sequence[int],
    size: int,
    threads: int,
    helper: MemoryHelper,
    advance: Callable[[str], None],
) -> dict[str, dict[int, float] | str]:
    """Peak RSS growth per backend and batch size, each backend in a fresh process."""
    results: dict[str, dict[int, float] | str] = {}
    for backend, state in built.items():
        if state.status == "ok":
            batches = [b for b in sorted(batch_sizes) if state.max_batch is None or b <= state.max_batch]
            results[backend] = helper.measure(
                {
                    "backend": backend,
                    "model": name,
                    "image_size": size,
                    "threads": threads,
                    "batches": batches,
                    "artifact": str(state.artifact) if state.artifact else None,
                }
            )
        advance(f"{name}: memory of {backend}")
    return results


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # the child must import this very mobilevt, also when it runs from a source tree
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env

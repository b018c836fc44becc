"""``mobilevt bench``: the files it writes, the consistency of its numbers, interleaved
timing, and backends whose package is missing. No timing thresholds: speed is only
reported, never asserted."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import mobilevt
from mobilevt.benchmark import BACKEND_LABELS, run_benchmark, write_report
from mobilevt.benchmark.timing import percentile, time_interleaved
from mobilevt.cli.main import main
from mobilevt.profiling import count_macs

pytest.importorskip("timm")
pytest.importorskip("onnxruntime")


@pytest.mark.slow
def test_tiny_run_writes_markdown_json_and_png(tmp_path):
    backends = ["eager", "fused", "onnxruntime", "timm", "timm_onnxruntime"]
    code = main(
        [
            "bench",
            "mobilevit_xxs",
            "--backends",
            ",".join(backends),
            "--batch-sizes",
            "1",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--threads",
            "2",
            "--output-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    payload = json.loads((tmp_path / "bench.json").read_text())
    rows = payload["rows"]
    assert [(r["model"], r["batch"], r["backend"]) for r in rows] == [("mobilevit_xxs", 1, b) for b in backends]

    meta = payload["meta"]
    assert meta["threads"] == 2 and meta["image_size"] == 256 and meta["runs"] == 3
    assert "random" in meta["weights"]
    peak = meta["matmul_peak"]
    # the floor divides by the fastest fp32 GEMM: torch's, and the kernels of the runtimes benchmarked
    kernels = {k["name"]: k for k in peak["kernels"]}
    assert {"torch.mm (oneDNN/MKL)", "onnxruntime MatMul (MLAS)", "onnxruntime MatMulInteger u8s8 (MLAS)"} <= set(
        kernels
    )
    assert peak["gflops"] == max(k["gops"] for k in peak["kernels"] if k["dtype"] == "fp32") > 0
    assert kernels["torch.mm (oneDNN/MKL)"]["gops"] == max(peak["gflops_by_size"].values())
    theory = peak["theoretical"]
    assert theory["fp32_gflops"] == pytest.approx(theory["cores"] * theory["ghz"] * theory["fp32_flops_per_cycle"])

    macs = count_macs(mobilevt.create_model("mobilevit_xxs"), (256, 256)).macs
    weight_mb = sum(p.numel() for p in mobilevt.create_model("mobilevit_xxs").parameters()) * 4 / 2**20
    timm_ms = next(r for r in rows if r["backend"] == "timm")["median_ms"]
    # the best peer path: the fastest way to run timm's model (eager, or its own exports)
    best_peer_ms = min(r["median_ms"] for r in rows if r["backend"].startswith("timm"))
    for row in rows:
        assert row["status"] == "ok", row
        assert row["runs"] == 3
        assert 0 < row["median_ms"] <= row["p90_ms"]
        assert row["throughput_ips"] == pytest.approx(1000 / row["median_ms"])
        assert row["ratio_to_timm"] == pytest.approx(row["median_ms"] / timm_ms)
        assert row["ratio_to_best_peer"] == pytest.approx(row["median_ms"] / best_peer_ms)
        assert row["macs_g"] == pytest.approx(macs / 1e9)
        assert row["floor_ms"] == pytest.approx(2 * macs / (peak["gflops"] * 1e9) * 1e3)
        assert row["ratio_to_floor"] == pytest.approx(row["median_ms"] / row["floor_ms"])
        assert row["fraction_of_peak"] == pytest.approx(row["floor_ms"] / row["median_ms"])
        assert row["top1"] == mobilevt.get_model_entry("mobilevit_xxs").default_weights.top1
        # every backend holds at least the weights while it runs
        assert row["peak_memory_mb"] >= weight_mb
        # the timed programs compute the same function: timm got mobilevt's weights
        assert row["max_abs_diff"] <= 1e-4, row
    assert next(r for r in rows if r["backend"] == "timm")["ratio_to_timm"] == 1.0
    summary = payload["summary"][0]
    assert summary["best_backend"] in ("eager", "fused", "onnxruntime")
    assert summary["best_peer_ms"] == best_peer_ms and summary["best_peer"].startswith("timm")
    # the peer files are what a user gets from the runtimes' own exporters, not mobilevt's
    peer_notes = {r["backend"]: r["note"] for r in rows if r["backend"].startswith("timm_")}
    assert "opset 17" in peer_notes["timm_onnxruntime"]

    markdown = (tmp_path / "bench.md").read_text()
    for backend in backends:
        assert f"| mobilevit_xxs | {BACKEND_LABELS[backend]} |" in markdown
    assert "Random" in markdown or "random" in markdown
    png = (tmp_path / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_missing_backend_package_is_a_row_not_a_crash(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "litert_torch"):
        monkeypatch.setitem(sys.modules, name, None)  # no LiteRT, whether it is installed or not
    report = run_benchmark(
        ["mobilevit_xxs"],
        backends=["eager", "onnxruntime", "tflite", "timm_tflite"],
        batch_sizes=[1],
        runs=2,
        warmup=0,
        threads=2,
        measure_memory=False,
        progress=False,
    )
    eager, onnx, tflite, peer = report.rows
    assert peer.status == "missing" and peer.median_ms is None
    # the extra that brings both the converter and the interpreter
    assert tflite.status == "missing" and 'pip install "mobilevt[tflite]"' in tflite.note
    assert eager.status == "ok" and eager.median_ms > 0 and eager.ratio_to_timm is None  # no timm in this run
    assert onnx.status == "missing" and onnx.median_ms is None
    assert 'pip install "mobilevt[onnx]"' in onnx.note

    written = write_report(report, tmp_path)
    assert set(written) == {"json", "markdown"} and not (tmp_path / "bench.png").exists()
    markdown = (tmp_path / "bench.md").read_text()
    assert "| mobilevit_xxs | ONNX Runtime | missing |" in markdown
    assert "| mobilevit_xxs | timm -> TFLite (LiteRT, peer) | missing |" in markdown
    assert 'pip install "mobilevt[tflite,reference]"' in markdown
    assert 'pip install "mobilevt[onnx]"' in markdown
    assert "matplotlib is not installed" in markdown
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert rows[1]["status"] == "missing"


def test_rounds_interleave_backends_with_rotating_start():
    calls: list[str] = []

    def runner(name):
        return lambda x: calls.append(name)

    times = time_interleaved(
        {n: runner(n) for n in "abc"},
        torch.zeros(1),
        rounds=3,
        warmup=1,
        advance=lambda text: None,
        label="test",
        calls_per_turn=1,
    )
    assert "".join(calls) == "abc" + "bca" + "cab" + "abc"  # warm-up round, then 3 timed rounds
    assert {n: len(t) for n, t in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_each_turn_warms_the_backend_before_its_timed_call(monkeypatch):
    """After another runtime ran, a backend's first call wakes its thread pool: a turn is
    two calls in a row and only the second is timed."""
    calls: list[str] = []
    clock = {"now": 0.0}

    def runner(name, cost):
        def run(x):
            # the first call of a turn costs 10 s more: it must not be the timed one
            cold = not calls or calls[-1] != name
            calls.append(name)
            clock["now"] += cost + (10.0 if cold else 0.0)

        return run

    monkeypatch.setattr("mobilevt.benchmark.timing.time.perf_counter", lambda: clock["now"])
    times = time_interleaved(
        {"a": runner("a", 1.0), "b": runner("b", 2.0)},
        torch.zeros(1),
        rounds=2,
        warmup=0,
        advance=lambda text: None,
        label="test",
    )
    assert "".join(calls) == "aabb" + "bbaa"
    assert times == {"a": [1.0, 1.0], "b": [2.0, 2.0]}


def test_p90_matches_numpy():
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 10.0]
    assert percentile(values, 0.9) == pytest.approx(np.percentile(values, 90))
    assert percentile([4.0], 0.9) == 4.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "mobilevit_xxs", "--backends", "eager,tensorrt"], "unknown backend(s) tensorrt"),
        (["bench", "mobilevit_xxxl"], "unknown model 'mobilevit_xxxl'"),
        (["bench", "resnet*"], "no image classifier matches 'resnet*'"),
        (["bench", "deeplabv3_mobilevit_xxs", "--backends", "onnxruntime"], "--backends and --batch-sizes apply to"),
        (["bench", "deeplabv3_mobilevit_xxs", "mobilevit_xxs"], "bench the task models (deeplabv3_*, ssdlite_*) alone"),
        (["bench", "vilt_b32_vqa", "mobilevit_xxs"], "bench ViLT on its own"),
    ],
)
def test_bad_options_give_one_line_errors(argv, message, capsys, tmp_path):
    assert main(argv + ["--output-dir", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "flags, amd, family, per_cycle",
    [
        ({"avx512f", "fma", "avx2"}, True, 26, 64),  # AMD Zen 5: full-width AVX-512
        ({"avx512f", "fma", "avx2"}, True, 25, 32),  # AMD Zen 4: AVX-512 on 256-bit units
        ({"avx512f", "fma", "avx2"}, False, 6, 64),  # Intel Xeon with two AVX-512 FMA units
        ({"fma", "avx2"}, False, 6, 32),
        ({"sse2"}, False, 6, 8),
    ],
)
def test_theoretical_fp32_flops_per_cycle_follow_the_instruction_set(flags, amd, family, per_cycle):
    from mobilevt.benchmark.floor import _fp32_flops_per_cycle

    assert _fp32_flops_per_cycle(flags, amd, family)[0] == per_cycle


class _SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.slow
def test_peer_executorch_file_takes_a_dynamic_batch_or_falls_back_to_batch_1(tmp_path, monkeypatch):
    """The ExecuTorch peer path exports with a symbolic batch as a user would; where that
    program fails in the runtime it is written again for batch 1, as mobilevt's export does."""
    pytest.importorskip("executorch")
    from mobilevt.benchmark import peers
    from mobilevt.export.formats.executorch import executorch_runner

    model = _SmallNet().eval()
    x = torch.rand(3, 3, 32, 32)
    dynamic = peers.export_peer("timm_executorch", model, 32, 4, tmp_path / "dynamic.pte")
    assert dynamic.max_batch == 4 and "batch 1 to 4" in dynamic.note and "XnnpackPartitioner" in dynamic.note
    run, _ = executorch_runner(dynamic.path)
    with torch.no_grad():
        assert (run(x)[0] - model(x)).abs().max() <= 1e-5

    monkeypatch.setattr(peers, "_largest_batch_that_runs", lambda path, size: None)
    static = peers.export_peer("timm_executorch", model, 32, 4, tmp_path / "static.pte")
    assert static.max_batch == 1 and "fails in the runtime" in static.note
    run, program = executorch_runner(static.path)
    assert program.metadata("forward").input_tensor_meta(0).sizes()[0] == 1
    with torch.no_grad():
        assert (run(x[:1])[0] - model(x[:1])).abs().max() <= 1e-5


@pytest.mark.slow
def test_the_floor_is_the_fastest_fp32_gemm_of_the_runtimes_measured():
    pytest.importorskip("executorch")
    from mobilevt.benchmark import measure_matmul_peak

    peak = measure_matmul_peak(2, runtimes=("onnxruntime", "executorch"), sizes=(512,), repeats=2)
    names = {k.name: k for k in peak.kernels}
    assert {
        "torch.mm (oneDNN/MKL)",
        "torch._int_mm",
        "onnxruntime MatMul (MLAS)",
        "XNNPACK linear (ExecuTorch)",
        "onnxruntime MatMulInteger u8s8 (MLAS)",
        "XNNPACK int8 linear (ExecuTorch; with quantizing its input)",
    } == set(names)
    assert peak.gflops == max(k.gops for k in peak.kernels if k.dtype == "fp32")
    assert all(k.gops > 0 for k in peak.kernels)


def test_int8_backends_time_the_quantized_file_beside_the_fp32_one(tmp_path):
    """`--backends onnxruntime,onnxruntime_int8`: the int8 row is the file export_model quantizes
    (smaller logits agreement, never a warning: it differs by design), labelled as int8."""
    report = run_benchmark(
        ["mobilevit_xxs"],
        backends=["eager", "onnxruntime", "onnxruntime_int8"],
        batch_sizes=[1],
        image_size=64,
        runs=2,
        warmup=0,
        threads=1,
        measure_memory=False,
        progress=False,
    )
    eager, fp32, int8 = report.rows
    assert int8.status == "ok" and int8.median_ms > 0, int8.note
    assert "speed only" in int8.note and "warning" not in int8.note
    assert BACKEND_LABELS["onnxruntime_int8"] == "ONNX Runtime int8"
    assert fp32.max_abs_diff <= 1e-4 < int8.max_abs_diff  # the int8 file really is quantized
    markdown = report.to_markdown()
    assert "| mobilevit_xxs | ONNX Runtime int8 |" in markdown


def test_the_terminal_gets_the_summary_and_the_runtimes_noise_goes_to_the_log(tmp_path, capfd, monkeypatch):
    """C++ log lines (fd 2) and third-party warnings land in bench.log; the terminal gets the
    summary and where the full report is; an earlier report is kept unless --overwrite."""
    import logging
    import os
    import warnings

    import mobilevt.benchmark as benchmark

    real = benchmark.run_benchmark

    def noisy(*args, **kwargs):
        os.write(2, b"[cpuinfo_utils.cpp:87] Failed to open midr file\n")
        warnings.warn("a third-party deprecation", DeprecationWarning, stacklevel=1)
        # a library's logging with a handler made now (torch's W1205 ... lines come this way)
        library_log = logging.getLogger("a.library")
        library_log.addHandler(logging.StreamHandler())
        library_log.warning("W1205 a library's log line")
        return real(*args, **kwargs)

    monkeypatch.setattr(benchmark, "run_benchmark", noisy)
    argv = ["bench", "mobilevit_xxs", "--backends", "eager", "--batch-sizes", "1", "--runs", "2", "--warmup", "0"]
    argv += ["--threads", "1", "--no-memory", "--no-progress", "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert "midr" not in out + err and "third-party" not in out + err
    log = (tmp_path / "bench.log").read_text()
    assert "[cpuinfo_utils.cpp:87] Failed to open midr file" in log and "a third-party deprecation" in log
    assert "W1205 a library's log line" in log and "W1205" not in out + err
    assert "## Summary (batch 1)" in out and "## Batch 1" not in out  # the full tables stay in bench.md
    assert f"full report: {tmp_path / 'bench.md'}" in out and "## Batch 1" in (tmp_path / "bench.md").read_text()
    assert "(met)" not in out and "(missed)" not in out

    before = (tmp_path / "bench.md").read_text()
    assert main(argv) == 1
    err = capfd.readouterr().err.strip()
    assert err.startswith("error: ") and "--overwrite" in err and "\n" not in err
    assert (tmp_path / "bench.md").read_text() == before
    assert main([*argv, "--overwrite"]) == 0

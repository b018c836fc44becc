"""`mobilevt bench vilt_b32_vqa` end to end on a small ViLT (the full B/32 run is for a quiet
machine): every (setting, runtime) gets a row, each runtime's logits equal mobilevt eager
in the same setting (1e-4: onnxruntime / XNNPACK kernels, PARITY_ATOL), transformers'
equal mobilevt's, ratios are the medians' quotients, the FLOP share of the MobiVQA setting
is counted on the model (pruning and an early exit cost fewer FLOPs), and the JSON holds
the printed rows. No timing is asserted."""

from __future__ import annotations

import json

import pytest
from conftest import PARITY_ATOL

from mobilevt.cli.main import main

pytest.importorskip("transformers")
SMALL_HF = {
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "image_size": 128,
}


def _run(tmp_path, capsys, *flags, hf_config=SMALL_HF):
    common = ["bench", "vilt_b32_vqa", "--runs", "2", "--warmup", "0", "--threads", "1", "--image-size", "128"]
    common += ["--text-length", "12", "--hf-config", json.dumps(hf_config), "--output-dir", str(tmp_path)]
    assert main([*common, "--no-progress", *flags]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "vilt-bench.json").read_text())
    assert printed.startswith((tmp_path / "vilt-bench.md").read_text())
    assert printed.rstrip().splitlines()[-1].startswith(f"full report: {tmp_path / 'vilt-bench.md'}")
    rows = report["rows"]
    for row in rows:
        assert row["status"] == "ok", row
        assert f"| {row['setting_name']} | {row['runtime_name']} | {row['median_ms']:.1f} |" in printed
        # the ratio comes from unrounded times, median_ms is rounded: on this tiny model (under 1 ms)
        # the rounding alone moves the quotient by up to ~3e-3 (measured in CI-like runs)
        assert row["ratio_to_transformers"] == pytest.approx(
            row["median_ms"] / rows[0]["median_ms"], rel=0.01, abs=1e-2
        )
        assert row["max_abs_diff_vs_eager"] <= PARITY_ATOL, row
        assert 0 < row["floor_share"] and row["gflops"] > 0
    assert (rows[0]["runtime"], rows[0]["setting"]) == ("transformers", "full")
    assert report["fp32_gemm_gflops"] > 0 and report["threads"] == 1
    # the exported files are removed; the runtimes' log is kept when they printed anything
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "vilt-bench.log") == [
        "vilt-bench.json",
        "vilt-bench.md",
    ]
    return rows


def test_bench_vilt_times_every_runtime_and_the_mobivqa_setting(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    flags = ["--backends", "eager,scripted,onnxruntime", "--prune-layer", "1", "--exit-layer", "3"]
    rows = _run(tmp_path, capsys, *flags)
    assert [(r["setting"], r["runtime"]) for r in rows] == [
        ("full", "transformers"),
        ("full", "eager"),
        ("full", "scripted"),
        ("full", "onnxruntime"),
        ("mobivqa", "eager"),
        ("mobivqa", "scripted"),
        ("mobivqa", "onnxruntime"),
    ]
    assert rows[1]["max_abs_diff_vs_eager"] == 0.0 and rows[4]["max_abs_diff_vs_eager"] == 0.0
    assert rows[4]["setting_name"] == "MobiVQA: keep 0.5 of the image tokens after layer 1, exit after layer 3"
    assert rows[3]["export_s"] is not None and rows[1]["export_s"] is None
    assert all(r["flop_share"] == 1.0 for r in rows[:4])
    assert 0.3 < rows[4]["flop_share"] < 0.99  # fewer tokens after layer 1, no layer 4
    assert rows[4]["gflops"] == pytest.approx(rows[4]["flop_share"] * rows[1]["gflops"], rel=1e-2)


def test_bench_vilt_refuses_what_it_cannot_time(tmp_path, capsys):
    common = ["bench", "vilt_b32_vqa", "--output-dir", str(tmp_path), "--no-progress"]
    for flags, message in [
        (["--batch-sizes", "8"], "batch 1"),
        (["--exit-threshold", "0.9"], "fixed settings"),
        (
            ["--backends", "tflite"],
            "ViLT benches eager, scripted, lite, onnxruntime, executorch, onnxruntime_int8, executorch_int8, "
            "not tflite",
        ),
    ]:
        assert main([*common, *flags]) == 1
        assert message in capsys.readouterr().err
    assert main(["bench", "mobilevit_xxs", "--prune-layer", "2", "--output-dir", str(tmp_path)]) == 1
    assert "apply to vilt_b32_vqa only" in capsys.readouterr().err


@pytest.mark.slow  # about 30 s: XNNPACK lowering
def test_bench_vilt_runs_the_executorch_program(tmp_path, capsys):
    pytest.importorskip("executorch")
    # one layer: the XNNPACK lowering's time grows with the graph, and one layer holds every operator
    rows = _run(tmp_path, capsys, "--backends", "executorch", hf_config=SMALL_HF | {"num_hidden_layers": 1})
    assert [(r["setting"], r["runtime"]) for r in rows] == [("full", "transformers"), ("full", "executorch")]


def test_grid_times_each_setting_beside_the_full_model_with_its_flop_prediction(tmp_path, capsys):
    """--grid on the 4-layer model: pruning after layer 2 keeping 0.75/0.5/0.25 (an exit after
    layer 4 or later is no exit there), each setting exported, checked against eager and timed
    beside the full model; the expected time is the FLOP share of the full model's."""
    flags = ["--grid", "--backends", "eager"]
    common = ["bench", "vilt_b32_vqa", "--runs", "2", "--warmup", "0", "--threads", "1", "--image-size", "128"]
    common += ["--text-length", "12", "--hf-config", json.dumps(SMALL_HF), "--output-dir", str(tmp_path)]
    assert main([*common, "--no-progress", *flags]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "vilt-bench.json").read_text())
    grid = report["grid"]
    assert [(g["setting_name"]) for g in grid] == [
        f"MobiVQA: keep {r} of the image tokens after layer 2" for r in ("0.75", "0.5", "0.25")
    ]
    full_ms = {r["runtime"]: r["median_ms"] for r in report["rows"] if r["setting"] == "full"}
    shares = [g["flop_share"] for g in grid]
    assert 1.0 > shares[0] > shares[1] > shares[2] > 0.5  # fewer tokens kept, fewer FLOPs; layers 1-2 whole
    for row in grid:
        assert row["runtime"] == "eager" and row["max_abs_diff_vs_eager"] == 0.0
        assert row["measured_share"] > 0 and row["median_ms"] > 0 and row["ratio_to_transformers"] is None
        # the cost model: the setting's FLOP share of the full model's time measured beside it
        pair_full_ms = row["median_ms"] / row["measured_share"]
        assert row["expected_ms"] == pytest.approx(row["flop_share"] * pair_full_ms, rel=0.02, abs=0.02)
        assert f"| {row['setting_name']} | {row['gflops']:.1f} | {row['flop_share']:.2f} |" in printed
    assert full_ms["eager"] > 0 and "MobiVQA grid on mobilevt eager" in printed


def test_int8_onnx_file_is_timed_beside_the_fp32_one(tmp_path, capsys):
    """onnxruntime_int8: the same export with its linears dynamically quantized (onnxruntime's
    quantize_dynamic), in the same rounds; its logits stay close to eager's."""
    pytest.importorskip("onnxruntime")
    common = ["bench", "vilt_b32_vqa", "--runs", "2", "--warmup", "0", "--threads", "1", "--image-size", "128"]
    common += ["--text-length", "12", "--hf-config", json.dumps(SMALL_HF), "--output-dir", str(tmp_path)]
    assert main([*common, "--no-progress", "--backends", "onnxruntime,onnxruntime_int8"]) == 0
    rows = json.loads((tmp_path / "vilt-bench.json").read_text())["rows"]
    fp32, int8 = rows[1], rows[2]
    assert (fp32["runtime"], int8["runtime"]) == ("onnxruntime", "onnxruntime_int8")
    assert int8["status"] == "ok" and int8["median_ms"] > 0
    assert fp32["max_abs_diff_vs_eager"] <= PARITY_ATOL
    # int8 differs by design, but stays near: random-weight logits here are of order 1
    assert 1e-6 < int8["max_abs_diff_vs_eager"] < 0.5, int8
    assert "ONNX Runtime, dynamic int8 linears" in capsys.readouterr().out


def test_lite_interpreter_file_is_timed_with_the_setting_saved_in_it(tmp_path, capsys):
    """lite: the .ptl an Android app loads (optimize_for_mobile, lite interpreter), full and with
    the MobiVQA setting saved into the file, equal to eager."""
    flags = ["--backends", "lite", "--prune-layer", "1", "--exit-layer", "3"]
    rows = _run(tmp_path, capsys, *flags)
    assert [(r["setting"], r["runtime"]) for r in rows] == [
        ("full", "transformers"),
        ("full", "lite"),
        ("mobivqa", "lite"),
    ]
    assert rows[1]["runtime_name"] == "lite interpreter (.ptl)" and rows[1]["export_s"] is not None
    assert 0.3 < rows[2]["flop_share"] < 0.99 and rows[2]["measured_share"] > 0


def test_profile_names_where_each_runtimes_time_goes(tmp_path, capsys):
    """--profile on the ViLT bench: eager through torch.profiler and the ONNX file through
    onnxruntime's profiler, each with the model's four inputs, in the report."""
    pytest.importorskip("onnxruntime")
    rows = _run(tmp_path, capsys, "--backends", "eager,onnxruntime", "--profile")
    assert len(rows) == 3
    profiles = json.loads((tmp_path / "vilt-bench.json").read_text())["profiles"]
    assert [(p["backend"], p["source"]) for p in profiles] == [
        ("eager (full)", "torch.profiler"),
        ("onnxruntime (full)", "onnxruntime profiler"),
    ]
    for profile in profiles:
        assert profile["operators"] and 0.3 <= profile["named_share"] <= 1.3, profile
    onnx_ops = {op["name"] for op in profiles[1]["operators"]}
    assert onnx_ops & {"MatMul", "Gemm", "FusedMatMul"} and "Softmax" in onnx_ops, onnx_ops
    assert "Where the time goes:" in (tmp_path / "vilt-bench.md").read_text()

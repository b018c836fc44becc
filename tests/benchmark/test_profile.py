"""``mobilevt bench --profile``: each runtime's own profiler names the operators that take the
time, splits kernels from glue and says how much of the runtime's time they name."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mobilevt.benchmark.profile import profile_executorch, profile_onnxruntime, profile_torch
from mobilevt.cli.main import main


class _Block(nn.Module):
    """Convolutions, a transpose and a matrix product (kernels and glue for every runtime),
    and a cumulative sum, which XNNPACK does not take (left outside the delegate)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.linear = nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).flatten(2).transpose(1, 2)  # [B, HW, 32]
        return self.linear(y).cumsum(dim=1)


def _check(profile, kernel: str, glue: str) -> None:
    operators = profile.operators
    assert profile.wall_ms > 0 and operators, profile
    assert [op.ms for op in operators] == sorted((op.ms for op in operators), reverse=True)
    assert profile.named_ms == pytest.approx(sum(op.ms for op in operators))
    assert profile.glue_ms == pytest.approx(sum(op.ms for op in operators if op.glue))
    # the operators account for a good part of the runtime's time; on a graph this small Python's
    # share between them (torch) and a busy machine move it (measured 0.25-0.9): a wide margin
    assert 0.1 <= profile.named_share <= 1.3, profile.named_share
    names = {op.name: op for op in operators}
    assert any(kernel in name and not op.glue for name, op in names.items()), list(names)
    assert any(glue in name and op.glue for name, op in names.items()), list(names)
    assert all(op.calls > 0 and op.share == pytest.approx(op.ms / profile.wall_ms) for op in operators)


def test_each_runtimes_profiler(tmp_path):
    model, x = _Block().eval(), torch.rand(1, 3, 96, 96)  # large enough that kernels, not Python, take the time
    _check(profile_torch("eager", model, x, runs=3), "conv", "transpose")

    pytest.importorskip("onnxruntime")
    torch.onnx.export(model, (x,), str(tmp_path / "block.onnx"), dynamo=False, input_names=["x"], opset_version=17)
    _check(profile_onnxruntime("onnxruntime", tmp_path / "block.onnx", x, runs=3, threads=1), "Conv", "Transpose")

    pytest.importorskip("executorch")
    from mobilevt.export.formats.executorch import write_xnnpack_program

    write_xnnpack_program(torch.export.export(model, (x,)), tmp_path / "block.pte")
    profile = profile_executorch("executorch", tmp_path / "block.pte", x, runs=3)
    _check(profile, "Convolution", "cumsum")  # the cumulative sum ran outside the delegate: glue
    assert "outside the delegate" in profile.note and "cumsum" in profile.note


def test_bench_profile_flag_reports_each_backend(tmp_path, capsys):
    argv = ["bench", "mobilevit_xxs", "--backends", "eager,fused", "--batch-sizes", "1", "--image-size", "64"]
    argv += ["--runs", "2", "--warmup", "0", "--threads", "1", "--no-memory", "--no-progress"]
    assert main([*argv, "--profile", "--output-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    profiles = json.loads((tmp_path / "bench.json").read_text())["profiles"]
    assert [(p["model"], p["batch"], p["backend"], p["source"]) for p in profiles] == [
        ("mobilevit_xxs", 1, "eager", "torch.profiler"),
        ("mobilevit_xxs", 1, "fused", "torch.profiler"),
    ]
    assert "- mobilevit_xxs: eager (torch.profiler): kernels" in printed
    assert "## Where the time goes: mobilevit_xxs, batch 1" in (tmp_path / "bench.md").read_text()

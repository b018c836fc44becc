"""Params and MACs against the published tables, and the `mobilevt models` CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import mobilevt
from mobilevt.cli.main import main
from mobilevt.profiling import count_macs

# Published figures (MobileViT paper Table 1 / ml-cvnets model zoo, at 256x256).
PUBLISHED = {
    "mobilevit_xxs": (1.27, 0.42),
    "mobilevit_xs": (2.32, 1.05),
    "mobilevit_s": (5.58, 2.03),
    "mobilevitv2_050": (1.37, 0.466),
    "mobilevitv2_100": (4.90, 1.844),
    "mobilevitv2_200": (18.45, 7.215),
}
# The published counters also count a few element-wise ops (norms, softmax, v2's
# linear-attention products) that MACs exclude: ours are 0.8-3.5% lower.
MACS_RTOL = 0.04


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_params_and_macs_match_published(name):
    params_m, macs_g = PUBLISHED[name]
    cost = count_macs(mobilevt.create_model(name), (256, 256))
    assert round(cost.params / 1e6, 2) == pytest.approx(params_m, abs=0.005)
    assert cost.macs / 1e9 == pytest.approx(macs_g, rel=MACS_RTOL)
    assert cost.macs <= macs_g * 1e9  # nothing counted twice


def test_attention_matmuls_are_counted():
    cost = count_macs(mobilevt.create_model("mobilevit_s"), (256, 256))
    # q @ k^T and attn @ v: 2 * pixels_per_patch * patches^2 * dim per layer, summed over stages
    expected = sum(2 * 4 * (n * n) * d * depth for n, d, depth in [(256, 144, 2), (64, 192, 4), (16, 240, 3)])
    assert cost.attention_macs == expected


def test_models_cli_table(capsys):
    # every classifier; the task families (one DeepLabV3 and one SSDLite per backbone) are
    # profiled by their own tests, and one of each is listed here
    assert main(["models", "mobilevit*"]) == 0
    out = capsys.readouterr().out
    assert "attention matmuls counted" in out
    for name in mobilevt.list_models("mobilevit*"):
        assert f"| {name} |" in out
    assert "| mobilevit_s | 5.58 |" in out
    assert "69.00 top-1 % (ImageNet-1k)" in out
    assert main(["models", "deeplabv3_mobilevit_xxs"]) == 0
    out = capsys.readouterr().out
    assert "| deeplabv3_mobilevit_xxs |" in out and "73.60 mIoU % (PASCAL VOC 2012)" in out


def test_models_table_prints_each_row_as_soon_as_it_is_profiled(capsys, monkeypatch):
    """Profiling every model takes tens of seconds: the header and each row are printed as
    they come, not all at the end."""
    from mobilevt.cli import models as cli_main

    printed_before = []
    profile = cli_main._model_row

    def recording(name):
        printed_before.append(capsys.readouterr().out)
        return profile(name)

    monkeypatch.setattr(cli_main, "_model_row", recording)
    assert main(["models", "mobilevit_x*"]) == 0
    first, second = mobilevt.list_models("mobilevit_x*")
    assert "| model | params (M)" in printed_before[0]
    assert f"| {first} |" in printed_before[1] and f"| {second} |" not in printed_before[1]


def test_models_cli_json_and_pattern(capsys):
    assert main(["models", "mobilevitv2_05*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["mobilevitv2_050"]
    assert rows[0]["params_m"] == pytest.approx(1.371, abs=1e-3)
    assert "cvnets_in1k" in rows[0]["weights"]


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "mobilevt.cli.main", "models", "mobilevit_xxs"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "| mobilevit_xxs |" in result.stdout

"""``mobilevt bench deeplabv3_* ssdlite_*``: the task models timed against their references
in one run, with the segmenter computing the same function as transformers'. Speed is only
reported, never asserted."""

from __future__ import annotations

import json

import pytest

from mobilevt.cli.main import main

pytest.importorskip("transformers")


def test_task_models_against_transformers_and_torchvision(tmp_path, capsys):
    argv = ["bench", "deeplabv3_mobilevit_xxs", "ssdlite_mobilevit_xxs", "--image-size", "128", "--runs", "2"]
    argv += ["--warmup", "0", "--threads", "1", "--no-progress", "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = json.loads((tmp_path / "tasks-bench.json").read_text())["rows"]
    segmenter, detector = rows
    assert (segmenter["task"], detector["task"]) == ("segmentation", "detection")
    # the same weights in transformers' DeepLabV3: the same logits
    assert segmenter["reference"].startswith("transformers") and segmenter["max_abs_diff"] <= 1e-4
    assert detector["reference"].startswith("torchvision") and detector["max_abs_diff"] is None
    for row in rows:
        assert row["input"] == "128x128" and row["eager_ms"] > 0 and row["fused_ms"] > 0
        assert row["ratio_to_reference"] == pytest.approx(row["eager_ms"] / row["reference_ms"])
        assert row["published_params_m"] is not None and abs(row["params_m"] - row["published_params_m"]) < 0.2
        assert f"| {row['model']} | 128x128 |" in printed
    assert detector["published_coco_map"] is not None
    assert printed.rstrip().splitlines()[-1].startswith(f"full report: {tmp_path / 'tasks-bench.md'}")

"""Weights entries say what their published figure measures."""

from __future__ import annotations

import mobilevt

METRIC_BY_TASK = {
    "image-classification": "top-1 %",
    "semantic-segmentation": "mIoU %",
    "object-detection": "mAP@[.5:.95] %",
    "visual-question-answering": "VQA score % (test-dev)",
}


def test_every_published_figure_names_its_metric_and_top1_is_only_top1():
    seen = set()
    for name in mobilevt.list_models():
        entry = mobilevt.get_model_entry(name)
        for weights in entry.weights:
            assert weights.metric == METRIC_BY_TASK[entry.kind], weights.name
            seen.add(entry.kind)
            if entry.kind == "image-classification":
                assert weights.top1 == weights.score
            else:
                assert weights.top1 is None, f"{weights.name}: {weights.metric} is not a top-1"
    assert seen == set(METRIC_BY_TASK)
    segmenter = mobilevt.get_model_entry("deeplabv3_mobilevit_s").default_weights
    assert segmenter.score == 79.1 and segmenter.dataset == "PASCAL VOC 2012"

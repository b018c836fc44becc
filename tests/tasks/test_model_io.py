"""One verb per idea for every task: ``transforms_for`` and ``class_names_for``."""

from __future__ import annotations

import torch

import mobilevt
from mobilevt.data.preprocess import DetectionPreprocess, ImagePreprocess, SegmentationPreprocess
from mobilevt.tasks.model_io import class_names_for


def test_transforms_for_gives_each_task_its_preprocessing():
    photo = torch.randint(0, 256, (3, 240, 320), dtype=torch.uint8)
    classifier = mobilevt.transforms_for("mobilevit_xxs")
    assert type(classifier) is ImagePreprocess and classifier(photo).shape == (3, 256, 256)  # shorter side + crop
    segmenter = mobilevt.transforms_for(mobilevt.create_model("deeplabv3_mobilevit_xxs"))
    assert isinstance(segmenter, SegmentationPreprocess) and segmenter(photo).shape == (3, 512, 512)  # whole image
    detector = mobilevt.transforms_for("ssdlite_mobilevit_xxs.cvnets_coco")
    assert isinstance(detector, DetectionPreprocess) and detector(photo).shape == (3, 320, 320)


def test_class_names_for_falls_back_by_task():
    detector = mobilevt.create_model("ssdlite_mobilevit_xxs", num_classes=3)
    assert class_names_for(detector) == ["background", "class 1", "class 2"]
    segmenter = mobilevt.create_model("deeplabv3_mobilevit_xxs", num_classes=3)
    assert class_names_for(segmenter) == ["0", "1", "2"]
    assert class_names_for(mobilevt.create_model("mobilevit_xxs"))[:2] == ["tench", "goldfish"]
    named = mobilevt.create_model("mobilevit_xxs", num_classes=2)
    named.class_names = ["cat", "dog"]
    assert class_names_for(named) == ["cat", "dog"]

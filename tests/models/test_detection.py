"""SSDLite object detection: anchors, box coding, matching, loss, post-processing, the
model and its ml-cvnets checkpoints, and the COCO mAP wrapper.

No ml-cvnets installation is possible here, so parity is checked against torchvision's
SSD pieces where they compute the same thing (box coding with weights (10, 10, 5, 5) =
variances 0.1 / 0.2, SSD matching, the multibox loss with 3:1 hard negatives,
post-processing), against hand-computed values, and, for checkpoints, against a
functional re-implementation of ml-cvnets' SSD forward written here from its source and
fed the raw ml-cvnets-named tensors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_
from torchvision.models.detection import _utils as tv_det_utils
from torchvision.models.detection.ssd import SSD as TorchvisionSSD
from torchvision.ops import box_iou

import mobilevt
from mobilevt import CheckpointMismatchError
from mobilevt.ops import (
    SSDAnchorGenerator,
    box_cxcywh_to_xyxy,
    decode_boxes,
    encode_boxes,
    hard_negative_mining,
    match_anchors,
    postprocess_detections,
    ssd_multibox_loss,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


# ---------------------------------------------------------------------------------------
# anchors


def test_anchors_of_a_tiny_feature_map_by_hand():
    gen = SSDAnchorGenerator([16, 32], [[2], [2]], min_scale=0.1, max_scale=1.05)
    anchors = gen.for_image(32, 32)  # maps 2x2 (stride 16) and 1x1 (stride 32), 4 anchors per cell
    # scales = linspace(0.1, 1.05, 3) = 0.1, 0.575, 1.05; large square sqrt(s_i * s_{i+1})
    r2 = math.sqrt(2.0)
    big0 = math.sqrt(0.1 * 0.575)  # 0.23979
    shapes0 = [(0.1, 0.1), (big0, big0), (0.1 * r2, 0.1 / r2), (0.1 / r2, 0.1 * r2)]
    big1 = math.sqrt(0.575 * 1.05)  # 0.77701
    shapes1 = [(0.575, 0.575), (big1, big1), (0.575 * r2, 0.575 / r2), (0.575 / r2, 0.575 * r2)]
    expected = []
    for cy, cx in [(0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)]:  # rows first
        expected += [(cx, cy, w, h) for w, h in shapes0]
    expected += [(0.5, 0.5, w, h) for w, h in shapes1]
    assert anchors.dtype == torch.float32
    torch.testing.assert_close(anchors, torch.tensor(expected, dtype=torch.float32), atol=1e-7, rtol=0)


def test_anchors_are_clipped_and_the_global_map_is_one_cell():
    gen = SSDAnchorGenerator([32, -1], [[3], [2]], min_scale=0.5, max_scale=1.5)
    # odd input: ceil(65 / 32) = 3 cells per side; -1: one cell whatever the size
    assert gen.feature_map_sizes(65, 97) == [(3, 4), (1, 1)]
    anchors = gen.for_image(65, 97)
    assert anchors.shape == (3 * 4 * 4 + 4, 4)
    # level 1: small side 1.0, large sqrt(1.0 * 1.5) = 1.22 -> clipped to 1; 1.0 * sqrt(2) -> 1
    torch.testing.assert_close(
        anchors[-4:],
        torch.tensor(
            [
                [0.5, 0.5, 1.0, 1.0],
                [0.5, 0.5, 1.0, 1.0],
                [0.5, 0.5, 1.0, 1 / math.sqrt(2)],
                [0.5, 0.5, 1 / math.sqrt(2), 1.0],
            ]
        ),
    )
    assert gen.num_anchors_per_location() == [4, 4]


def test_head_output_order_is_the_anchor_order():
    """The head's flattening (row, column, anchor) must match the anchor generator's."""
    from mobilevt.layers.ssd_heads import SSDHead

    num_anchors, num_classes = 4, 3
    head = SSDHead(2, num_anchors, num_classes, kernel_size=1)
    with torch.no_grad():  # output channel a * (4 + C) + j: j=0 -> row, j=1 -> column, j=2 -> anchor index
        head.pred.weight.zero_()
        head.pred.bias.zero_()
        for a in range(num_anchors):
            head.pred.weight[a * 7 + 0, 0] = 1.0
            head.pred.weight[a * 7 + 1, 1] = 1.0
            head.pred.bias[a * 7 + 2] = a
    height, width = 3, 5
    rows, cols = torch.meshgrid(torch.arange(height.__float__()), torch.arange(width.__float__()), indexing="ij")
    regression, logits = head(torch.stack([rows, cols])[None])
    assert regression.shape == (1, height * width * num_anchors, 4) and logits.shape[-1] == num_classes
    anchors = SSDAnchorGenerator([32], [[2]], 0.2, 0.9).level_anchors(0, height, width)
    sizes = anchors[:4, 2:]
    for i in range(anchors.shape[0]):
        row, col, a = regression[0, i, :3].tolist()
        assert anchors[i, 0].item() == pytest.approx((col + 0.5) / width)
        assert anchors[i, 1].item() == pytest.approx((row + 0.5) / height)
        assert torch.equal(anchors[i, 2:], sizes[int(a)])


# ---------------------------------------------------------------------------------------
# box coding, matching, loss: torchvision's SSD pieces as the reference


def _random_boxes(n: int, generator: torch.Generator, low: float = 0.05, high: float = 0.5) -> torch.Tensor:
    centers = torch.rand(n, 2, generator=generator) * 0.6 + 0.2
    sizes = torch.rand(n, 2, generator=generator) * (high - low) + low
    return torch.cat([centers, sizes], dim=1)  # cxcywh


def test_box_coding_matches_torchvision_box_coder_with_ssd_weights():
    g = torch.Generator().manual_seed(0)
    anchors, boxes = _random_boxes(500, g), _random_boxes(500, g)
    coder = tv_det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    ours = encode_boxes(boxes, anchors, 0.1, 0.2)
    theirs = coder.encode_single(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(anchors))
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-5)
    regression = torch.randn(500, 4, generator=g)
    decoded = box_cxcywh_to_xyxy(decode_boxes(regression, anchors, 0.1, 0.2))
    torch.testing.assert_close(
        decoded, coder.decode_single(regression, box_cxcywh_to_xyxy(anchors)), atol=1e-6, rtol=1e-5
    )
    # and decoding inverts encoding
    torch.testing.assert_close(decode_boxes(ours, anchors), boxes, atol=1e-6, rtol=0)


def _spread_gt(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    # boxes in separate quadrants, so that no two boxes share their best anchor (where
    # torchvision's tensor assignment would pick the winner arbitrarily)
    corners = torch.tensor([[0.05, 0.05], [0.55, 0.05], [0.05, 0.55], [0.55, 0.55]])
    sizes = torch.rand(4, 2, generator=generator) * 0.35 + 0.05
    boxes = torch.cat([corners, corners + sizes], dim=1)
    labels = torch.randint(1, 5, (4,), generator=generator)
    return boxes, labels


def test_matching_matches_torchvision_ssd_matcher():
    g = torch.Generator().manual_seed(1)
    anchors = SSDAnchorGenerator([16, 32, 64, -1], [[2, 3]] * 3 + [[2]]).for_image(128, 128)
    for _ in range(5):
        gt_boxes, gt_labels = _spread_gt(g)
        labels, targets = match_anchors(gt_boxes, gt_labels, anchors, iou_threshold=0.5)
        matches = tv_det_utils.SSDMatcher(0.5)(box_iou(gt_boxes, box_cxcywh_to_xyxy(anchors)))
        assert torch.equal(labels > 0, matches >= 0)
        positive = matches >= 0
        assert torch.equal(labels[positive], gt_labels[matches[positive]])
        coder = tv_det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        expected = coder.encode_single(gt_boxes[matches[positive]], box_cxcywh_to_xyxy(anchors)[positive])
        torch.testing.assert_close(targets[positive], expected, atol=2e-5, rtol=1e-5)
        assert torch.count_nonzero(targets[~positive]) == 0
        # every box has at least one anchor, whatever its best IoU
        assert set(labels[labels > 0].unique().tolist()) == set(gt_labels.tolist())


def test_matching_an_image_without_boxes_gives_background_only():
    anchors = SSDAnchorGenerator([32], [[2]]).for_image(64, 64)
    labels, targets = match_anchors(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), anchors)
    assert labels.shape == (anchors.shape[0],) and not labels.any() and not targets.any()


def test_hard_negative_mining_by_hand():
    labels = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    background_loss = torch.tensor([[5.0, 0.1, 0.5, 0.3, 0.9], [1.0, 2.0, 3.0, 4.0, 5.0]])
    mask = hard_negative_mining(background_loss, labels, neg_pos_ratio=2)
    # image 0: its positive + the 2 largest negative losses (0.9 at 4, 0.5 at 2);
    # image 1: no positives, so no negatives either
    assert mask.tolist() == [[True, False, True, False, True], [False] * 5]


def test_multibox_loss_matches_torchvision_ssd_compute_loss():
    g = torch.Generator().manual_seed(2)
    anchors = SSDAnchorGenerator([16, 32, 64, -1], [[2, 3]] * 3 + [[2]]).for_image(128, 128)
    num_classes, batch = 5, 3
    targets, labels, regression_targets, matched = [], [], [], []
    for image in range(batch):
        gt_boxes, gt_labels = _spread_gt(g)
        if image == 2:  # an image without objects
            gt_boxes, gt_labels = gt_boxes[:0], gt_labels[:0]
        lab, reg = match_anchors(gt_boxes, gt_labels, anchors)
        labels.append(lab)
        regression_targets.append(reg)
        targets.append({"boxes": gt_boxes, "labels": gt_labels})
        quality = box_iou(gt_boxes, box_cxcywh_to_xyxy(anchors)) if len(gt_boxes) else torch.zeros(0, len(anchors))
        matched.append(tv_det_utils.SSDMatcher(0.5)(quality) if len(gt_boxes) else torch.full((len(anchors),), -1))
    box_regression = torch.randn(batch, anchors.shape[0], 4, generator=g)
    class_logits = torch.randn(batch, anchors.shape[0], num_classes, generator=g) * 2
    ours = ssd_multibox_loss(box_regression, class_logits, torch.stack(labels), torch.stack(regression_targets), 3)
    stub = SimpleNamespace(box_coder=tv_det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3)
    xyxy = box_cxcywh_to_xyxy(anchors)
    theirs = TorchvisionSSD.compute_loss(
        stub, targets, {"bbox_regression": box_regression, "cls_logits": class_logits}, [xyxy] * batch, matched
    )
    torch.testing.assert_close(ours.box, theirs["bbox_regression"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.classification, theirs["classification"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.total, ours.box + ours.classification)


# ---------------------------------------------------------------------------------------
# post-processing


def test_postprocess_by_hand():
    boxes = torch.tensor([[[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.52], [0.6, 0.6, 0.9, 0.9], [0.1, 0.1, 0.5, 0.5]]])
    scores = torch.tensor(
        [
            [
                [0.1, 0.9, 0.0],  # class 1, 0.9
                [0.2, 0.8, 0.0],  # class 1, 0.8, IoU 0.9 with the first: suppressed
                [0.995, 0.005, 0.0],  # below the 0.01 threshold
                [0.3, 0.0, 0.7],  # class 2 on the first box: other class, kept
            ]
        ]
    )
    (result,) = postprocess_detections(boxes, scores, score_threshold=0.01, nms_iou_threshold=0.5)
    assert result.labels.tolist() == [1, 2]
    torch.testing.assert_close(result.scores, torch.tensor([0.9, 0.7]))
    torch.testing.assert_close(result.boxes, boxes[0, [0, 3]])
    (capped,) = postprocess_detections(boxes, scores, max_detections=1)
    assert capped.labels.tolist() == [1]
    (empty,) = postprocess_detections(boxes, torch.zeros_like(scores))
    assert empty.boxes.shape == (0, 4) and empty.labels.dtype == torch.int64


def test_postprocess_matches_torchvision_ssd_postprocess():
    g = torch.Generator().manual_seed(4)
    n, num_classes = 300, 6
    anchors = torch.cat([torch.rand(n, 2, generator=g) * 0.3 + 0.35, torch.rand(n, 2, generator=g) * 0.2 + 0.05], 1)
    regression = torch.randn(n, 4, generator=g) * 0.5
    logits = torch.randn(n, num_classes, generator=g) * 3
    boxes = box_cxcywh_to_xyxy(decode_boxes(regression, anchors))
    assert boxes.min() > 0 and boxes.max() < 1  # torchvision clips before NMS: keep that a no-op
    (ours,) = postprocess_detections(boxes[None], logits.softmax(-1)[None], 0.01, 0.5, 400, 200)
    stub = SimpleNamespace(
        box_coder=tv_det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)),
        score_thresh=0.01,
        topk_candidates=400,
        nms_thresh=0.5,
        detections_per_img=200,
    )
    (theirs,) = TorchvisionSSD.postprocess_detections(
        stub, {"bbox_regression": regression[None], "cls_logits": logits[None]}, [box_cxcywh_to_xyxy(anchors)], [(1, 1)]
    )
    assert len(ours.labels) > 20
    assert torch.equal(ours.labels, theirs["labels"])
    torch.testing.assert_close(ours.scores, theirs["scores"])
    torch.testing.assert_close(ours.boxes, theirs["boxes"], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# the model


def test_every_mobilevit_backbone_has_a_detector():
    detectors = mobilevt.list_models(kind="object-detection")
    for backbone in mobilevt.list_models(kind="image-classification"):
        if mobilevt.get_model_entry(backbone).family.startswith("mobilevit"):
            assert f"ssdlite_{backbone}" in detectors
    assert not set(detectors) & set(mobilevt.list_models(kind="image-classification"))


@pytest.mark.parametrize(
    "name", [n for n in mobilevt.list_models(kind="object-detection") if mobilevt.get_model_entry(n).weights]
)
def test_parameter_count_matches_the_published_table(name):
    entry = mobilevt.get_model_entry(name)
    with torch.device("meta"):
        model = mobilevt.create_model(name)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    # the tables give one decimal (1.8, 2.7, 5.7 M for v1; 2.0 .. 19.1 M for v2)
    assert abs(params - entry.published_params_m) <= 0.05, (params, entry.published_params_m)
    assert entry.weights[0].num_classes == model.num_classes == 81


@pytest.mark.parametrize("name", ["ssdlite_mobilevit_xxs", "ssdlite_mobilevitv2_050"])
def test_outputs_cover_the_anchors_at_any_size_and_script(name):
    model = randomize_(mobilevt.create_model(name, num_classes=5))
    with torch.no_grad():
        # v2 blocks round their maps up to the patch grid: 129 x 97 is where a stride formula fails
        for height, width in [(192, 192), (129, 97), (64, 96)]:
            regression, logits = model(torch.rand(1, 3, height, width))
            n = model.anchors(height, width).shape[0]
            assert regression.shape == (1, n, 4) and logits.shape == (1, n, 5)
        x = torch.rand(1, 3, 128, 128)
        scripted = torch.jit.script(model)
        for ours, theirs in zip(model(x), scripted(x)):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_fuse_keeps_the_outputs():
    model = randomize_(mobilevt.create_model("ssdlite_mobilevit_xxs"))
    x = torch.rand(2, 3, 192, 192)
    with torch.no_grad():
        before = model(x)
        after = model.fuse()(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_bad_configs_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="one aspect-ratio list and one proj_channels"):
        mobilevt.create_model("ssdlite_mobilevit_xxs", output_strides=(16, 32))
    with pytest.raises(ValueError, match="stride-2 layer"):
        mobilevt.create_model(
            "ssdlite_mobilevit_xxs", output_strides=(16, 32, 128), aspect_ratios=((2,),) * 3, proj_channels=(64, 64, 64)
        )
    with pytest.raises(ValueError, match="background"):
        mobilevt.create_model("ssdlite_mobilevit_xxs", num_classes=1)


# ---------------------------------------------------------------------------------------
# ml-cvnets checkpoints


def cvnets_ssd_keys(c4: int, c5: int, num_classes: int = 81) -> dict[str, list[int]]:
    """ml-cvnets' SSD keys (beyond ``encoder.*``) and shapes with the published COCO config
    (config/detection/ssd_coco/mobilevit*.yaml: output strides 16, 32, 64, 128, 256, -1;
    proj_channels 512, 256, 256, 128, 128, 64; aspect ratios [2, 3] x 5 + [2]), written
    from cvnets/models/detection/ssd.py and cvnets/modules/ssd_heads.py:

    - ``extra_layers`` is an nn.ModuleDict keyed ``os_<stride>``: strides 64, 128, 256 are
      ``SeparableConv2d(in, out, 3, stride=2, use_norm=True, use_act=True)`` =
      ``dw_conv`` (ConvLayer2d depthwise 3x3, no bias, norm, no act) + ``pw_conv``
      (ConvLayer2d 1x1, no bias, norm, act); ConvLayer2d keeps ``block.conv`` /
      ``block.norm`` / ``block.act`` (cvnets/layers/conv_layer.py). Stride -1 is
      ``nn.Sequential(AdaptiveAvgPool2d, ConvLayer2d(in, out, 1, use_norm=False))``:
      index 1, no bias (ConvLayer2d's default).
    - ``ssd_heads`` is an nn.ModuleList of SSDHead: ``proj_layer`` (ConvLayer2d 1x1 with
      norm + act) only when proj_channels != in_channels and kernel_size > 1;
      ``loc_cls_layer`` SeparableConv2d(..., bias=True, use_norm=False, use_act=False)
      for kernel 3, a ConvLayer2d 1x1 with bias for the -1 map (kernel_size=1).
      Outputs: n_anchors * (4 + n_classes), 6 anchors (2 + 2 * 2 ratios), 4 for [2].
    """
    keys: dict[str, list[int]] = {}

    def norm(prefix: str, c: int) -> None:
        for stat in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.block.norm.{stat}"] = [c]
        keys[f"{prefix}.block.norm.num_batches_tracked"] = []

    def separable(prefix: str, cin: int, cout: int, head: bool) -> None:
        keys[f"{prefix}.dw_conv.block.conv.weight"] = [cin, 1, 3, 3]
        norm(f"{prefix}.dw_conv", cin)
        keys[f"{prefix}.pw_conv.block.conv.weight"] = [cout, cin, 1, 1]
        if head:
            keys[f"{prefix}.pw_conv.block.conv.bias"] = [cout]
        else:
            norm(f"{prefix}.pw_conv", cout)

    separable("extra_layers.os_64", c5, 256, head=False)
    separable("extra_layers.os_128", 256, 128, head=False)
    separable("extra_layers.os_256", 128, 128, head=False)
    keys["extra_layers.os_-1.1.block.conv.weight"] = [64, 128, 1, 1]
    head_inputs = [(c4, 512), (c5, 256), (256, 256), (128, 128), (128, 128)]
    for i, (cin, proj) in enumerate(head_inputs):
        if proj != cin:
            keys[f"ssd_heads.{i}.proj_layer.block.conv.weight"] = [proj, cin, 1, 1]
            norm(f"ssd_heads.{i}.proj_layer", proj)
        separable(f"ssd_heads.{i}.loc_cls_layer", proj, 6 * (4 + num_classes), head=True)
    keys["ssd_heads.5.loc_cls_layer.block.conv.weight"] = [4 * (4 + num_classes), 64, 1, 1]
    keys["ssd_heads.5.loc_cls_layer.block.conv.bias"] = [4 * (4 + num_classes)]
    return keys


def read_key_list(path: Path) -> dict[str, list[int]]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split(" ", 1)
        out[key] = json.loads(shape)
    return out


def random_state(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = torch.randn(shape, generator=g) * 0.1
        elif ".norm." in key or key.endswith("norm.weight"):
            state[key] = 1.0 + torch.randn(shape, generator=g) * 0.1
        else:
            fan_in = max(1, math.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return state


def cvnets_detector_checkpoint(backbone_keys_file: str, c4: int, c5: int, seed: int = 0):
    """(detector state dict, classifier state dict) in ml-cvnets' naming: the detector's
    encoder is the classifier without conv_1x1_exp and classifier (ssd.py sets them to None)."""
    classifier_shapes = read_key_list(FIXTURES / "cvnets_keys" / backbone_keys_file)
    classifier = random_state(classifier_shapes, seed)
    detector = {"encoder." + k: v for k, v in classifier.items() if not k.startswith(("conv_1x1_exp.", "classifier."))}
    detector.update(random_state(cvnets_ssd_keys(c4, c5), seed + 1))
    return detector, classifier


def cvnets_ssd_reference(state: dict[str, torch.Tensor], f16: torch.Tensor, f32: torch.Tensor):
    """ml-cvnets' SSD forward above the encoder (get_backbone_features + ssd_forward, in
    eval mode), functional, from the raw ml-cvnets tensors; activation ReLU (the
    detection config's model.activation.name)."""

    def conv_layer(x, prefix, stride=1, groups=1, norm=True, act=False):
        weight = state[prefix + "block.conv.weight"]
        x = F.conv2d(x, weight, state.get(prefix + "block.conv.bias"), stride, (weight.shape[-1] - 1) // 2, 1, groups)
        if norm:
            p = prefix + "block.norm."
            x = F.batch_norm(
                x,
                state[p + "running_mean"],
                state[p + "running_var"],
                state[p + "weight"],
                state[p + "bias"],
                False,
                0.1,
                1e-5,
            )
        return F.relu(x) if act else x

    def separable(x, prefix, stride, head):
        x = conv_layer(x, prefix + "dw_conv.", stride, groups=x.shape[1])
        return conv_layer(x, prefix + "pw_conv.", norm=not head, act=not head)

    maps = [f16, f32]
    x = f32
    for stride in (64, 128, 256):
        x = separable(x, f"extra_layers.os_{stride}.", 2, head=False)
        maps.append(x)
    x = F.adaptive_avg_pool2d(x, 1)
    maps.append(conv_layer(x, "extra_layers.os_-1.1.", norm=False, act=True))
    locations, confidences = [], []
    for i, fmap in enumerate(maps):
        prefix = f"ssd_heads.{i}."
        if prefix + "proj_layer.block.conv.weight" in state:
            fmap = conv_layer(fmap, prefix + "proj_layer.", act=True)
        if i == 5:
            y = conv_layer(fmap, prefix + "loc_cls_layer.", norm=False)
        else:
            y = separable(fmap, prefix + "loc_cls_layer.", 1, head=True)
        y = y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, 85)
        locations.append(y[..., :4])
        confidences.append(y[..., 4:])
    return torch.cat(locations, 1), torch.cat(confidences, 1)


@pytest.mark.parametrize(
    "name,backbone,keys_file,c4,c5",
    [
        ("ssdlite_mobilevit_xxs", "mobilevit_xxs", "ref_v1_xx_small.txt", 64, 80),
        ("ssdlite_mobilevitv2_050", "mobilevitv2_050", "ref_v2_0.5.txt", 192, 256),
    ],
)
def test_cvnets_checkpoint_loads_and_matches_the_functional_reference(tmp_path, name, backbone, keys_file, c4, c5):
    detector_state, classifier_state = cvnets_detector_checkpoint(keys_file, c4, c5)
    path = tmp_path / "coco-ssd.pt"
    torch.save({"state_dict": detector_state}, path)  # ml-cvnets wraps nothing, but trainers often do
    model = mobilevt.create_model(name, weights=str(path)).eval()
    assert model.num_classes == 81 and model.class_names[1] == "person"
    # the backbone through the (separately tested) ml-cvnets classifier conversion
    classifier_path = tmp_path / "classifier.pt"
    torch.save(classifier_state, classifier_path)
    classifier = mobilevt.create_model(backbone, weights=str(classifier_path)).eval()
    x = torch.rand(1, 3, 320, 320)
    with torch.no_grad():
        features = classifier.forward_feature_pyramid(x)
        expected = cvnets_ssd_reference(detector_state, features[3], features[4])
        regression, logits = model(x)
    assert regression.shape == expected[0].shape == (1, 3232, 4)
    torch.testing.assert_close(regression, expected[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, expected[1], atol=1e-4, rtol=1e-4)
    assert logits.std() > 0.1  # not a degenerate comparison
    # load_weights into an existing detector (the registry's load hook) gives the same
    other = mobilevt.load_weights(mobilevt.create_model(name).eval(), str(path))
    with torch.no_grad():
        torch.testing.assert_close(other(x)[1], logits, atol=0, rtol=0)


def test_mobilevt_weights_round_trip_and_fine_tuning(tmp_path):
    model = randomize_(mobilevt.create_model("ssdlite_mobilevit_xxs", num_classes=4))
    model.class_names = ["background", "circle", "square", "triangle"]
    path = mobilevt.save_weights(model, tmp_path / "det.safetensors")
    loaded = mobilevt.create_model("ssdlite_mobilevit_xxs", weights=str(path)).eval()
    assert loaded.num_classes == 4 and loaded.class_names == model.class_names
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[1], model(x)[1], atol=0, rtol=0)
    # another class count: everything but the heads' last convs is loaded
    tuned = mobilevt.create_model("ssdlite_mobilevit_xxs", weights=str(path), num_classes=11)
    assert tuned.num_classes == 11
    assert torch.equal(tuned.heads[0].pred.dw.conv.weight, model.heads[0].pred.dw.conv.weight)
    assert torch.equal(tuned.backbone.stem.conv.weight, model.backbone.stem.conv.weight)


def test_wrong_checkpoints_are_refused_with_the_keys_named(tmp_path):
    detector_state, classifier_state = cvnets_detector_checkpoint("ref_v1_xx_small.txt", 64, 80)
    path = tmp_path / "xxs.pt"
    torch.save(detector_state, path)
    with pytest.raises(CheckpointMismatchError, match="ssdlite_mobilevit_xxs") as info:
        mobilevt.create_model("ssdlite_mobilevit_xs", weights=str(path))
    assert "mis-shaped" in str(info.value) or "missing" in str(info.value)
    # a classifier checkpoint is not a detector: say how to use it
    classifier_path = tmp_path / "classifier.pt"
    torch.save(classifier_state, classifier_path)
    with pytest.raises(CheckpointMismatchError, match="backbone_weights"):
        mobilevt.create_model("ssdlite_mobilevit_xxs", weights=str(classifier_path))
    # ... which is how it starts a detector's backbone
    detector = mobilevt.create_model("ssdlite_mobilevit_xxs", backbone_weights=str(classifier_path))
    assert torch.equal(detector.backbone.stem.conv.weight, classifier_state["conv_1.block.conv.weight"])
    # a checkpoint with a head missing
    del detector_state["ssd_heads.5.loc_cls_layer.block.conv.bias"]
    torch.save(detector_state, path)
    with pytest.raises(CheckpointMismatchError, match="missing keys.*ssd_heads.5.loc_cls_layer.block.conv.bias"):
        mobilevt.create_model("ssdlite_mobilevit_xxs", weights=str(path))


# ---------------------------------------------------------------------------------------
# preprocessing


def test_preprocessing_resizes_the_whole_photo_as_ml_cvnets():
    import numpy
    from PIL import Image

    from mobilevt.models.ssdlite import CVNETS_V1_SSD_PREPROCESS, CVNETS_V2_SSD_PREPROCESS
    from mobilevt.tasks.detection import DetectionPreprocess

    g = torch.Generator().manual_seed(5)
    photo = (torch.rand(3, 37, 61, generator=g) * 255).to(torch.uint8)
    photo = F.interpolate(photo[None].float(), size=(300, 500), mode="bilinear")[0].round().to(torch.uint8)  # smooth
    array = photo.permute(1, 2, 0).contiguous().numpy()
    # v2 weights: PIL, RGB, bicubic to 320x320 (aspect ratio not kept)
    ours = DetectionPreprocess(CVNETS_V2_SSD_PREPROCESS)(photo)
    pil = torch.from_numpy(numpy.array(Image.fromarray(array).resize((320, 320), Image.BICUBIC)))
    assert ours.shape == (3, 320, 320)
    assert (ours - pil.permute(2, 0, 1).float() / 255).abs().max() <= 1 / 255 + 1e-6
    # v1 weights: OpenCV, BGR, cv2.resize INTER_LINEAR (no antialiasing)
    cv2 = pytest.importorskip("cv2")
    bgr = cv2.resize(array[:, :, ::-1].copy(), (320, 320), interpolation=cv2.INTER_LINEAR)
    ours = DetectionPreprocess(CVNETS_V1_SSD_PREPROCESS)(photo)
    assert (ours - torch.from_numpy(bgr).permute(2, 0, 1).float() / 255).abs().max() <= 1 / 255 + 1e-6


# ---------------------------------------------------------------------------------------
# COCO mAP: pycocotools through mobilevt's wrapper, on hand-made cases

from mobilevt.tasks.detection import evaluate_detection, to_coco_results  # noqa: E402


def coco_map(*args, **kwargs):
    pytest.importorskip("pycocotools")
    from mobilevt.tasks.detection import coco_map

    return coco_map(*args, **kwargs)


def _ground_truth(boxes_per_image, categories=((1, "a"), (2, "b"))):
    images = [{"id": i + 1, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in range(len(boxes_per_image))]
    annotations = [
        {"image_id": i + 1, "category_id": c, "bbox": list(b)}
        for i, boxes in enumerate(boxes_per_image)
        for c, b in boxes
    ]
    return {"images": images, "annotations": annotations, "categories": [{"id": i, "name": n} for i, n in categories]}


def test_coco_map_perfect_detections_score_one():
    gt = _ground_truth([[(1, (10, 10, 40, 40))], [(2, (50, 50, 40, 40)), (1, (5, 60, 30, 30))]])
    found = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
    ]
    metrics = coco_map(gt, found)
    assert metrics["map"] == pytest.approx(1.0) and metrics["map50"] == pytest.approx(1.0)
    assert metrics["mar100"] == pytest.approx(1.0)


def test_coco_map_a_missed_box_by_hand():
    gt = _ground_truth([[(1, (10, 10, 40, 40)), (1, (55, 55, 40, 40))]], categories=((1, "a"),))
    found = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9}]
    metrics = coco_map(gt, found)
    # recall 1/2; precision 1 up to recall 0.5 and none beyond: COCO's 101-point
    # interpolated AP counts the recall points 0.00 .. 0.50, 51 of 101
    assert metrics["mar100"] == pytest.approx(0.5)
    assert metrics["map50"] == pytest.approx(51 / 101)
    assert metrics["map"] == pytest.approx(51 / 101)


def test_coco_map_a_wrong_class_scores_zero_and_nothing_found_too():
    gt = _ground_truth([[(1, (10, 10, 40, 40))]])
    assert coco_map(gt, [{"image_id": 1, "category_id": 2, "bbox": [10, 10, 40, 40], "score": 0.9}])["map"] == 0.0
    metrics = coco_map(gt, [])
    assert metrics["map"] == 0.0 and metrics["mar100"] == 0.0
    assert metrics["map_large"] == -1.0  # no ground truth that large: pycocotools says -1


def test_coco_map_iou_thresholds_by_hand():
    gt = _ground_truth([[(1, (0, 0, 100, 100))]], categories=((1, "a"),))
    # the box covers 62% of the ground truth: IoU 0.62 passes 0.50, 0.55, 0.60, not 0.65 .. 0.95
    metrics = coco_map(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 62], "score": 0.5}])
    assert metrics["map50"] == pytest.approx(1.0)
    assert metrics["map75"] == 0.0
    assert metrics["map"] == pytest.approx(3 / 10)


class _Oracle(torch.nn.Module):
    """A "detector" that returns given boxes per image in evaluation order: the wrapper's
    scaling to pixels, label -> category mapping and image ids are what is tested."""

    def __init__(self, answers, num_classes):
        super().__init__()
        self.answers, self.num_classes, self.calls = answers, num_classes, 0
        self.preprocess = mobilevt.PreprocessConfig((64, 64), 64)

    def forward(self, x):
        return torch.zeros(x.shape[0], 1, 4), torch.zeros(x.shape[0], 1, self.num_classes)

    def postprocess(self, regression, logits, image_size, score_threshold=None):
        from mobilevt.ops import Detections

        out = []
        for _ in range(regression.shape[0]):
            boxes, labels = self.answers[self.calls]
            self.calls += 1
            out.append(
                Detections(
                    torch.tensor(boxes).reshape(-1, 4),
                    torch.full((len(labels),), 0.8),
                    torch.tensor(labels, dtype=torch.int64),
                )
            )
        return out


def _write_coco_folder(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    sizes = [(120, 80), (64, 64), (200, 100)]  # width, height
    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (40 * i, 90, 200)).save(tmp_path / "images" / f"{i}.png")
    # non-contiguous, unsorted category ids: labels follow the sorted ids (3 -> 1, 7 -> 2)
    data = {
        "images": [{"id": 10 + i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in enumerate(sizes)],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [12, 8, 60, 40], "area": 2400, "iscrowd": 0},
            {"id": 2, "image_id": 11, "category_id": 3, "bbox": [0, 0, 32, 16], "area": 512, "iscrowd": 0},
            {"id": 3, "image_id": 12, "category_id": 3, "bbox": [100, 50, 80, 40], "area": 3200, "iscrowd": 0},
            {"id": 4, "image_id": 12, "category_id": 7, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 1},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(data))
    # the same boxes as fractions of each image (x1, y1, x2, y2), with labels 1 = id 3, 2 = id 7
    answers = [
        ([[12 / 120, 8 / 80, 72 / 120, 48 / 80]], [2]),
        ([[0, 0, 0.5, 0.25]], [1]),
        ([[0.5, 0.5, 0.9, 0.9]], [1]),
    ]
    return tmp_path / "images", tmp_path / "instances.json", answers


def test_evaluate_detection_with_an_oracle(tmp_path):
    pytest.importorskip("pycocotools")
    images, annotations, answers = _write_coco_folder(tmp_path)
    result = evaluate_detection(
        _Oracle(answers, 3), images, annotations, batch_size=2, results_json=tmp_path / "results.json"
    )
    assert result.num_images == 3 and not result.failed
    assert result.map == pytest.approx(1.0) and result.map50 == pytest.approx(1.0)
    written = json.loads((tmp_path / "results.json").read_text())
    assert [r["category_id"] for r in written] == [7, 3, 3]
    assert written[0]["image_id"] == 10
    assert written[0]["bbox"] == pytest.approx([12, 8, 60, 40])
    # the crowd box is not a ground truth; labels swapped -> nothing right
    swapped = [(boxes, [3 - label for label in labels]) for boxes, labels in answers]
    assert evaluate_detection(_Oracle(swapped, 3), images, annotations).map == 0.0
    with pytest.raises(ValueError, match="categories"):
        evaluate_detection(_Oracle(answers, 5), images, annotations)


def test_to_coco_results_converts_corner_boxes():
    from mobilevt.ops import Detections

    d = Detections(torch.tensor([[10.0, 20.0, 50.0, 30.0]]), torch.tensor([0.5]), torch.tensor([2]))
    assert to_coco_results(d, 4, [5, 9]) == [
        {"image_id": 4, "category_id": 9, "bbox": [10.0, 20.0, 40.0, 10.0], "score": 0.5}
    ]


def test_detect_and_draw_on_a_photo(tmp_path):
    from PIL import Image

    from mobilevt.tasks.detection import draw_detections

    Image.new("RGB", (150, 90), (10, 200, 30)).save(tmp_path / "photo.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    model = randomize_(mobilevt.create_model("ssdlite_mobilevit_xxs", num_classes=4))
    model.class_names = ["background", "circle", "square", "triangle"]
    results = mobilevt.detect(model, tmp_path, score_threshold=0.0, on_error="report")
    assert [Path(r.source).name for r in results] == ["broken.jpg", "photo.jpg"]
    assert results[0].error and not results[0].objects
    result = results[1]
    assert result.image_size == (90, 150) and 0 < len(result.objects) <= 200
    boxes = result.boxes
    assert boxes[:, [0, 2]].min() >= 0 and boxes[:, [0, 2]].max() <= 150
    assert boxes[:, [1, 3]].min() >= 0 and boxes[:, [1, 3]].max() <= 90
    assert {o.name for o in result.objects} <= {"circle", "square", "triangle"}
    assert result.scores.tolist() == sorted(result.scores.tolist(), reverse=True)
    drawn = draw_detections(mobilevt.load_image(tmp_path / "photo.jpg"), result)
    assert drawn.shape == (3, 90, 150) and drawn.dtype == torch.uint8
    assert not torch.equal(drawn, mobilevt.load_image(tmp_path / "photo.jpg"))

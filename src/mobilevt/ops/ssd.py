"""Single-shot detector (SSD) pieces as ml-cvnets defines them for SSDLite: anchors
(priors), box coding, anchor matching, the multibox loss and post-processing.

Coordinates are fractions of the network input (0..1 across its width and height).
Boxes are corner form ``(x1, y1, x2, y2)`` unless a name says center form
``(cx, cy, w, h)``; anchors are center form. References in ml-cvnets:
``cvnets/anchor_generator/ssd_anchor_generator.py``, ``cvnets/misc/box_utils.py``,
``cvnets/matcher_det/ssd_matcher.py`` (+ ``misc/third_party/ssd_utils.py``),
``loss_fn/detection/ssd_multibox_loss.py`` and ``SingleShotMaskDetector.postprocess_detections``.

The box coding is SSD's (arXiv:1512.02325, Eq. 2) with ml-cvnets' variances 0.1 (centers)
and 0.2 (sizes): the same numbers as torchvision's ``BoxCoder(weights=(10, 10, 5, 5))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, box_iou

from ..errors import InvalidInputError


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Center form ``(cx, cy, w, h)`` to corner form ``(x1, y1, x2, y2)`` (last dimension)."""
    half = boxes[..., 2:] * 0.5
    return torch.cat((boxes[..., :2] - half, boxes[..., :2] + half), dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """Corner form ``(x1, y1, x2, y2)`` to center form ``(cx, cy, w, h)`` (last dimension)."""
    return torch.cat(((boxes[..., :2] + boxes[..., 2:]) * 0.5, boxes[..., 2:] - boxes[..., :2]), dim=-1)


def encode_boxes(
    boxes: torch.Tensor, anchors: torch.Tensor, center_variance: float = 0.1, size_variance: float = 0.2
) -> torch.Tensor:
    """Regression targets of center-form ``boxes`` relative to center-form ``anchors``:
    ``((cx - acx) / aw / cv, (cy - acy) / ah / cv, log(w / aw) / sv, log(h / ah) / sv)``."""
    centers = (boxes[..., :2] - anchors[..., :2]) / anchors[..., 2:] / center_variance
    sizes = torch.log(boxes[..., 2:] / anchors[..., 2:]) / size_variance
    return torch.cat((centers, sizes), dim=-1)


def decode_boxes(
    regression: torch.Tensor, anchors: torch.Tensor, center_variance: float = 0.1, size_variance: float = 0.2
) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`: center-form boxes from regression outputs
    ``[..., N, 4]`` and center-form anchors ``[N, 4]`` (broadcast over leading dimensions)."""
    sizes = torch.exp(regression[..., 2:] * size_variance) * anchors[..., 2:]
    centers = regression[..., :2] * center_variance * anchors[..., 2:] + anchors[..., :2]
    return torch.cat((centers, sizes), dim=-1)


class SSDAnchorGenerator:
    """SSD anchors of every feature map, center form, as fractions of the input.

    Feature map ``i`` (output stride ``output_strides[i]``; ``-1`` = a 1x1 global map)
    gets, at the center ``((x + 0.5) / W, (y + 0.5) / H)`` of each of its cells (rows
    first), ``2 + 2 * len(aspect_ratios[i])`` anchors: a square of side ``s_i``, a square
    of side ``sqrt(s_i * s_{i+1})``, and for each ratio ``r`` the boxes
    ``(s_i * sqrt(r), s_i / sqrt(r))`` and ``(s_i / sqrt(r), s_i * sqrt(r))``, where
    ``s = linspace(min_scale, max_scale, levels + 1)``. Anchors are clipped to [0, 1].

    Duplicate ratios are dropped and the others sorted (ml-cvnets' ``list(set(...))``
    gives that order for its small integer ratios). Arithmetic is float64 then rounded
    to float32, as ml-cvnets builds them from Python floats.
    """

    def __init__(
        self,
        output_strides: Sequence[int],
        aspect_ratios: Sequence[Sequence[float]],
        min_scale: float = 0.1,
        max_scale: float = 1.05,
        clip: bool = True,
    ) -> None:
        if len(output_strides) != len(aspect_ratios):
            raise InvalidInputError(
                f"one aspect-ratio list per output stride: got {len(output_strides)} strides and "
                f"{len(aspect_ratios)} aspect-ratio lists"
            )
        if not 0.0 < min_scale < max_scale:
            raise InvalidInputError(f"need 0 < min_scale < max_scale, got {min_scale} and {max_scale}")
        self.output_strides = tuple(int(s) for s in output_strides)
        self.aspect_ratios = tuple(tuple(sorted(set(ar))) for ar in aspect_ratios)
        for ratios in self.aspect_ratios:
            if any(r <= 0 for r in ratios):
                raise InvalidInputError(f"aspect ratios must be positive, got {ratios}")
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.clip = bool(clip)
        scales = np.linspace(min_scale, max_scale, len(self.output_strides) + 1)
        # (small square side, large square side) of each level, float64 as ml-cvnets
        self.sizes = tuple(
            (float(scales[i]), float((scales[i] * scales[i + 1]) ** 0.5)) for i in range(len(self.output_strides))
        )
        self._cache: dict[tuple[tuple[int, int], ...], torch.Tensor] = {}

    def __repr__(self) -> str:
        return (
            f"SSDAnchorGenerator(output_strides={self.output_strides}, aspect_ratios={self.aspect_ratios}, "
            f"min_scale={self.min_scale}, max_scale={self.max_scale}, clip={self.clip})"
        )

    def num_anchors_per_location(self) -> list[int]:
        return [2 + 2 * len(ratios) for ratios in self.aspect_ratios]

    def feature_map_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(height, width) of each level's map for an input of ``height`` x ``width``:
        ``ceil(size / stride)`` (stride-2 convolutions with "same" padding), 1x1 for -1."""
        return [
            (1, 1) if s == -1 else (int(math.ceil(height / s)), int(math.ceil(width / s))) for s in self.output_strides
        ]

    def level_anchors(self, level: int, fm_height: int, fm_width: int) -> torch.Tensor:
        """Anchors ``[fm_height * fm_width * A, 4]`` of one level, in the order the SSD
        heads emit their predictions (row, column, anchor)."""
        small, large = self.sizes[level]
        shapes = [(small, small), (large, large)]
        for ratio in self.aspect_ratios[level]:
            root = ratio**0.5
            shapes += [(small * root, small / root), (small / root, small * root)]
        wh = torch.tensor(shapes, dtype=torch.float64)  # [A, 2]
        cy = (torch.arange(fm_height, dtype=torch.float64) + 0.5) / fm_height
        cx = (torch.arange(fm_width, dtype=torch.float64) + 0.5) / fm_width
        centers = torch.stack(torch.meshgrid(cx, cy, indexing="xy"), dim=-1).reshape(-1, 1, 2)  # rows first
        anchors = torch.cat(
            (centers.expand(-1, wh.shape[0], 2), wh.unsqueeze(0).expand(centers.shape[0], -1, 2)), dim=-1
        ).reshape(-1, 4)
        anchors = anchors.to(torch.float32)
        return anchors.clamp(0.0, 1.0) if self.clip else anchors

    def __call__(self, feature_sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """All anchors ``[N, 4]`` (float32, CPU) of feature maps of these (height, width),
        one per level, in order; cached."""
        key = tuple((int(h), int(w)) for h, w in feature_sizes)
        if len(key) != len(self.output_strides):
            raise InvalidInputError(
                f"one feature map size per level: {len(self.output_strides)} levels, got {len(key)} sizes"
            )
        if key not in self._cache:
            self._cache[key] = torch.cat([self.level_anchors(i, h, w) for i, (h, w) in enumerate(key)])
        return self._cache[key]

    def for_image(self, height: int, width: int) -> torch.Tensor:
        """Anchors for an input of ``height`` x ``width`` whose maps follow
        :meth:`feature_map_sizes` (ml-cvnets' rule; exact for MobileViT v1 at any size
        and for every backbone at multiples of 64 such as 320; ``SSDLite.anchors`` measures
        the real maps)."""
        return self(self.feature_map_sizes(height, width))


def match_anchors(
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    anchors: torch.Tensor,
    iou_threshold: float = 0.5,
    center_variance: float = 0.1,
    size_variance: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD's anchor assignment: labels ``[N]`` and regression targets ``[N, 4]``.

    Each anchor takes the ground-truth box it overlaps most (IoU, corner form), labelled
    background (0) below ``iou_threshold``; then every ground-truth box claims the anchor
    it overlaps most, whatever the IoU (a later box wins an anchor two boxes claim, as in
    ml-cvnets' loop). Background anchors get zero regression targets.

    Args:
        gt_boxes: ``[G, 4]`` corner form, fractions of the input.
        gt_labels: ``[G]`` class indices, 1 .. C-1 (0 is the background).
        anchors: ``[N, 4]`` center form.
    """
    num_anchors = anchors.shape[0]
    if gt_boxes.numel() == 0:
        return (
            torch.zeros(num_anchors, dtype=torch.int64, device=anchors.device),
            torch.zeros(num_anchors, 4, dtype=anchors.dtype, device=anchors.device),
        )
    gt_boxes = gt_boxes.to(anchors.dtype)
    iou = box_iou(gt_boxes, box_cxcywh_to_xyxy(anchors))  # [G, N]
    best_iou, best_gt = iou.max(dim=0)
    best_anchor = iou.argmax(dim=1)
    for index in range(best_anchor.shape[0]):  # G is small; the loop fixes who wins a shared anchor
        best_gt[best_anchor[index]] = index
    best_iou[best_anchor] = 2.0
    labels = gt_labels.to(torch.int64)[best_gt]
    positive = best_iou >= iou_threshold
    labels = torch.where(positive, labels, torch.zeros_like(labels))
    matched = box_xyxy_to_cxcywh(gt_boxes[best_gt])
    # a zero-size box would give log(0); the data pipeline drops them (SanitizeBoundingBoxes)
    matched = torch.cat((matched[:, :2], matched[:, 2:].clamp(min=1e-6)), dim=1)
    targets = encode_boxes(matched, anchors, center_variance, size_variance)
    targets = torch.where(positive.unsqueeze(1), targets, torch.zeros_like(targets))
    return labels, targets


def hard_negative_mining(background_loss: torch.Tensor, labels: torch.Tensor, neg_pos_ratio: int = 3) -> torch.Tensor:
    """Anchors that enter the classification loss ``[B, N]``: every positive, and per
    image the ``neg_pos_ratio`` x (its positives) background anchors with the largest
    ``background_loss`` (the hardest negatives). An image without positives adds none."""
    positive = labels > 0
    num_negative = positive.sum(dim=1, keepdim=True) * neg_pos_ratio
    loss = background_loss.clone()
    loss[positive] = -math.inf
    _, order = loss.sort(dim=1, descending=True)
    _, rank = order.sort(dim=1)
    return positive | (rank < num_negative)


class SSDLoss(NamedTuple):
    total: torch.Tensor
    box: torch.Tensor
    classification: torch.Tensor


def ssd_multibox_loss(
    box_regression: torch.Tensor,
    class_logits: torch.Tensor,
    labels: torch.Tensor,
    regression_targets: torch.Tensor,
    neg_pos_ratio: int = 3,
    label_smoothing: float = 0.0,
) -> SSDLoss:
    """SSD multibox loss: smooth L1 on the positives' box regression plus cross-entropy on
    the positives and the hard negatives (:func:`hard_negative_mining`), both summed and
    divided by the number of positives in the batch (at least 1).

    Args:
        box_regression: ``[B, N, 4]`` predicted regression.
        class_logits: ``[B, N, C]`` class logits, class 0 the background.
        labels: ``[B, N]`` target classes from :func:`match_anchors`.
        regression_targets: ``[B, N, 4]`` from :func:`match_anchors`.
    """
    class_logits = class_logits.float()
    box_regression = box_regression.float()
    positive = labels > 0
    num_positive = positive.sum().clamp(min=1).to(class_logits.dtype)
    box_loss = F.smooth_l1_loss(box_regression[positive], regression_targets[positive].float(), reduction="sum")
    with torch.no_grad():
        background_loss = -F.log_softmax(class_logits, dim=2)[:, :, 0]
        mask = hard_negative_mining(background_loss, labels, neg_pos_ratio)
    class_loss = F.cross_entropy(class_logits[mask], labels[mask], reduction="sum", label_smoothing=label_smoothing)
    return SSDLoss((box_loss + class_loss) / num_positive, box_loss / num_positive, class_loss / num_positive)


class Detections(NamedTuple):
    """Detections of one image: ``boxes`` ``[K, 4]`` corner form, ``scores`` ``[K]``,
    ``labels`` ``[K]`` (1 .. C-1), highest score first."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def postprocess_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    score_threshold: float = 0.01,
    nms_iou_threshold: float = 0.5,
    top_k: int = 400,
    max_detections: int = 200,
) -> list[Detections]:
    """Per image: for each object class, the boxes scoring above ``score_threshold``
    (at most ``top_k`` best), then class-wise non-maximum suppression
    (``torchvision.ops.batched_nms`` at ``nms_iou_threshold``) and the ``max_detections``
    best. ml-cvnets' SSD post-processing; COCO evaluation uses threshold 0.01.

    Args:
        boxes: ``[B, N, 4]`` decoded boxes, corner form.
        scores: ``[B, N, C]`` class probabilities (softmax), class 0 the background.
    """
    results: list[Detections] = []
    num_classes = scores.shape[-1]
    for image in range(boxes.shape[0]):
        kept_boxes: list[torch.Tensor] = []
        kept_scores: list[torch.Tensor] = []
        kept_labels: list[torch.Tensor] = []
        for label in range(1, num_classes):
            class_scores = scores[image, :, label]
            keep = class_scores > score_threshold
            class_scores = class_scores[keep]
            if class_scores.numel() == 0:
                continue
            class_scores, order = class_scores.topk(min(top_k, class_scores.numel()))
            kept_boxes.append(boxes[image][keep][order])
            kept_scores.append(class_scores)
            kept_labels.append(torch.full_like(order, label))
        if not kept_scores:
            results.append(
                Detections(
                    boxes.new_zeros((0, 4)),
                    scores.new_zeros((0,)),
                    torch.zeros(0, dtype=torch.int64, device=boxes.device),
                )
            )
            continue
        all_boxes = torch.cat(kept_boxes)
        all_scores = torch.cat(kept_scores)
        all_labels = torch.cat(kept_labels)
        keep = batched_nms(all_boxes, all_scores, all_labels, nms_iou_threshold)[:max_detections]
        results.append(Detections(all_boxes[keep], all_scores[keep], all_labels[keep]))
    return results

"""Tensor operations of the task heads (SSD anchors, box coding, matching, loss, NMS)."""

from .ssd import (
    Detections,
    SSDAnchorGenerator,
    SSDLoss,
    box_cxcywh_to_xyxy,
    box_xyxy_to_cxcywh,
    decode_boxes,
    encode_boxes,
    hard_negative_mining,
    match_anchors,
    postprocess_detections,
    ssd_multibox_loss,
)

__all__ = [
    "Detections",
    "SSDAnchorGenerator",
    "SSDLoss",
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "decode_boxes",
    "encode_boxes",
    "hard_negative_mining",
    "match_anchors",
    "postprocess_detections",
    "ssd_multibox_loss",
]

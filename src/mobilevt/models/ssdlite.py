"""SSDLite object detectors with MobileViT backbones, as apple/ml-cvnets builds them
(``cvnets/models/detection/ssd.py``, ``config/detection/ssd_coco/mobilevit*.yaml``).

The backbone is a :class:`~mobilevt.models.mobilevit.MobileViT` without its classifier
(and without v1's final 1x1 expansion, which ml-cvnets deletes too). Its stride-16 and
stride-32 stage outputs, then four extra separable stride-2 layers (strides 64 .. 256)
and a global-pool 1x1 map, each feed one SSDLite head: an optional 1x1 projection and a
separable prediction conv (``layers.ssd_heads``). Anchors, box coding, matching, loss and
post-processing are in :mod:`mobilevt.ops.ssd`.

``forward`` returns the raw ``(box_regression [B, N, 4], class_logits [B, N, C])`` for the
``N`` anchors of the input size (:meth:`SSDLite.anchors`); class 0 is the background, so
``num_classes`` counts it (COCO: 80 + 1 = 81). :meth:`SSDLite.postprocess` decodes and
runs NMS; :func:`mobilevt.detect` does everything from photos to boxes in pixels.

Every MobileViT classifier in the registry gets a detector ``ssdlite_<backbone>``;
ml-cvnets published COCO weights for MobileViT v1 (XXS, XS, S) and v2 (0.5 .. 2.0).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from ..layers import fuse_batchnorms_
from ..layers.ssd_heads import GlobalPoolProj, SeparableConvNormReLU, SeparablePredictor, SSDHead
from ..model_kind import ModelKind
from ..ops.ssd import (
    Detections,
    SSDAnchorGenerator,
    box_cxcywh_to_xyxy,
    decode_boxes,
    postprocess_detections,
)
from ..registry import ModelEntry, build_model, register_model
from ..weights.entries import PreprocessConfig, Weights
from ..weights.ssdlite_layouts import SSDLITE_CHECKPOINTS


@dataclass(frozen=True)
class SSDLiteConfig:
    """Detector settings; the defaults are ml-cvnets' published COCO ones.

    ``output_strides``: the feature maps that get a head, in order: 8, 16 or 32 (a backbone
    stage), then doubling strides (extra stride-2 layers), and optionally ``-1`` last (a
    1x1 global map). ``aspect_ratios`` and ``proj_channels`` have one entry per map.
    """

    output_strides: tuple[int, ...] = (16, 32, 64, 128, 256, -1)
    aspect_ratios: tuple[tuple[float, ...], ...] = ((2, 3), (2, 3), (2, 3), (2, 3), (2, 3), (2,))
    proj_channels: tuple[int, ...] = (512, 256, 256, 128, 128, 64)
    min_scale: float = 0.1
    max_scale: float = 1.05
    center_variance: float = 0.1
    size_variance: float = 0.2
    # training: an anchor is positive at IoU >= iou_threshold with a box
    iou_threshold: float = 0.5
    # inference (ml-cvnets' COCO evaluation settings)
    score_threshold: float = 0.01
    nms_iou_threshold: float = 0.5
    top_k: int = 400
    max_detections: int = 200

    def __post_init__(self) -> None:
        n = len(self.output_strides)
        if len(self.aspect_ratios) != n or len(self.proj_channels) != n:
            raise InvalidInputError(
                f"SSDLiteConfig needs one aspect-ratio list and one proj_channels value per output stride: "
                f"{n} strides, {len(self.aspect_ratios)} aspect-ratio lists, {len(self.proj_channels)} proj_channels"
            )
        previous = 0
        for i, stride in enumerate(self.output_strides):
            if stride == -1:
                if i != n - 1:
                    raise InvalidInputError("output stride -1 (the global 1x1 map) can only be the last one")
            elif stride <= 32:
                if stride not in (8, 16, 32) or stride <= previous:
                    raise InvalidInputError(
                        f"backbone output strides must be increasing values of 8, 16, 32, got {self.output_strides}"
                    )
            elif stride != 2 * previous:
                raise InvalidInputError(
                    f"each output stride above 32 comes from a stride-2 layer on the previous map: expected "
                    f"{2 * previous} after {previous}, got {stride} ({self.output_strides})"
                )
            previous = stride
        if not any(0 < s <= 32 for s in self.output_strides):
            raise InvalidInputError(
                f"at least one output stride must be a backbone map (8, 16 or 32), got {self.output_strides}"
            )


CONFIG_FIELDS = frozenset(f.name for f in fields(SSDLiteConfig))


class SSDLite(nn.Module):
    """SSDLite detector on a MobileViT backbone.

    Args:
        backbone: a MobileViT (``forward_feature_pyramid`` and ``feature_info``); its
            classifier and final 1x1 expansion are removed.
        num_classes: class logits per anchor, background (index 0) included.
        config: heads, anchors, box coding and post-processing settings.
    """

    kind = ModelKind.DETECTION  # what export, the CLI and training dispatch on

    # Python-side helpers that TorchScript need not see (the anchors ship beside exports)
    __jit_ignored_attributes__ = ["config", "anchor_generator", "_feature_sizes"]

    def __init__(self, backbone: nn.Module, num_classes: int = 81, config: SSDLiteConfig = SSDLiteConfig()) -> None:
        super().__init__()
        if num_classes < 2:
            raise InvalidInputError(f"num_classes counts the background too: at least 2, got {num_classes}")
        self.config = config
        self.num_classes = num_classes
        self.backbone = backbone
        # ml-cvnets deletes the classifier and v1's conv_1x1_exp from the detection encoder
        if hasattr(backbone, "final_conv"):
            backbone.final_conv = nn.Identity()
        if hasattr(backbone, "head"):
            backbone.head = nn.Identity()
        info = backbone.feature_info
        levels: list[int] = []
        extra: list[nn.Module] = []
        in_channels: list[int] = []
        channels = 0
        for stride, proj in zip(config.output_strides, config.proj_channels):
            if 0 < stride <= 32:
                matches = [i for i, f in enumerate(info) if f["stride"] == stride]
                if not matches:
                    raise InvalidInputError(
                        f"the backbone has no stride-{stride} feature map (its strides: "
                        f"{[f['stride'] for f in info]}); build it with output_stride=32"
                    )
                levels.append(matches[-1])
                channels = info[matches[-1]]["channels"]
            elif stride == -1:
                extra.append(GlobalPoolProj(channels, proj))
                channels = proj
            else:
                extra.append(SeparableConvNormReLU(channels, proj, 3, stride=2))
                channels = proj
            in_channels.append(channels)
        self.backbone_levels: list[int] = levels
        self.extra_layers = nn.ModuleList(extra)
        self.anchor_generator = SSDAnchorGenerator(
            config.output_strides, config.aspect_ratios, config.min_scale, config.max_scale
        )
        self.heads = nn.ModuleList(
            SSDHead(c, a, num_classes, proj, kernel_size=1 if stride == -1 else 3)
            for c, a, proj, stride in zip(
                in_channels,
                self.anchor_generator.num_anchors_per_location(),
                config.proj_channels,
                config.output_strides,
            )
        )
        self._feature_sizes: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._init_weights()

    def _init_weights(self) -> None:
        # ml-cvnets: xavier-uniform convs (zero bias) in the extra layers and heads ...
        for module in [*self.extra_layers.modules(), *self.heads.modules()]:
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # ... except the prediction convs, drawn small (normal, std 0.01) as torchvision's
        # SSD heads are: xavier gives logits of several units, a multibox loss near 20 at
        # the start and, from a random backbone, a detector that learns far more slowly
        # (ml-cvnets always starts from an ImageNet backbone). Loaded weights replace it.
        for head in self.heads:
            last = head.pred.pw if isinstance(head.pred, SeparablePredictor) else head.pred
            nn.init.normal_(last.weight, std=0.01)
            nn.init.zeros_(last.bias)

    @torch.jit.export
    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps the heads read: backbone stages, then the extra layers."""
        features = self.backbone.forward_feature_pyramid(x)
        maps: list[torch.Tensor] = [features[i] for i in self.backbone_levels]
        y = maps[-1]
        for layer in self.extra_layers:
            y = layer(y)
            maps.append(y)
        return maps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(box_regression [B, N, 4], class_logits [B, N, num_classes])`` for the
        anchors of this input size, in :meth:`anchors` order."""
        maps = self.forward_maps(x)
        regressions: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []
        for i, head in enumerate(self.heads):
            regression, classes = head(maps[i])
            regressions.append(regression)
            logits.append(classes)
        return torch.cat(regressions, dim=1), torch.cat(logits, dim=1)

    @torch.jit.unused
    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(height, width) of every head's map for an input of ``height`` x ``width``,
        measured once per size with a batch-1 dry run (MobileViTv2 blocks round their maps
        up to the patch grid, so no stride formula fits every backbone)."""
        key = (int(height), int(width))
        if key not in self._feature_sizes:
            parameter = next(self.parameters())
            was_training = self.training
            try:
                self.eval()  # no BatchNorm statistics update
                with torch.no_grad():
                    maps = self.forward_maps(torch.zeros(1, 3, *key, device=parameter.device, dtype=parameter.dtype))
            finally:
                self.train(was_training)
            self._feature_sizes[key] = [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]
        return self._feature_sizes[key]

    @torch.jit.unused
    def anchors(self, height: int, width: int) -> torch.Tensor:
        """Anchors ``[N, 4]`` (center form, fractions of the input, float32 on the CPU)
        for an input of ``height`` x ``width``, in the order of ``forward``'s outputs."""
        return self.anchor_generator(self.feature_sizes(height, width))

    @torch.jit.unused
    def decode(self, box_regression: torch.Tensor, class_logits: torch.Tensor, image_size: tuple[int, int]):
        """``forward``'s outputs to corner-form boxes ``[B, N, 4]`` (fractions of the
        input) and class probabilities ``[B, N, C]`` (softmax)."""
        anchors = self.anchors(*image_size).to(box_regression.device, box_regression.dtype)
        boxes = box_cxcywh_to_xyxy(
            decode_boxes(box_regression, anchors, self.config.center_variance, self.config.size_variance)
        )
        return boxes, class_logits.softmax(dim=-1)

    @torch.jit.unused
    def postprocess(
        self,
        box_regression: torch.Tensor,
        class_logits: torch.Tensor,
        image_size: tuple[int, int],
        score_threshold: float | None = None,
    ) -> list[Detections]:
        """Decode, keep scores above ``score_threshold`` (default: the config's 0.01),
        class-wise NMS: per image, boxes as fractions of the input, clipped to it."""
        boxes, scores = self.decode(box_regression, class_logits, image_size)
        config = self.config
        results = postprocess_detections(
            boxes,
            scores,
            config.score_threshold if score_threshold is None else score_threshold,
            config.nms_iou_threshold,
            config.top_k,
            config.max_detections,
        )
        # clipped after NMS, so that NMS sees ml-cvnets' boxes
        return [Detections(d.boxes.clamp(0.0, 1.0), d.scores, d.labels) for d in results]

    @torch.jit.ignore
    def fuse(self) -> SSDLite:
        """Fold every BatchNorm into its convolution for inference, in place."""
        return fuse_batchnorms_(self)


# ---------------------------------------------------------------------------------------
# Registered variants and published weights

# ml-cvnets v1 detection trained on OpenCV images: BGR, cv2.resize (bilinear, no
# antialiasing) of the whole image to 320x320, pixels in [0, 1].
CVNETS_V1_SSD_PREPROCESS = PreprocessConfig((320, 320), 320, "bilinear", channel_order="BGR", antialias=False)
# ml-cvnets v2 (CVNets 0.2+): PIL (RGB), bicubic resize to 320x320.
CVNETS_V2_SSD_PREPROCESS = PreprocessConfig((320, 320), 320, "bicubic", channel_order="RGB")
# a detector trained here: RGB, antialiased bilinear
SSDLITE_PREPROCESS = PreprocessConfig((320, 320), 320, "bilinear", channel_order="RGB")

_V1_URL = "https://docs-assets.developer.apple.com/ml-research/models/cvnets/detection/ssd_mobilevit_{}_320.pt"
_V2_URL = (
    "https://docs-assets.developer.apple.com/ml-research/models/cvnets-v2/detection/mobilevitv2/"
    "coco-ssd-mobilevitv2-{}.pt"
)
# backbone: (weights URL, published params M, COCO val mAP@[.5:.95] of the checkpoint, where the figure is from)
PUBLISHED: dict[str, tuple[str, float, float, str]] = {
    "mobilevit_xxs": (_V1_URL.format("xxs"), 1.8, 19.9, "MobileViT paper Table 3 / ml-cvnets v0.1 model zoo"),
    "mobilevit_xs": (_V1_URL.format("xs"), 2.7, 24.8, "MobileViT paper Table 3 / ml-cvnets v0.1 model zoo"),
    "mobilevit_s": (_V1_URL.format("s"), 5.7, 27.9, "ml-cvnets v0.1 model zoo (the MobileViT paper reports 27.7)"),
    "mobilevitv2_050": (_V2_URL.format("0.5"), 2.0, 21.24, "ml-cvnets model zoo"),
    "mobilevitv2_075": (_V2_URL.format("0.75"), 3.6, 24.57, "ml-cvnets model zoo"),
    "mobilevitv2_100": (_V2_URL.format("1.0"), 5.6, 26.47, "ml-cvnets model zoo"),
    "mobilevitv2_125": (_V2_URL.format("1.25"), 8.2, 27.85, "ml-cvnets model zoo"),
    "mobilevitv2_150": (_V2_URL.format("1.5"), 11.3, 28.83, "ml-cvnets model zoo"),
    "mobilevitv2_175": (_V2_URL.format("1.75"), 14.9, 29.52, "ml-cvnets model zoo"),
    "mobilevitv2_200": (_V2_URL.format("2.0"), 19.1, 30.21, "ml-cvnets model zoo"),
}


def _builder(backbone_name: str):
    def build(num_classes: int = 81, config: SSDLiteConfig | None = None, **kwargs: Any) -> SSDLite:
        """SSDLite on ``backbone_name``; ``SSDLiteConfig`` fields can be given as keywords,
        the other keywords go to the backbone (``drop_path_rate`` ...)."""
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in CONFIG_FIELDS}
        config = replace(config or SSDLiteConfig(), **settings)
        backbone = build_model(backbone_name, num_classes=0, **kwargs)
        model = SSDLite(backbone, num_classes=num_classes, config=config)
        model.backbone_name = backbone_name
        return model

    return build


def _register(name: str, backbone_name: str) -> None:
    weights: tuple[Weights, ...] = ()
    params = None
    preprocess = SSDLITE_PREPROCESS
    if backbone_name in PUBLISHED:
        url, params, coco_map, source = PUBLISHED[backbone_name]
        preprocess = CVNETS_V1_SSD_PREPROCESS if backbone_name.startswith("mobilevit_") else CVNETS_V2_SSD_PREPROCESS
        weights = (
            Weights(
                name,
                "cvnets_coco",
                url,
                "cvnets",
                preprocess,
                coco_map,
                num_classes=81,
                dataset="COCO 2017",
                metric="mAP@[.5:.95] %",
                paper_source=f"COCO val2017 mAP@[.5:.95] {coco_map} ({source})",
            ),
        )
    register_model(
        ModelEntry(
            name=name,
            builder=_builder(backbone_name),
            family="ssdlite",
            default_preprocess=preprocess,
            weights=weights,
            published_params_m=params,
            published_macs_g=None,
            preprocess_by_layout=(("cvnets", preprocess),),
            kind=ModelKind.DETECTION,
            checkpoints=SSDLITE_CHECKPOINTS,
            backbone=backbone_name,
        )
    )


def published_map(name: str) -> float | None:
    """COCO val2017 mAP@[.5:.95] ml-cvnets published for detector ``name``, if any."""
    backbone = name[len("ssdlite_") :] if name.startswith("ssdlite_") else name
    return PUBLISHED[backbone][2] if backbone in PUBLISHED else None


# name -> backbone classifier: every registered detector, written out
SSDLITE_MODELS = {
    "ssdlite_mobilevit_xxs": "mobilevit_xxs",
    "ssdlite_mobilevit_xs": "mobilevit_xs",
    "ssdlite_mobilevit_s": "mobilevit_s",
    "ssdlite_mobilevitv2_050": "mobilevitv2_050",
    "ssdlite_mobilevitv2_075": "mobilevitv2_075",
    "ssdlite_mobilevitv2_100": "mobilevitv2_100",
    "ssdlite_mobilevitv2_125": "mobilevitv2_125",
    "ssdlite_mobilevitv2_150": "mobilevitv2_150",
    "ssdlite_mobilevitv2_175": "mobilevitv2_175",
    "ssdlite_mobilevitv2_200": "mobilevitv2_200",
    "ssdlite_mobilevitv3_xxs": "mobilevitv3_xxs",
    "ssdlite_mobilevitv3_xs": "mobilevitv3_xs",
    "ssdlite_mobilevitv3_s": "mobilevitv3_s",
    "ssdlite_mobilevitv3_xxs_l2": "mobilevitv3_xxs_l2",
    "ssdlite_mobilevitv3_xs_l2": "mobilevitv3_xs_l2",
    "ssdlite_mobilevitv3_s_l2": "mobilevitv3_s_l2",
    "ssdlite_mobilevitv3_050": "mobilevitv3_050",
    "ssdlite_mobilevitv3_075": "mobilevitv3_075",
    "ssdlite_mobilevitv3_100": "mobilevitv3_100",
}

for _name, _backbone in SSDLITE_MODELS.items():
    _register(_name, _backbone)

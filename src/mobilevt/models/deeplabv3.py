"""DeepLabV3 semantic segmentation on MobileViT backbones (v1, v2 and any later
``mobilevit*`` classifier in the registry), as ml-cvnets builds it.

The backbone is the classifier without its last 1x1 expansion conv and head, run at
output stride 16 or 8 (the last stages dilate instead of striding); an ASPP head
(:class:`mobilevt.layers.aspp.ASPP`) on the last stage's features and a 1x1 classifier
give per-pixel class logits at the output stride, as transformers'
``MobileViTForSemanticSegmentation`` returns them (``upsample=True`` resizes them to the
input). An optional auxiliary head on the fourth stage (ml-cvnets ``use_aux_head``)
adds a training loss; inference never runs it.

Each classifier ``<name>`` is registered as ``deeplabv3_<name>``: ``deeplabv3_mobilevit_s``,
``deeplabv3_mobilevitv2_100`` ... with the published settings of its family
(v1: ASPP 256 channels; v2: 512; both output stride 16 and rates (6, 12, 18)).

Papers: DeepLabV3, arXiv:1706.05587; MobileViT, arXiv:2110.02178; MobileViTv2, arXiv:2206.02680.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from ..layers import ConvNormReLU, MobileViTV2Block, cvnets_init_, fuse_batchnorms_
from ..layers.aspp import ASPP
from ..model_kind import ModelKind
from ..registry import ModelEntry, get_model_entry, register_model
from ..weights.deeplabv3_layouts import DEEPLABV3_CHECKPOINTS
from ..weights.entries import PreprocessConfig, Weights
from .mobilevit import ARCHS as BACKBONE_ARCHS  # importing it registers the backbones first


class DeepLabV3(nn.Module):
    """DeepLabV3: a dilated backbone, ASPP and a 1x1 classifier.

    Args:
        backbone: a MobileViT classifier built with ``num_classes=0`` at the wanted output
            stride; its ``final_conv`` is dropped (ml-cvnets' segmentation models do not
            use the 1x1 expansion before the classifier).
        num_classes: segmentation classes (PASCAL VOC: 21 with background).
        aspp_channels: ASPP branch and output channels.
        atrous_rates: dilations of ASPP's three 3x3 branches.
        aspp_dropout: ``Dropout2d`` after the ASPP projection.
        classifier_dropout: ``Dropout2d`` before the classifier (transformers has one,
            ml-cvnets' DeepLabV3 head does not).
        aux_head: add ml-cvnets' auxiliary head on the fourth stage (3x3 ConvNormReLU to
            ``max(channels // 4, 128)``, dropout, 1x1 classifier) for training.
        aux_dropout: its dropout.
        upsample: ``forward`` returns logits resized (bilinear) to the input size instead
            of at the output stride.
    """

    kind = ModelKind.SEGMENTATION  # what export, the CLI and training dispatch on

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 21,
        aspp_channels: int = 256,
        atrous_rates: Sequence[int] = (6, 12, 18),
        aspp_dropout: float = 0.1,
        classifier_dropout: float = 0.0,
        aux_head: bool = False,
        aux_dropout: float = 0.1,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise InvalidInputError(f"num_classes must be at least 1, got {num_classes}")
        backbone.final_conv = nn.Identity()
        self.backbone = backbone
        self.num_classes = num_classes
        self.output_stride = int(backbone.feature_info[-1]["stride"])
        self.upsample = upsample
        self.transformers_v2_dilation = False  # set by build_deeplabv3 (transformers-parity mode)
        self.in_chans = int(backbone.in_chans)
        self.feature_info = backbone.feature_info
        in_channels = int(backbone.feature_info[-1]["channels"])
        self.aspp = ASPP(in_channels, aspp_channels, atrous_rates, aspp_dropout)
        self.classifier_drop = nn.Dropout2d(classifier_dropout)
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)
        self.aux_head = None
        if aux_head:
            aux_in = int(backbone.feature_info[3]["channels"])
            inner = max(aux_in // 4, 128)
            self.aux_head = nn.Sequential(
                ConvNormReLU(aux_in, inner, 3), nn.Dropout2d(aux_dropout), nn.Conv2d(inner, num_classes, 1)
            )
        self._init_head()

    def _init_head(self) -> None:
        # kaiming-normal convs and unit BatchNorm (ml-cvnets) for ASPP and the auxiliary
        # conv; the classifiers start small (std 0.01) instead: with few classes a
        # fan-out-scaled init gives logits in the tens and a first loss near 10
        heads = [self.aspp] + ([self.aux_head] if self.aux_head is not None else [])
        for head in heads:
            cvnets_init_(head)
        for classifier in self._classifiers():
            nn.init.normal_(classifier.weight, std=0.01)
            nn.init.zeros_(classifier.bias)

    def _classifiers(self) -> list:
        return [self.classifier] + ([self.aux_head[2]] if self.aux_head is not None else [])

    def reset_classifier(self, num_classes: int) -> None:
        """New, freshly initialised classifiers (main and auxiliary) for ``num_classes``."""
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(self.classifier.in_channels, num_classes, 1)
        if self.aux_head is not None:
            self.aux_head[2] = nn.Conv2d(self.aux_head[2].in_channels, num_classes, 1)
        for classifier in self._classifiers():
            nn.init.normal_(classifier.weight, std=0.01)
            nn.init.zeros_(classifier.bias)

    @torch.jit.ignore
    def arch_options(self) -> dict:
        """The ``build_deeplabv3`` options that shape this model beyond its backbone name."""
        options = {
            "output_stride": self.output_stride,
            "aspp_channels": self.classifier.in_channels,
            "atrous_rates": list(self.aspp.atrous_rates),
            "aux_head": self.aux_head is not None,
        }
        if self.transformers_v2_dilation:
            options["transformers_v2_dilation"] = True
        return options

    @torch.jit.ignore
    def fuse(self) -> DeepLabV3:
        """Fold every BatchNorm into its convolution for inference, in place (see
        :meth:`mobilevt.models.MobileViT.fuse`); returns the model."""
        return fuse_batchnorms_(self)

    @torch.jit.export
    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits at the output stride and, with an auxiliary head, its logits at the
        fourth stage's stride (else ``None``); neither is upsampled."""
        features = self.backbone.forward_feature_pyramid(x)
        logits = self.classifier(self.classifier_drop(self.aspp(features[-1])))
        aux: torch.Tensor | None = None
        if self.aux_head is not None:
            aux = self.aux_head(features[3])
        return logits, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, num_classes, H / output_stride, W / output_stride]`` (the
        stride rounds up, as the strided convolutions do), or ``[B, num_classes, H, W]``
        with ``upsample``.

        In training mode with an auxiliary head, eager ``forward`` returns
        ``(logits, aux_logits)`` as ml-cvnets does (one call, so DistributedDataParallel
        sees every parameter used); TorchScript and exports always get the logits alone."""
        features = self.backbone.forward_feature_pyramid(x)
        logits = self.classifier(self.classifier_drop(self.aspp(features[-1])))
        if not torch.jit.is_scripting():
            if self.training and self.aux_head is not None and not torch.jit.is_tracing():
                return logits, self.aux_head(features[3])  # type: ignore[return-value]
        if self.upsample:
            logits = F.interpolate(logits, size=[x.shape[2], x.shape[3]], mode="bilinear", align_corners=False)
        return logits


def _undilate_v2_local_convs(backbone: nn.Module) -> None:
    # transformers' MobileViTV2 does not dilate the v2 block's depthwise 3x3 conv in
    # dilated stages (ml-cvnets, where the weights were trained, does)
    for module in backbone.modules():
        if type(module) is MobileViTV2Block:  # not the v3 blocks built on it
            conv = module.local_kxk.conv
            conv.dilation = (1, 1)
            conv.padding = (1, 1)


def build_deeplabv3(
    backbone_name: str,
    num_classes: int = 21,
    output_stride: int = 16,
    aspp_channels: int | None = None,
    atrous_rates: Sequence[int] | None = None,
    aspp_dropout: float = 0.1,
    classifier_dropout: float = 0.0,
    aux_head: bool = False,
    aux_dropout: float = 0.1,
    upsample: bool = False,
    transformers_v2_dilation: bool = False,
    **backbone_kwargs,
) -> DeepLabV3:
    """DeepLabV3 on the registered classifier ``backbone_name`` (random weights).

    ``aspp_channels`` defaults to 256 for MobileViT v1 (and v1-based v3) backbones and 512 otherwise, and
    ``atrous_rates`` to (6, 12, 18) at output stride 16 and (12, 24, 36) at 8 (ml-cvnets'
    and transformers' published settings). ``transformers_v2_dilation`` reproduces
    transformers' MobileViTV2, whose blocks leave their depthwise 3x3 conv undilated in
    dilated stages (ml-cvnets dilates it); it exists for logit parity with transformers.
    Other keyword arguments (``drop_path_rate``, ``in_chans`` ...) go to the backbone.
    """
    if output_stride not in (8, 16, 32):
        raise InvalidInputError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    entry = get_model_entry(backbone_name)
    backbone = entry.builder(num_classes=0, output_stride=output_stride, **backbone_kwargs)
    arch = getattr(backbone, "arch", None)
    # MobileViTv3 builds on v1 (XXS/XS/S) or v2 (0.5/0.75/1.0): its authors' DeepLabV3
    # recipes use the ASPP width of the design it builds on
    version = getattr(arch, "base_version", getattr(arch, "version", 2))
    if aspp_channels is None:
        aspp_channels = 256 if version == 1 else 512
    if atrous_rates is None:
        atrous_rates = tuple(r * 16 // output_stride for r in (6, 12, 18))
    if transformers_v2_dilation:
        _undilate_v2_local_convs(backbone)
    model = DeepLabV3(
        backbone,
        num_classes=num_classes,
        aspp_channels=aspp_channels,
        atrous_rates=atrous_rates,
        aspp_dropout=aspp_dropout,
        classifier_dropout=classifier_dropout,
        aux_head=aux_head,
        aux_dropout=aux_dropout,
        upsample=upsample,
    )
    model.transformers_v2_dilation = transformers_v2_dilation
    return model


# ---------------------------------------------------------------------------------------
# Published checkpoints

# transformers' MobileViTImageProcessor for apple/deeplabv3-mobilevit-*: 512x512, [0, 1],
# flipped to BGR (the ml-cvnets v1 backbones were trained on OpenCV images).
HF_V1_SEG_PREPROCESS = PreprocessConfig((512, 512), 512, "bilinear", channel_order="BGR", crop_rounding="floor")
# ml-cvnets v2 segmentation recipes: PIL RGB images resized to 512x512 (bicubic).
CVNETS_V2_SEG_PREPROCESS = PreprocessConfig((512, 512), 512, "bicubic", channel_order="RGB", crop_rounding="floor")
# ml-cvnets' DeepLabV3-MobileViTv1 of its v2 model zoo: PIL RGB, bilinear.
CVNETS_V1_SEG_PREPROCESS = PreprocessConfig((512, 512), 512, "bilinear", channel_order="RGB", crop_rounding="floor")

_CVNETS_SEG_URL = "https://docs-assets.developer.apple.com/ml-research/models/cvnets-v2/segmentation/"


@dataclass(frozen=True)
class PublishedSegmenter:
    """Published DeepLabV3 weights on one backbone: where (v1) and the published figures."""

    params_m: float | None  # PASCAL VOC model
    voc_miou: float | None
    ade20k_params_m: float | None = None
    ade20k_miou: float | None = None
    hf_repo: str = ""  # v1: the Hugging Face conversion of Apple's weights
    width: float = 1.0  # v2: the backbone's width


# v1: MobileViT paper, Table 5 (PASCAL VOC)
_V1_PUBLISHED = {
    "mobilevit_xxs": PublishedSegmenter(hf_repo="apple/deeplabv3-mobilevit-xx-small", params_m=1.9, voc_miou=73.6),
    "mobilevit_xs": PublishedSegmenter(hf_repo="apple/deeplabv3-mobilevit-x-small", params_m=2.9, voc_miou=77.1),
    "mobilevit_s": PublishedSegmenter(hf_repo="apple/deeplabv3-mobilevit-small", params_m=6.4, voc_miou=79.1),
}
# v2: the ml-cvnets model zoo (PASCAL VOC and ADE20K)
_V2_PUBLISHED = {
    "mobilevitv2_050": PublishedSegmenter(6.2, 75.07, 6.3, 31.93, width=0.5),
    "mobilevitv2_075": PublishedSegmenter(None, None, 9.6, 34.70, width=0.75),
    "mobilevitv2_100": PublishedSegmenter(13.3, 78.94, 13.4, 37.06, width=1.0),
    "mobilevitv2_125": PublishedSegmenter(17.7, 79.68, 17.7, 38.42, width=1.25),
    "mobilevitv2_150": PublishedSegmenter(22.6, 80.30, 22.6, 38.91, width=1.5),
    "mobilevitv2_175": PublishedSegmenter(None, None, 28.1, 39.53, width=1.75),
    "mobilevitv2_200": PublishedSegmenter(None, None, 34.0, 40.94, width=2.0),
}
# Architecture of weights that differ from their model's defaults (create_model applies them):
# ml-cvnets' ADE20K recipe: output stride 8, rates (12, 24, 36); 150 classes
_CVNETS_ADE20K_ARCH = (("output_stride", 8), ("atrous_rates", (12, 24, 36)))
# config/segmentation/pascal_voc/deeplabv3_mobilevit.yaml: ASPP 512, stride 8, rates (12, 24, 36)
_CVNETS_VOC_OS8_ARCH = (("output_stride", 8), ("atrous_rates", (12, 24, 36)), ("aspp_channels", 512))


_DATASETS = {"voc": (21, "PASCAL VOC 2012"), "ade20k": (150, "ADE20K")}


def _segmenter_weights(
    name: str, tag: str, url: str, layout: str, preprocess, miou, dataset: str, source: str, arch=()
):
    num_classes, dataset_name = _DATASETS[dataset]
    return Weights(
        name,
        tag,
        url,
        layout,
        preprocess,
        miou,
        num_classes=num_classes,
        dataset=dataset_name,
        metric="mIoU %",
        paper_source=source,
        arch_options=arch,
    )


def _weights_for(name: str, backbone: str) -> tuple[tuple[Weights, ...], float | None]:
    if backbone in _V1_PUBLISHED:
        published = _V1_PUBLISHED[backbone]
        weights = [
            _segmenter_weights(
                name,
                "hf_voc",
                f"hf-hub:{published.hf_repo}",
                "hf",
                HF_V1_SEG_PREPROCESS,
                published.voc_miou,
                "voc",
                "MobileViT paper, Table 5 (mIoU)",
            )
        ]
        if backbone == "mobilevit_s":
            weights.append(
                _segmenter_weights(
                    name,
                    "cvnets_voc_os8",
                    _CVNETS_SEG_URL + "pascalvoc/deeplabv3-mobilevitv1.pt",
                    "cvnets",
                    CVNETS_V1_SEG_PREPROCESS,
                    79.44,
                    "voc",
                    "ml-cvnets model zoo (8.5 M parameters: ASPP 512, output stride 8)",
                    _CVNETS_VOC_OS8_ARCH,
                )
            )
        return tuple(weights), published.params_m
    if backbone in _V2_PUBLISHED:
        published = _V2_PUBLISHED[backbone]
        width = published.width
        text = f"{width:g}" if width not in (1.0, 2.0) else f"{width:.1f}"
        files = {"voc": f"pascalvoc/mobilevitv2/deeplabv3-mobilevitv2-{text}.pt"}
        files["ade20k"] = f"ade20k/mobilevitv2/deeplabv3-mobilevitv2-{text}.pt"
        mious = {"voc": published.voc_miou, "ade20k": published.ade20k_miou}
        archs = {"voc": (), "ade20k": _CVNETS_ADE20K_ARCH}
        weights = [
            _segmenter_weights(
                name,
                f"cvnets_{dataset}",
                _CVNETS_SEG_URL + files[dataset],
                "cvnets",
                CVNETS_V2_SEG_PREPROCESS,
                mious[dataset],
                dataset,
                "ml-cvnets model zoo (mIoU)",
                archs[dataset],
            )
            for dataset in ("voc", "ade20k")
            if mious[dataset] is not None
        ]
        return tuple(weights), published.params_m
    return (), None


# name -> backbone classifier: every registered segmenter, written out
DEEPLABV3_MODELS = {
    "deeplabv3_mobilevit_xxs": "mobilevit_xxs",
    "deeplabv3_mobilevit_xs": "mobilevit_xs",
    "deeplabv3_mobilevit_s": "mobilevit_s",
    "deeplabv3_mobilevitv2_050": "mobilevitv2_050",
    "deeplabv3_mobilevitv2_075": "mobilevitv2_075",
    "deeplabv3_mobilevitv2_100": "mobilevitv2_100",
    "deeplabv3_mobilevitv2_125": "mobilevitv2_125",
    "deeplabv3_mobilevitv2_150": "mobilevitv2_150",
    "deeplabv3_mobilevitv2_175": "mobilevitv2_175",
    "deeplabv3_mobilevitv2_200": "mobilevitv2_200",
    "deeplabv3_mobilevitv3_xxs": "mobilevitv3_xxs",
    "deeplabv3_mobilevitv3_xs": "mobilevitv3_xs",
    "deeplabv3_mobilevitv3_s": "mobilevitv3_s",
    "deeplabv3_mobilevitv3_xxs_l2": "mobilevitv3_xxs_l2",
    "deeplabv3_mobilevitv3_xs_l2": "mobilevitv3_xs_l2",
    "deeplabv3_mobilevitv3_s_l2": "mobilevitv3_s_l2",
    "deeplabv3_mobilevitv3_050": "mobilevitv3_050",
    "deeplabv3_mobilevitv3_075": "mobilevitv3_075",
    "deeplabv3_mobilevitv3_100": "mobilevitv3_100",
}


def _register(name: str, backbone: str) -> None:
    assert backbone in BACKBONE_ARCHS, backbone
    weights, params = _weights_for(name, backbone)
    base = get_model_entry(backbone).default_preprocess
    preprocess = PreprocessConfig(
        (512, 512), 512, base.interpolation, base.mean, base.std, base.channel_order, crop_rounding="floor"
    )
    register_model(
        ModelEntry(
            name=name,
            builder=partial(build_deeplabv3, backbone),
            family="deeplabv3",
            default_preprocess=preprocess,
            weights=weights,
            published_params_m=params,
            kind=ModelKind.SEGMENTATION,
            checkpoints=DEEPLABV3_CHECKPOINTS,
            backbone=backbone,
        )
    )


for _name, _backbone in DEEPLABV3_MODELS.items():
    _register(_name, _backbone)

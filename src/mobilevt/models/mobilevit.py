"""MobileViT (v1), MobileViTv2 and MobileViTv3 image classifiers, as apple/ml-cvnets (v1,
v2) and micronDLA/MobileViTv3 (v3, an ml-cvnets fork) define them.

One table of named variants drives one builder. The module layout is mobilevt's own
(``stem``, ``stages``, ``final_conv``, ``head``); ``mobilevt.weights.mobilevit_layouts`` maps the
ml-cvnets, timm, Hugging Face and mmpretrain checkpoint layouts onto it.

Papers: MobileViT, arXiv:2110.02178; MobileViTv2 (separable self-attention), arXiv:2206.02680;
MobileViTv3 (local + global fusion, input residual), arXiv:2209.15159.
"""

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from ..layers import (
    ConvNormAct,
    Dropouts,
    InvertedResidual,
    MobileViTBlock,
    MobileViTV2Block,
    MobileViTV3Block,
    MobileViTV3V2Block,
    cvnets_init_,
    fuse_batchnorms_,
    make_divisible,
)
from ..model_kind import ModelKind
from ..registry import ModelEntry, register_model
from ..weights.entries import PreprocessConfig, Weights
from ..weights.mobilevit_layouts import MOBILEVIT_CHECKPOINTS


@dataclass(frozen=True)
class StageConfig:
    """One of the five stages (``layer_1`` .. ``layer_5`` in ml-cvnets).

    A stage is ``num_mv2`` inverted residual blocks, the first with ``stride``, followed
    by one MobileViT block when ``transformer_depth > 0``.
    """

    channels: int
    stride: int
    expand_ratio: float
    num_mv2: int = 1
    transformer_dim: int = 0
    mlp_dim: int = 0
    transformer_depth: int = 0
    patch_size: int = 2
    num_heads: int = 4


@dataclass(frozen=True)
class MobileViTArch:
    # 1: multi-head attention + fusion; 2: separable linear attention; 3: MobileViTv3's
    # blocks (local + global fusion, input residual) on the v1 or v2 design (``builds_on``)
    version: int
    stem_channels: int
    stages: tuple[StageConfig, ...]
    final_channels: int = 0  # v1's conv_1x1_exp; 0 = none (v2)
    classifier_dropout: float = 0.1
    transformer_dropout: float = 0.0
    attn_dropout: float = 0.0
    ffn_dropout: float = 0.0
    builds_on: int = 0  # version 3 only: 1 (XXS/XS/S) or 2 (0.5/0.75/1.0)

    def __post_init__(self) -> None:
        if self.version == 3 and self.builds_on not in (1, 2):
            raise InvalidInputError(f"a MobileViTv3 arch builds on version 1 or 2, got builds_on={self.builds_on}")
        if self.version != 3 and self.builds_on:
            raise InvalidInputError(f"builds_on is for version 3 only, got version={self.version}")

    @property
    def base_version(self) -> int:
        """1 or 2: whose transformer, block layout and checkpoint key names the model has."""
        return self.builds_on if self.version == 3 else self.version


class MobileViT(nn.Module):
    """MobileViT v1 / v2 / v3 classifier.

    Args:
        arch: architecture table entry.
        num_classes: classifier outputs; 0 gives pooled features from ``forward``.
        in_chans: input channels.
        drop_rate: classifier dropout (defaults to the architecture's).
        drop_path_rate: stochastic depth, increased linearly over transformer layers and
            applied to residual inverted-residual blocks.
        output_stride: 32 (classification), 16 or 8 (dense prediction: the last stages
            keep their resolution and dilate their convolutions, as ml-cvnets does).
    """

    kind = ModelKind.CLASSIFICATION  # what export, the CLI and training dispatch on

    def __init__(
        self,
        arch: MobileViTArch,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float | None = None,
        drop_path_rate: float = 0.0,
        output_stride: int = 32,
        transformer_dropout: float | None = None,
        attn_dropout: float | None = None,
        ffn_dropout: float | None = None,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise InvalidInputError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.arch = arch
        self.in_chans = in_chans
        self.num_classes = num_classes
        dropouts = Dropouts(
            drop=arch.transformer_dropout if transformer_dropout is None else transformer_dropout,
            attn_drop=arch.attn_dropout if attn_dropout is None else attn_dropout,
            ffn_drop=arch.ffn_dropout if ffn_dropout is None else ffn_dropout,
        )

        self.stem = ConvNormAct(in_chans, arch.stem_channels, 3, stride=2)
        stages, self.feature_info, in_ch = _build_stages(arch, output_stride, dropouts, drop_path_rate)
        self.stages = nn.ModuleList(stages)

        if arch.final_channels:
            self.final_conv: nn.Module = ConvNormAct(in_ch, arch.final_channels, 1)
            self.num_features = arch.final_channels
        else:
            self.final_conv = nn.Identity()
            self.num_features = in_ch
        self.head_drop = nn.Dropout(arch.classifier_dropout if drop_rate is None else drop_rate)
        self.head = _make_classifier(self.num_features, num_classes)
        cvnets_init_(self)

    @torch.jit.ignore
    def fuse(self) -> "MobileViT":
        """Fold every BatchNorm into its convolution for inference, in place; returns the
        model. Outputs change by float rounding only (< 1e-5); the model can no longer be
        trained or loaded from unfused checkpoints, so fuse after loading weights."""
        return fuse_batchnorms_(self)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one (0 removes it)."""
        self.num_classes = num_classes
        self.head = _make_classifier(self.num_features, num_classes)
        if isinstance(self.head, nn.Linear):
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise InvalidInputError(
                "MobileViT expects a 4-D image batch [batch, channels, height, width], got a tensor with "
                "{} dimension(s) of shape {}; add a batch dimension with x.unsqueeze(0)".format(x.dim(), list(x.shape))
            )
        if x.shape[1] != self.in_chans:
            raise InvalidInputError(
                "MobileViT expects {} input channels in dimension 1, got shape {}; convert grayscale or RGBA "
                "images to RGB and use channels-first [B, C, H, W] layout".format(self.in_chans, list(x.shape))
            )

    @torch.jit.export
    def forward_feature_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the five stages, at strides 2, 4, 8, 16, 32 (see ``feature_info``;
        strides stop growing at ``output_stride``)."""
        self._check_input(x)
        x = self.stem(x)
        features: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    @torch.jit.export
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map ``[B, num_features, H/32, W/32]`` (before pooling)."""
        self._check_input(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.final_conv(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # GlobalAveragePool in ONNX
        x = self.head_drop(x)
        if pre_logits:
            return x
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _make_classifier(num_features: int, num_classes: int) -> nn.Module:
    return nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()


def _build_stages(
    arch: MobileViTArch, output_stride: int, dropouts: Dropouts, drop_path_rate: float
) -> tuple[list[nn.Module], list[dict[str, int]], int]:
    """The stages after the stem, their feature info (channels, stride) and the last
    stage's channels. Past ``output_stride`` a stage dilates instead of striding."""
    total_blocks = sum(s.num_mv2 + s.transformer_depth for s in arch.stages)
    block_idx = 0
    stride, dilation = 2, 1
    in_ch = arch.stem_channels
    stages: list[nn.Module] = []
    feature_info: list[dict[str, int]] = []
    for stage in arch.stages:
        stage_stride = stage.stride
        block_dilation = dilation
        if stride * stage_stride > output_stride:
            # keep resolution: dilate from here on instead of striding
            dilation *= stage_stride
            stage_stride = 1
        stride *= stage_stride
        blocks: list[nn.Module] = []
        for i in range(stage.num_mv2):
            dpr = drop_path_rate * block_idx / max(total_blocks - 1, 1)
            blocks.append(
                InvertedResidual(
                    in_ch,
                    stage.channels,
                    stride=stage_stride if i == 0 else 1,
                    expand_ratio=stage.expand_ratio,
                    dilation=block_dilation if i == 0 else dilation,
                    drop_path=dpr,
                )
            )
            in_ch = stage.channels
            block_idx += 1
        if stage.transformer_depth > 0:
            dpr = drop_path_rate * block_idx / max(total_blocks - 1, 1)
            blocks.append(_mobilevit_block(arch, stage, dilation, replace(dropouts, drop_path=dpr)))
            block_idx += stage.transformer_depth
        stages.append(nn.Sequential(*blocks))
        feature_info.append({"channels": stage.channels, "stride": stride})
    return stages, feature_info, in_ch


def _mobilevit_block(arch: MobileViTArch, stage: StageConfig, dilation: int, dropouts: Dropouts) -> nn.Module:
    args = (stage.channels, stage.transformer_dim, stage.mlp_dim, stage.transformer_depth)
    kwargs = dict(patch_size=stage.patch_size, dropouts=dropouts)
    # ml-cvnets (and transformers) never dilate the v1 block's local 3x3 conv, nor does the
    # MobileViTv3 authors' builder for its v1-based blocks (their DeepLabV3 / SSD models
    # included); v2-style blocks dilate their depthwise conv in dilated stages.
    if arch.version == 1:
        return MobileViTBlock(*args, num_heads=stage.num_heads, dilation=1, **kwargs)
    if arch.version == 2:
        return MobileViTV2Block(*args, dilation=dilation, **kwargs)
    if arch.builds_on == 1:
        return MobileViTV3Block(*args, num_heads=stage.num_heads, dilation=1, **kwargs)
    return MobileViTV3V2Block(*args, dilation=dilation, **kwargs)


# ---------------------------------------------------------------------------------------
# Architecture tables (ml-cvnets cvnets/models/classification/config/mobilevit*.py)


def _v1_arch(
    channels: tuple[int, int, int, int, int],
    transformer_dims: tuple[int, int, int],
    final_channels: int,
    expand_ratio: float,
    transformer_dropout: float,
    layer4_depth: int = 4,
) -> MobileViTArch:
    c1, c2, c3, c4, c5 = channels
    d3, d4, d5 = transformer_dims
    return MobileViTArch(
        version=1,
        stem_channels=16,
        stages=(
            StageConfig(c1, stride=1, expand_ratio=expand_ratio, num_mv2=1),
            StageConfig(c2, stride=2, expand_ratio=expand_ratio, num_mv2=3),
            StageConfig(c3, 2, expand_ratio, 1, d3, 2 * d3, transformer_depth=2),
            StageConfig(c4, 2, expand_ratio, 1, d4, 2 * d4, transformer_depth=layer4_depth),
            StageConfig(c5, 2, expand_ratio, 1, d5, 2 * d5, transformer_depth=3),
        ),
        final_channels=final_channels,
        classifier_dropout=0.1,
        transformer_dropout=transformer_dropout,
    )


def _v3_on_v1_arch(
    channels: tuple[int, int, int, int, int],
    transformer_dims: tuple[int, int, int],
    expand_ratio: float,
    transformer_dropout: float,
    layer4_depth: int = 4,
) -> MobileViTArch:
    # micronDLA/MobileViTv3, MobileViTv3-v1/cvnets/models/classification/config/mobilevit.py
    # (modes "*_v3", and "*_v3_fast" for the L2 forms with 2 layer-4 blocks): v1's
    # transformer sizes with wider stages 3-5; conv_1x1_exp is min(4 x channels, 960).
    arch = _v1_arch(
        channels, transformer_dims, min(4 * channels[-1], 960), expand_ratio, transformer_dropout, layer4_depth
    )
    return replace(arch, version=3, builds_on=1)


def _v2_arch(width: float) -> MobileViTArch:
    def ch(c: int, divisor: int = 8) -> int:
        return make_divisible(c * width, divisor)

    def mlp(d: int) -> int:
        return int(2 * d // 16 * 16)  # ffn_multiplier 2, rounded down to a multiple of 16

    d3, d4, d5 = ch(128), ch(192), ch(256)
    return MobileViTArch(
        version=2,
        stem_channels=make_divisible(32 * width, 8, min_value=16),
        stages=(
            StageConfig(ch(64, 16), stride=1, expand_ratio=2, num_mv2=1),
            StageConfig(ch(128), stride=2, expand_ratio=2, num_mv2=2),
            StageConfig(ch(256), 2, 2, 1, d3, mlp(d3), transformer_depth=2),
            StageConfig(ch(384), 2, 2, 1, d4, mlp(d4), transformer_depth=4),
            StageConfig(ch(512), 2, 2, 1, d5, mlp(d5), transformer_depth=3),
        ),
        final_channels=0,
        classifier_dropout=0.0,
    )


def _v3_on_v2_arch(width: float) -> MobileViTArch:
    # MobileViTv3-v2/cvnets/models/classification/config/mobilevit_v3.py: v2's table
    # unchanged (the v3 block changes no width); the classifier has no dropout either.
    return replace(_v2_arch(width), version=3, builds_on=2)


# size: channels, transformer dims, expand ratio, transformer dropout (the authors' yaml configs)
_V3_ON_V1 = {
    "xxs": ((16, 24, 64, 80, 128), (64, 80, 96), 2.0, 0.05),
    "xs": ((32, 48, 96, 160, 160), (96, 120, 144), 4.0, 0.1),
    "s": ((32, 64, 128, 256, 320), (144, 192, 240), 4.0, 0.1),
}

ARCHS: dict[str, MobileViTArch] = {
    "mobilevit_xxs": _v1_arch((16, 24, 48, 64, 80), (64, 80, 96), 320, 2.0, 0.05),
    "mobilevit_xs": _v1_arch((32, 48, 64, 80, 96), (96, 120, 144), 384, 4.0, 0.1),
    "mobilevit_s": _v1_arch((32, 64, 96, 128, 160), (144, 192, 240), 640, 4.0, 0.1),
    "mobilevitv2_050": _v2_arch(0.5),
    "mobilevitv2_075": _v2_arch(0.75),
    "mobilevitv2_100": _v2_arch(1.0),
    "mobilevitv2_125": _v2_arch(1.25),
    "mobilevitv2_150": _v2_arch(1.5),
    "mobilevitv2_175": _v2_arch(1.75),
    "mobilevitv2_200": _v2_arch(2.0),
    "mobilevitv3_xxs": _v3_on_v1_arch(*_V3_ON_V1["xxs"]),
    "mobilevitv3_xs": _v3_on_v1_arch(*_V3_ON_V1["xs"]),
    "mobilevitv3_s": _v3_on_v1_arch(*_V3_ON_V1["s"]),
    "mobilevitv3_xxs_l2": _v3_on_v1_arch(*_V3_ON_V1["xxs"], layer4_depth=2),
    "mobilevitv3_xs_l2": _v3_on_v1_arch(*_V3_ON_V1["xs"], layer4_depth=2),
    "mobilevitv3_s_l2": _v3_on_v1_arch(*_V3_ON_V1["s"], layer4_depth=2),
    "mobilevitv3_050": _v3_on_v2_arch(0.5),
    "mobilevitv3_075": _v3_on_v2_arch(0.75),
    "mobilevitv3_100": _v3_on_v2_arch(1.0),
}


# ---------------------------------------------------------------------------------------
# Published checkpoints and their preprocessing

# ml-cvnets v1 trained on OpenCV-decoded (BGR) images; evaluation resizes the shorter
# side to 288 (PIL bilinear) and center-crops 256 (margin floored), pixels in [0, 1].
CVNETS_V1_PREPROCESS = PreprocessConfig((256, 256), 288, "bilinear", channel_order="BGR", crop_rounding="floor")
# ml-cvnets v2 moved to PIL (RGB) and bicubic resizing.
CVNETS_V2_PREPROCESS = PreprocessConfig((256, 256), 288, "bicubic", channel_order="RGB", crop_rounding="floor")
# timm re-hosts the ml-cvnets weights with the stem flipped to RGB, crop_pct 0.9 / 0.888,
# PIL bicubic, torchvision's rounded center crop.
TIMM_V1_PREPROCESS = PreprocessConfig.from_crop_pct(256, 0.9, interpolation="bicubic")
TIMM_V2_PREPROCESS = PreprocessConfig.from_crop_pct(256, 0.888, interpolation="bicubic")
# transformers' MobileViTImageProcessor with the apple/* repos' settings: shortest edge
# 288 (bilinear), crop 256 (margin floored), no mean/std, flip to BGR.
HF_PREPROCESS = PreprocessConfig((256, 256), 288, "bilinear", channel_order="BGR", crop_rounding="floor")
# mmpretrain: OpenCV decoding (BGR) and cv2.resize (bilinear, no antialiasing), mmcv's
# rounded center crop, pixels divided by 255.
MMPRETRAIN_PREPROCESS = PreprocessConfig((256, 256), 288, "bilinear", channel_order="BGR", antialias=False)
# MobileViTv3 on v1 was trained and evaluated on ml-cvnets commit d38a116 (the one the
# authors' README names): cv2.imread (BGR), cv2.resize of the shorter side to 288
# (bilinear, no antialiasing), center crop 256 with the margin floored, pixels / 255.
# On v2 (ml-cvnets commit 84d992f, their config): PIL, RGB, bicubic 288 -> 256, as v2.
MOBILEVITV3_V1_PREPROCESS = PreprocessConfig(
    (256, 256), 288, "bilinear", channel_order="BGR", antialias=False, crop_rounding="floor"
)
MOBILEVITV3_V2_PREPROCESS = CVNETS_V2_PREPROCESS

_CVNETS_V1_URL = "https://docs-assets.developer.apple.com/ml-research/models/cvnets/classification/{}.pt"
_CVNETS_V2_URL = (
    "https://docs-assets.developer.apple.com/ml-research/models/cvnets-v2/classification/"
    "mobilevitv2/imagenet1k/256x256/mobilevitv2-{}.pt"
)
_MMPRETRAIN_URL = "https://download.openmmlab.com/mmclassification/v0/mobilevit/{}.pth"


@dataclass(frozen=True)
class PublishedV1:
    """Where a MobileViT (v1) variant's weights are published, and the figures published with them."""

    cvnets_file: str
    hf_repo: str
    mmpretrain_file: str
    params_m: float
    macs_g: float
    paper_top1: float
    cvnets_top1: float  # the ml-cvnets model zoo's
    mmpretrain_top1: float


@dataclass(frozen=True)
class PublishedFigures:
    """A variant's published size, cost and ImageNet top-1."""

    params_m: float
    macs_g: float
    top1: float


@dataclass(frozen=True)
class PublishedWidth:
    """A MobileViTv2 width and the ml-cvnets zoo's figures for it."""

    width: float
    params_m: float
    macs_g: float
    top1: float


_V1_PUBLISHED = {
    "mobilevit_xxs": PublishedV1(
        cvnets_file="mobilevit_xxs",
        hf_repo="apple/mobilevit-xx-small",
        mmpretrain_file="mobilevit-xxsmall_3rdparty_in1k_20221018-77835605",
        params_m=1.3,
        macs_g=0.42,
        paper_top1=69.0,
        cvnets_top1=69.0,
        mmpretrain_top1=69.02,
    ),
    "mobilevit_xs": PublishedV1(
        cvnets_file="mobilevit_xs",
        hf_repo="apple/mobilevit-x-small",
        mmpretrain_file="mobilevit-xsmall_3rdparty_in1k_20221018-be39a6e7",
        params_m=2.3,
        macs_g=1.05,
        paper_top1=74.8,
        cvnets_top1=74.7,
        mmpretrain_top1=74.75,
    ),
    "mobilevit_s": PublishedV1(
        cvnets_file="mobilevit_s",
        hf_repo="apple/mobilevit-small",
        mmpretrain_file="mobilevit-small_3rdparty_in1k_20221018-cb4f741c",
        params_m=5.6,
        macs_g=2.03,
        paper_top1=78.4,
        cvnets_top1=78.3,
        mmpretrain_top1=78.25,
    ),
}
_V2_PUBLISHED = {
    "mobilevitv2_050": PublishedWidth(width=0.5, params_m=1.37, macs_g=0.466, top1=70.18),
    "mobilevitv2_075": PublishedWidth(width=0.75, params_m=2.87, macs_g=1.030, top1=75.56),
    "mobilevitv2_100": PublishedWidth(width=1.0, params_m=4.90, macs_g=1.844, top1=78.09),
    "mobilevitv2_125": PublishedWidth(width=1.25, params_m=7.48, macs_g=2.856, top1=79.65),
    "mobilevitv2_150": PublishedWidth(width=1.5, params_m=10.59, macs_g=4.068, top1=80.38),
    "mobilevitv2_175": PublishedWidth(width=1.75, params_m=14.25, macs_g=5.519, top1=80.84),
    "mobilevitv2_200": PublishedWidth(width=2.0, params_m=18.45, macs_g=7.215, top1=81.17),
}


def _builder(arch: MobileViTArch):
    def build(**kwargs) -> MobileViT:
        return MobileViT(arch, **kwargs)

    return build


def _register_v1(name: str) -> None:
    published = _V1_PUBLISHED[name]
    cvnets_file, hf_repo, mm_file = published.cvnets_file, published.hf_repo, published.mmpretrain_file
    params, macs, top1 = published.params_m, published.macs_g, published.paper_top1
    zoo_top1, mm_top1 = published.cvnets_top1, published.mmpretrain_top1
    weights = (
        Weights(
            name,
            "cvnets_in1k",
            _CVNETS_V1_URL.format(cvnets_file),
            "cvnets",
            CVNETS_V1_PREPROCESS,
            zoo_top1,
            paper_source="ml-cvnets model zoo (the paper reports {})".format(top1),
        ),
        Weights(
            name,
            "timm_in1k",
            f"hf-hub:timm/{name}.cvnets_in1k",
            "timm",
            TIMM_V1_PREPROCESS,
            top1,
            paper_source="MobileViT paper (timm re-hosts the ml-cvnets weights, stem flipped to RGB)",
        ),
        Weights(
            name,
            "hf_in1k",
            f"hf-hub:{hf_repo}",
            "hf",
            HF_PREPROCESS,
            top1,
            paper_source="MobileViT paper (Hugging Face converted the ml-cvnets weights)",
        ),
        Weights(
            name,
            "mmpretrain_in1k",
            _MMPRETRAIN_URL.format(mm_file),
            "mmpretrain",
            MMPRETRAIN_PREPROCESS,
            mm_top1,
            paper_source="mmpretrain metafile",
        ),
    )
    register_model(
        ModelEntry(
            name=name,
            builder=_builder(ARCHS[name]),
            family="mobilevit",
            default_preprocess=CVNETS_V1_PREPROCESS,
            weights=weights,
            published_params_m=params,
            published_macs_g=macs,
            checkpoints=MOBILEVIT_CHECKPOINTS,
            preprocess_by_layout=(
                ("cvnets", CVNETS_V1_PREPROCESS),
                ("timm", TIMM_V1_PREPROCESS),
                ("hf", HF_PREPROCESS),
                ("mmpretrain", MMPRETRAIN_PREPROCESS),
            ),
        )
    )


def _register_v2(name: str) -> None:
    published = _V2_PUBLISHED[name]
    width, params, macs, top1 = published.width, published.params_m, published.macs_g, published.top1
    width_text = f"{width:g}" if width != 1.0 and width != 2.0 else f"{width:.1f}"
    weights = [
        Weights(
            name,
            "cvnets_in1k",
            _CVNETS_V2_URL.format(width_text),
            "cvnets",
            CVNETS_V2_PREPROCESS,
            top1,
            paper_source="ml-cvnets model zoo",
        ),
        Weights(
            name,
            "timm_in1k",
            f"hf-hub:timm/{name}.cvnets_in1k",
            "timm",
            TIMM_V2_PREPROCESS,
            top1,
            paper_source="ml-cvnets (timm re-hosts the same weights)",
        ),
    ]
    if width == 1.0:
        weights.append(
            Weights(
                name,
                "hf_in1k",
                "hf-hub:apple/mobilevitv2-1.0-imagenet1k-256",
                "hf",
                HF_PREPROCESS,
                top1,
                paper_source="ml-cvnets (converted by Hugging Face)",
            )
        )
    if width >= 1.5:
        weights.append(
            Weights(
                name,
                "timm_in22k_ft_in1k",
                f"hf-hub:timm/{name}.cvnets_in22k_ft_in1k",
                "timm",
                TIMM_V2_PREPROCESS,
                None,
                dataset="ImageNet-21k -> ImageNet-1k",
            )
        )
        weights.append(
            Weights(
                name,
                "timm_in22k_ft_in1k_384",
                f"hf-hub:timm/{name}.cvnets_in22k_ft_in1k_384",
                "timm",
                PreprocessConfig.from_crop_pct(384, 1.0, interpolation="bicubic"),
                None,
                dataset="ImageNet-21k -> ImageNet-1k, 384x384",
            )
        )
    register_model(
        ModelEntry(
            name=name,
            builder=_builder(ARCHS[name]),
            family="mobilevitv2",
            default_preprocess=CVNETS_V2_PREPROCESS,
            weights=tuple(weights),
            published_params_m=params,
            published_macs_g=macs,
            checkpoints=MOBILEVIT_CHECKPOINTS,
            preprocess_by_layout=(
                ("cvnets", CVNETS_V2_PREPROCESS),
                ("timm", TIMM_V2_PREPROCESS),
                ("hf", HF_PREPROCESS),
            ),
        )
    )


# micronDLA/MobileViTv3 README (ImageNet-1k tables): params M, "FLOPs" (multiply-adds,
# as ml-cvnets counts them) G, top-1 of checkpoint_ema_best.pt
_V3_PUBLISHED = {
    "mobilevitv3_xxs": PublishedFigures(params_m=1.2, macs_g=0.289, top1=70.98),
    "mobilevitv3_xs": PublishedFigures(params_m=2.5, macs_g=0.927, top1=76.7),
    "mobilevitv3_s": PublishedFigures(params_m=5.8, macs_g=1.841, top1=79.3),
    "mobilevitv3_xxs_l2": PublishedFigures(params_m=1.1, macs_g=0.256, top1=70.23),
    "mobilevitv3_xs_l2": PublishedFigures(params_m=2.3, macs_g=0.853, top1=76.10),
    "mobilevitv3_s_l2": PublishedFigures(params_m=5.2, macs_g=1.651, top1=79.06),
    "mobilevitv3_050": PublishedFigures(params_m=1.4, macs_g=0.481, top1=72.33),
    "mobilevitv3_075": PublishedFigures(params_m=3.0, macs_g=1.064, top1=76.55),
    "mobilevitv3_100": PublishedFigures(params_m=5.1, macs_g=1.876, top1=78.64),
}


def _register_v3(name: str) -> None:
    # The authors publish their checkpoints as folders on a GitHub release page
    # (micronDLA/MobileViTv3, release v1.0.0; the accuracy is that of
    # checkpoint_ema_best.pt), with no direct file links to register: download the
    # folder and pass weights="FOLDER/checkpoint_ema_best.pt" (ml-cvnets layout).
    published = _V3_PUBLISHED[name]
    params, macs, top1 = published.params_m, published.macs_g, published.top1
    preprocess = MOBILEVITV3_V1_PREPROCESS if ARCHS[name].builds_on == 1 else MOBILEVITV3_V2_PREPROCESS
    register_model(
        ModelEntry(
            name=name,
            builder=_builder(ARCHS[name]),
            family="mobilevitv3",
            default_preprocess=preprocess,
            weights=(),
            published_params_m=params,
            published_macs_g=macs,
            checkpoints=MOBILEVIT_CHECKPOINTS,
            preprocess_by_layout=(("cvnets", preprocess),),
            published_top1=top1,
        )
    )


for _name in _V1_PUBLISHED:
    _register_v1(_name)
for _name in _V2_PUBLISHED:
    _register_v2(_name)
for _name in _V3_PUBLISHED:
    _register_v3(_name)

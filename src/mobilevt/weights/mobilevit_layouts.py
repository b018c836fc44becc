"""MobileViT classifier checkpoints (v1, v2, v3): their layouts and key maps.

Conversion "pulls" (:mod:`mobilevt.engine`): for every key of the target mobilevt
model the layout names the key(s) of the checkpoint that hold the same tensor, which makes
missing and unexpected keys exact and loading strict.

Layouts:
- ``mobilevt``: this package's own (``stem.``, ``stages.i.j.``, ``final_conv.``, ``head.``).
- ``cvnets``: apple/ml-cvnets (``conv_1.block.conv``, ``layer_3.1.global_rep.0.pre_norm_mha``),
  also the MobileViTv3 authors' fork of it (same names; the v3 blocks keep v1's or v2's).
- ``timm``: ``timm.models.mobilevit`` (``stem.conv``, ``stages.2.1.conv_kxk``, ``head.fc``).
- ``hf``: transformers' ``MobileViT(V2)ForImageClassification`` (``mobilevit.encoder.layer``).
- ``mmpretrain``: open-mmlab's ImageClassifier (``backbone.layers.2.1.local_rep``, ``head.fc``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from torch import nn

from ..errors import InvalidInputError
from .family import CheckpointFamily
from .state_dicts import HF_TRANSFORMER_LAYER_KEYS, CheckpointMismatchError

LAYOUTS = ("mobilevt", "cvnets", "timm", "hf", "mmpretrain")

# ---------------------------------------------------------------------------------------
# Per-layout key maps: mobilevt key -> source key(s). ``arch`` is the MobileViTArch.

_STAGE_KEY = re.compile(r"^stages\.(\d+)\.(\d+)\.(.+)$")
_LAYER_KEY = re.compile(r"^transformer\.(\d+)\.(.+)$")


def _split(key: str) -> tuple[int, int, str] | None:
    match = _STAGE_KEY.match(key)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), match.group(3)


def _rename_prefix(rest: str, table: Mapping[str, str]) -> str:
    for ours, theirs in table.items():
        if rest == ours or rest.startswith(ours + "."):
            return theirs + rest[len(ours) :]
    raise KeyError(rest)


def _timm_keys(key: str, arch) -> list[str]:
    if key.startswith("head."):
        return ["head.fc." + key[len("head.") :]]
    parts = _split(key)
    if parts is None:
        return [key]  # stem.*, final_conv.*
    i, j, rest = parts
    if arch.base_version == 2:
        rest = rest.replace(".attn.qkv.", ".attn.qkv_proj.").replace(".attn.proj.", ".attn.out_proj.")
    table = {
        "expand": "conv1_1x1",
        "depthwise": "conv2_kxk",
        "project": "conv3_1x1",
        "local_kxk": "conv_kxk",
        "local_1x1": "conv_1x1",
        "transformer": "transformer",
        "norm": "norm",
        "proj": "conv_proj",
        "fusion": "conv_fusion",
    }
    return [f"stages.{i}.{j}." + _rename_prefix(rest, table)]


def _cvnets_conv(rest: str) -> str:
    # ConvNormAct {conv, bn} -> ml-cvnets ConvLayer {block.conv, block.norm}
    return (
        rest.replace("conv.", "block.conv.", 1) if rest.startswith("conv.") else rest.replace("bn.", "block.norm.", 1)
    )


def _cvnets_keys(key: str, arch) -> list[str]:
    if key.startswith("head."):
        # v1: Sequential(global_pool, [dropout], fc); v2: Sequential(GlobalPool, LinearLayer)
        head = "classifier.fc." if arch.base_version == 1 else "classifier.1."
        return [head + key[len("head.") :]]
    if key.startswith("stem."):
        return ["conv_1." + _cvnets_conv(key[len("stem.") :])]
    if key.startswith("final_conv."):
        return ["conv_1x1_exp." + _cvnets_conv(key[len("final_conv.") :])]
    i, j, rest = _split(key)  # type: ignore[misc]
    prefix = f"layer_{i + 1}.{j}."
    first, _, tail = rest.partition(".")
    mv2 = {"expand": "exp_1x1", "depthwise": "conv_3x3", "project": "red_1x1"}
    if first in mv2:
        return [prefix + f"block.{mv2[first]}." + _cvnets_conv(tail)]
    # v1 names the local convs, v2 builds them as an unnamed Sequential.
    local_kxk, local_1x1 = ("conv_3x3", "conv_1x1") if arch.base_version == 1 else ("0", "1")
    if first == "local_kxk":
        return [prefix + f"local_rep.{local_kxk}." + _cvnets_conv(tail)]
    if first == "local_1x1":
        return [prefix + f"local_rep.{local_1x1}.block.conv." + tail]
    if first == "proj":
        return [prefix + "conv_proj." + _cvnets_conv(tail)]
    if first == "fusion":
        return [prefix + "fusion." + _cvnets_conv(tail)]
    if first == "norm":
        depth = arch.stages[i].transformer_depth
        return [prefix + f"global_rep.{depth}." + tail]
    layer = _LAYER_KEY.match(rest)
    assert layer is not None, key
    k, sub = int(layer.group(1)), layer.group(2)
    base = prefix + f"global_rep.{k}."
    if arch.base_version == 1:
        table = {
            "norm1": "pre_norm_mha.0",
            "attn.qkv": "pre_norm_mha.1.qkv_proj",
            "attn.proj": "pre_norm_mha.1.out_proj",
            "norm2": "pre_norm_ffn.0",
            "mlp.fc1": "pre_norm_ffn.1",
            "mlp.fc2": "pre_norm_ffn.4",
        }
    else:
        table = {
            "norm1": "pre_norm_attn.0",
            "attn.qkv": "pre_norm_attn.1.qkv_proj.block.conv",
            "attn.proj": "pre_norm_attn.1.out_proj.block.conv",
            "norm2": "pre_norm_ffn.0",
            "mlp.fc1": "pre_norm_ffn.1.block.conv",  # ConvLayer2d with its activation inside
            "mlp.fc2": "pre_norm_ffn.3.block.conv",
        }
    return [base + _rename_prefix(sub, table)]


def _hf_conv(rest: str) -> str:
    first, _, tail = rest.partition(".")
    return {"conv": "convolution", "bn": "normalization"}[first] + "." + tail


def _hf_keys(key: str, arch) -> list[str]:
    p = "mobilevit." if arch.base_version == 1 else "mobilevitv2."
    if key.startswith("head."):
        return ["classifier." + key[len("head.") :]]
    if key.startswith("stem."):
        return [p + "conv_stem." + _hf_conv(key[len("stem.") :])]
    if key.startswith("final_conv."):
        return [p + "conv_1x1_exp." + _hf_conv(key[len("final_conv.") :])]
    i, j, rest = _split(key)  # type: ignore[misc]
    first, _, tail = rest.partition(".")
    mv2 = {"expand": "expand_1x1", "depthwise": "conv_3x3", "project": "reduce_1x1"}
    if first in mv2:
        block = f"layer.{j}" if arch.stages[i].transformer_depth == 0 else "downsampling_layer"
        return [p + f"encoder.layer.{i}.{block}.{mv2[first]}." + _hf_conv(tail)]
    base = p + f"encoder.layer.{i}."
    simple = {"local_kxk": "conv_kxk", "proj": "conv_projection", "fusion": "fusion"}
    if first in simple:
        return [base + simple[first] + "." + _hf_conv(tail)]
    if first == "local_1x1":
        return [base + "conv_1x1.convolution." + tail]
    if first == "norm":
        return [base + "layernorm." + tail]
    layer = _LAYER_KEY.match(rest)
    assert layer is not None, key
    k, sub = int(layer.group(1)), layer.group(2)
    base += f"transformer.layer.{k}."
    if arch.base_version == 1:
        if sub.startswith("attn.qkv."):
            param = sub[len("attn.qkv.") :]
            # transformers keeps separate query/key/value projections; ours is fused.
            return [base + f"attention.attention.{name}.{param}" for name in ("query", "key", "value")]
        table = HF_TRANSFORMER_LAYER_KEYS
    else:
        table = {
            "norm1": "layernorm_before",
            "attn.qkv": "attention.qkv_proj.convolution",
            "attn.proj": "attention.out_proj.convolution",
            "norm2": "layernorm_after",
            "mlp.fc1": "ffn.conv1.convolution",
            "mlp.fc2": "ffn.conv2.convolution",
        }
    return [base + _rename_prefix(sub, table)]


def _mmpretrain_keys(key: str, arch) -> list[str]:
    if arch.base_version != 1:
        raise CheckpointMismatchError("mmpretrain publishes MobileViT v1 only; this is a v2-style model")
    if key.startswith("head."):
        return ["head.fc." + key[len("head.") :]]
    if key.startswith("stem."):
        return ["backbone." + key]
    if key.startswith("final_conv."):
        return ["backbone.conv_1x1_exp." + key[len("final_conv.") :]]
    i, j, rest = _split(key)  # type: ignore[misc]
    prefix = f"backbone.layers.{i}.{j}."
    first, _, tail = rest.partition(".")
    simple = {
        "expand": "conv.0",
        "depthwise": "conv.1",
        "project": "conv.2",
        "local_kxk": "local_rep.0",
        "proj": "conv_proj",
        "fusion": "conv_fusion",
    }
    if first in simple:
        return [prefix + simple[first] + "." + tail]
    if first == "local_1x1":
        return [prefix + "local_rep.1.conv." + tail]
    if first == "norm":
        return [prefix + f"global_rep.{arch.stages[i].transformer_depth}." + tail]
    layer = _LAYER_KEY.match(rest)
    assert layer is not None, key
    k, sub = int(layer.group(1)), layer.group(2)
    table = {
        "norm1": "ln1",
        "attn.qkv": "attn.qkv",
        "attn.proj": "attn.proj",
        "norm2": "ln2",
        "mlp.fc1": "ffn.layers.0.0",
        "mlp.fc2": "ffn.layers.1",
    }
    return [prefix + f"global_rep.{k}." + _rename_prefix(sub, table)]


_KEY_MAPS: dict[str, Callable[[str, object], list[str]]] = {
    "mobilevt": lambda key, arch: [key],
    "timm": _timm_keys,
    "cvnets": _cvnets_keys,
    "hf": _hf_keys,
    "mmpretrain": _mmpretrain_keys,
}


def source_keys(layout: str, key: str, arch) -> list[str]:
    """The key(s) in ``layout`` that hold mobilevt's ``key`` of a classifier of ``arch``
    (its ``MobileViTArch``)."""
    if layout not in _KEY_MAPS:
        raise InvalidInputError(f"unknown checkpoint layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    return _KEY_MAPS[layout](key, arch)


def _add_hf_prefix(layout: str, state: dict, model: nn.Module) -> dict:
    # a bare MobileViTModel state dict, without transformers' task-model prefix
    if layout != "hf" or any(k.startswith(("mobilevit.", "mobilevitv2.")) for k in state):
        return state
    prefix = "mobilevit." if model.arch.base_version == 1 else "mobilevitv2."
    return {(k if k.startswith("classifier.") else prefix + k): v for k, v in state.items()}


def _not_a_classifier(state) -> str:
    sample = ", ".join(list(state)[:6])
    return (
        f"cannot tell which layout this checkpoint uses (first keys: {sample}). Supported: "
        "ml-cvnets, timm, Hugging Face transformers, mmpretrain and mobilevt state dicts of MobileViT models."
    )


MOBILEVIT_CHECKPOINTS = CheckpointFamily(
    name="mobilevit",
    layouts=(
        ("mobilevt", "stages.0.0.expand.conv.weight"),
        ("timm", "stages.0.0.conv1_1x1.conv.weight"),
        ("hf", "mobilevit.conv_stem.convolution.weight"),
        ("hf", "mobilevitv2.conv_stem.convolution.weight"),
        ("cvnets", "conv_1.block.conv.weight"),
        ("mmpretrain", "backbone.stem.conv.weight"),
        ("hf", "conv_stem.convolution.weight"),  # a bare MobileViTModel
    ),
    source_keys=lambda layout, key, model: source_keys(layout, key, model.arch),
    head_keys=lambda model: [k for k in model.state_dict() if k.startswith("head.")],
    not_this_family=_not_a_classifier,
    prepare_state=_add_hf_prefix,
)


def detect_layout(state_dict) -> str:
    """Name the layout of a MobileViT classifier state dict: one of ``LAYOUTS``."""
    return MOBILEVIT_CHECKPOINTS.detect_layout(state_dict)

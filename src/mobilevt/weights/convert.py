"""Checkpoint layouts: detection and conversion to mobilevt's own keys.

Conversion "pulls": for every key of the target mobilevt model it names the key(s) of
the source layout that hold the same tensor. That makes missing and unexpected keys
exact (every source key must be consumed) and the loading strict.

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
from typing import Callable, Mapping

import torch

LAYOUTS = ("mobilevt", "cvnets", "timm", "hf", "mmpretrain")

# A key that identifies each layout (checked in order).
_SIGNATURES: tuple[tuple[str, str], ...] = (
    ("mobilevt", r"^stages\.0\.0\.expand\.conv\.weight$"),
    ("timm", r"^stages\.0\.0\.conv1_1x1\.conv\.weight$"),
    ("hf", r"^(mobilevit|mobilevitv2)\.conv_stem\.convolution\.weight$"),
    ("cvnets", r"^conv_1\.block\.conv\.weight$"),
    ("mmpretrain", r"^backbone\.stem\.conv\.weight$"),
)

# Wrappers that training scripts put around a state dict, and key prefixes that
# DistributedDataParallel / torch.compile add.
_WRAPPER_KEYS = ("model_state_dict", "state_dict", "model", "module")
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointMismatchError(RuntimeError):
    """The checkpoint does not fit the model; the message names the keys, and
    ``missing`` / ``unexpected`` / ``mis_shaped`` list them all."""

    def __init__(
        self,
        message: str,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mis_shaped: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.mis_shaped = mis_shaped or []


# mobilevt transformer-layer module -> transformers' name for it (ViT-style layers, used by
# MobileViT v1 and ViLT)
HF_TRANSFORMER_LAYER_KEYS = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}


def unwrap_state_dict(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """Take the tensor dict out of a training checkpoint and strip DDP/compile prefixes."""
    state = checkpoint
    for _ in range(2):  # e.g. {"state_dict": {"module.x": ...}}
        tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
        if tensors and len(tensors) >= len(state) // 2:
            break
        for key in _WRAPPER_KEYS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
        else:
            break
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    if not out:
        raise CheckpointMismatchError(
            "the checkpoint holds no tensors; top-level entries: " + ", ".join(map(str, list(checkpoint)[:10]))
        )
    return out


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the layout of a state dict: one of ``LAYOUTS``."""
    for layout, pattern in _SIGNATURES:
        regex = re.compile(pattern)
        if any(regex.match(k) for k in state_dict):
            return layout
    if any(k.startswith("conv_stem.convolution.") for k in state_dict):
        return "hf"  # a bare MobileViTModel without the classification prefix
    sample = ", ".join(list(state_dict)[:6])
    raise CheckpointMismatchError(
        f"cannot tell which layout this checkpoint uses (first keys: {sample}). Supported: "
        "ml-cvnets, timm, Hugging Face transformers, mmpretrain and mobilevt state dicts of MobileViT models."
    )


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
    return rest.replace("conv.", "block.conv.", 1) if rest.startswith("conv.") else rest.replace("bn.", "block.norm.", 1)


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
    """The key(s) in ``layout`` that hold mobilevt's ``key``."""
    if layout not in _KEY_MAPS:
        raise ValueError(f"unknown checkpoint layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    return _KEY_MAPS[layout](key, arch)


def _target_keys(model_name: str) -> tuple[list[str], object]:
    from ..registry import build_model

    with torch.device("meta"):
        model = build_model(model_name, num_classes=1000)
    return list(model.state_dict()), model.arch


def _format_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], model_name: str, layout: str | None = None
) -> dict[str, torch.Tensor]:
    """Convert a MobileViT state dict of any supported layout to mobilevt's keys.

    The layout is detected unless given. Raises ``CheckpointMismatchError`` naming the
    missing and unexpected keys when the checkpoint is of another variant or task.
    """
    from ..registry import get_model_entry

    entry = get_model_entry(model_name)
    state = unwrap_state_dict(state_dict)
    layout = layout or detect_layout(state)
    if layout == "hf" and not any(k.startswith(("mobilevit.", "mobilevitv2.")) for k in state):
        prefix = "mobilevit." if "mobilevitv2" not in entry.name else "mobilevitv2."
        state = {(k if k.startswith("classifier.") else prefix + k): v for k, v in state.items()}
    targets, arch = _target_keys(entry.name)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    for key in targets:
        sources = source_keys(layout, key, arch)
        if all(s in state for s in sources):
            tensors = [state[s] for s in sources]
            out[key] = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)
            used.update(sources)
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0, dtype=torch.long)  # a counter, not a weight
        else:
            missing.extend(s for s in sources if s not in state)
    unexpected = [k for k in state if k not in used]
    if missing or unexpected:
        raise CheckpointMismatchError(
            _mismatch_message(entry.name, layout, missing, unexpected, [], state), missing, unexpected
        )
    return out


def mismatch_lines(
    model_name: str, layout: str, missing: list[str], unexpected: list[str], mis_shaped: list[str],
    fix: str | None = None,
) -> list[str]:
    """The lines of a "checkpoint does not fit" message (any family): the fix, when one is
    known, on the first line, then the keys."""
    lines = [f"checkpoint ({layout} layout) does not fit model {model_name!r}" + (f"; {fix}." if fix else ":")]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_format_keys(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_format_keys(unexpected)}")
    if mis_shaped:
        lines.append(f"  mis-shaped ({len(mis_shaped)}): {_format_keys(mis_shaped, 6)}")
    return lines


def _mismatch_message(
    model_name: str,
    layout: str,
    missing: list[str],
    unexpected: list[str],
    mis_shaped: list[str],
    state: Mapping[str, torch.Tensor] | None,
) -> str:
    guess = guess_variant(state, layout) if state is not None else None
    fix = f"the checkpoint matches {guess!r}: create that model instead" if guess and guess != model_name else None
    return "\n".join(mismatch_lines(model_name, layout, missing, unexpected, mis_shaped, fix))


def guess_variant(state: Mapping[str, torch.Tensor], layout: str) -> str | None:
    """The registered MobileViT variant whose converted keys and shapes (ignoring the
    classifier) fit ``state``, if any."""
    from ..registry import build_model, list_models

    for name in list_models("mobilevit*"):
        try:
            with torch.device("meta"):
                model = build_model(name, num_classes=1000)
            target = model.state_dict()
            ok = True
            for key, tensor in target.items():
                if key.startswith("head.") or key.endswith("num_batches_tracked"):
                    continue
                sources = source_keys(layout, key, model.arch)
                if not all(s in state for s in sources):
                    ok = False
                    break
                numel = sum(state[s].numel() for s in sources)
                if numel != tensor.numel() or state[sources[0]].shape[1:] != tensor.shape[1:]:
                    ok = False
                    break
            if ok:
                return name
        except (CheckpointMismatchError, KeyError, AssertionError, IndexError):
            continue
    return None


def check_shapes(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    layout: str = "mobilevt",
    source_state: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Strict comparison of a converted state dict with ``model``: raises with every
    missing, unexpected and mis-shaped key named."""
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    mis_shaped = [
        f"{k} {list(state[k].shape)} vs model {list(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if missing or unexpected or mis_shaped:
        name = getattr(model, "model_name", type(model).__name__)
        raise CheckpointMismatchError(
            _mismatch_message(name, layout, missing, unexpected, mis_shaped, source_state), missing, unexpected, mis_shaped
        )

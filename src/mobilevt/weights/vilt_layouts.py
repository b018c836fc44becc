"""ViLT checkpoints: their layouts, key maps and rules for the engine.

Layouts:

- ``hf``: transformers' ``ViltForQuestionAnswering`` (``vilt.embeddings.*``,
  ``vilt.encoder.layer.N.attention.attention.query`` ..., ``classifier.0/1/3``), usually a
  model folder with ``config.json`` (architecture and the ``id2label`` answers) and
  ``model.safetensors`` or ``pytorch_model.bin``;
- ``dandelin``: the original dandelin/ViLT Lightning ``.ckpt`` (``{"state_dict": ...}``
  with ``text_embeddings.*``, ``token_type_embeddings``, ``transformer.blocks.N.attn.qkv``,
  ``pooler.dense``, ``vqa_classifier.0/1/3``);
- ``mobilevt``: :class:`mobilevt.models.vilt.ViltForQuestionAnswering`'s own keys; files
  written by ``mobilevt.save_weights`` also carry the architecture, the answers and the
  MobiVQA exit layers in their metadata, so ``create_model("vilt_b32_vqa", weights=file)``
  rebuilds any ViLT size, with its exits.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..data.vilt_preprocess import VILT_IMAGE_SIZE_RULE, ViltImageSizeRule
from ..errors import InvalidInputError
from .family import CheckpointFamily, Mismatch, names_from_id2label
from .mobilevit_layouts import MOBILEVIT_CHECKPOINTS
from .state_dicts import HF_TRANSFORMER_LAYER_KEYS, CheckpointMismatchError

logger = logging.getLogger(__name__)

VILT_LAYOUTS = ("mobilevt", "hf", "dandelin")
# The ViltArch fields a mobilevt file records (tests/models/test_vilt.py holds this to ViltArch).
VILT_ARCH_FIELDS = (
    "hidden_size",
    "num_layers",
    "num_heads",
    "mlp_dim",
    "patch_size",
    "image_size",
    "in_chans",
    "vocab_size",
    "max_text_len",
    "type_vocab_size",
    "modality_vocab_size",
    "qkv_bias",
    "layer_norm_eps",
    "text_layer_norm_eps",
)
# Builder options that add MobiVQA's exit heads (recorded as one metadata entry).
EXIT_OPTIONS = ("exit_layers", "predictor_layer", "predictor_hidden")
_ARCH_KEY = "vilt_arch"
_ANSWERS_KEY = "answers"
_EXITS_KEY = "vilt_exits"
_IMAGE_RULE_KEY = "vilt_image_rule"
_SCORES_KEY = "vilt_answer_scores"

# Buffers some checkpoints carry that the model recomputes (BERT's position ids).
_IGNORED = {
    "hf": ("vilt.embeddings.text_embeddings.position_ids", "vilt.embeddings.text_embeddings.token_type_ids"),
    "dandelin": ("text_embeddings.position_ids",),
}
# Heads of other ViLT tasks, to say what a refused checkpoint is.
_OTHER_TASKS = (
    ("mlm_score.", "a masked-language-model (pre-training) checkpoint"),
    ("itm_score.", "a pre-training checkpoint (image-text matching head)"),
    ("rank_output.", "an image-text retrieval checkpoint"),
    ("nlvr2_classifier.", "an NLVR2 (two-image) checkpoint"),
)
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_VQA_CLASS = "ViltForQuestionAnswering"


def _not_vilt(state: Mapping[str, torch.Tensor]) -> str:
    sample = ", ".join(list(state)[:6])
    hint = ""
    try:
        hint = (
            f" It is a MobileViT checkpoint ({MOBILEVIT_CHECKPOINTS.detect_layout(state)} layout): create a "
            "mobilevit model instead."
        )
    except CheckpointMismatchError:
        pass
    return (
        f"this is not a ViLT checkpoint (first keys: {sample}). Supported: transformers' ViltForQuestionAnswering "
        f"(model.safetensors / pytorch_model.bin), dandelin/ViLT .ckpt files and mobilevt ViLT state dicts.{hint}"
    )


def _hf_keys(key: str) -> list[str]:
    fixed = {
        "text_embeddings.norm": "vilt.embeddings.text_embeddings.LayerNorm",
        "image_embeddings.patch_embed": "vilt.embeddings.patch_embeddings.projection",
        "image_embeddings.cls_token": "vilt.embeddings.cls_token",
        "image_embeddings.pos_embed": "vilt.embeddings.position_embeddings",
        "modality_embeddings": "vilt.embeddings.token_type_embeddings",
        "norm": "vilt.layernorm",
        "pooler": "vilt.pooler.dense",
        "head.fc1": "classifier.0",
        "head.norm": "classifier.1",
        "head.fc2": "classifier.3",
    }
    layer = _LAYER.match(key)
    if layer is not None:
        index, rest = layer.groups()
        base = f"vilt.encoder.layer.{index}."
        if rest.startswith("attn.qkv."):
            param = rest[len("attn.qkv.") :]
            # transformers keeps separate query/key/value projections; ours is fused (q, k, v rows).
            return [base + f"attention.attention.{name}.{param}" for name in ("query", "key", "value")]
        table = HF_TRANSFORMER_LAYER_KEYS
        return [base + _rename(rest, table)]
    if key.startswith("text_embeddings.") and not key.startswith("text_embeddings.norm."):
        return ["vilt.embeddings." + key]
    return [_rename(key, fixed)]


def _dandelin_keys(key: str) -> list[str]:
    layer = _LAYER.match(key)
    if layer is not None:  # same sub-module names as timm's ViT blocks
        return [f"transformer.blocks.{layer.group(1)}.{layer.group(2)}"]
    fixed = {
        "text_embeddings.norm": "text_embeddings.LayerNorm",
        "image_embeddings.patch_embed": "transformer.patch_embed.proj",
        "image_embeddings.cls_token": "transformer.cls_token",
        "image_embeddings.pos_embed": "transformer.pos_embed",
        "modality_embeddings": "token_type_embeddings",
        "norm": "transformer.norm",
        "pooler": "pooler.dense",
        "head.fc1": "vqa_classifier.0",
        "head.norm": "vqa_classifier.1",
        "head.fc2": "vqa_classifier.3",
    }
    if key.startswith("text_embeddings.") and not key.startswith("text_embeddings.norm."):
        return [key]
    return [_rename(key, fixed)]


def _rename(key: str, table: Mapping[str, str]) -> str:
    for ours, theirs in table.items():
        if key == ours or key.startswith(ours + "."):
            return theirs + key[len(ours) :]
    raise KeyError(f"no source key for {key!r}")


def vilt_source_keys(layout: str, key: str) -> list[str]:
    """The key(s) in ``layout`` that hold the mobilevt ViLT key ``key``."""
    if layout == "mobilevt":
        return [key]
    if layout == "hf":
        return _hf_keys(key)
    if layout == "dandelin":
        return _dandelin_keys(key)
    raise InvalidInputError(f"unknown ViLT checkpoint layout {layout!r}; expected one of {', '.join(VILT_LAYOUTS)}")


_LAYER_PREFIXES = {"mobilevt": "encoder.layers.", "hf": "vilt.encoder.layer.", "dandelin": "transformer.blocks."}


def _is_layer_key(layout: str, key: str) -> bool:
    return key.startswith(_LAYER_PREFIXES[layout])


def _checkpoint_depth(layout: str, keys: Iterable[str]) -> int:
    prefix = _LAYER_PREFIXES[layout]
    indices = {int(k[len(prefix) :].split(".", 1)[0]) for k in keys if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def vilt_options_from_hf_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``ViltArch`` fields and the answer list (``id2label`` in index order) of a
    transformers ``ViltConfig`` dict."""
    if config.get("model_type", "vilt") != "vilt":
        raise CheckpointMismatchError(
            f"config.json describes a {config.get('model_type')!r} model, not ViLT ('vilt'): use the matching model"
        )
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointMismatchError(f"config.json asks for hidden_act={act!r}; ViLT models use 'gelu'")

    def single(value: Any, name: str) -> int:
        if isinstance(value, (list, tuple)):
            if len(set(value)) != 1:
                raise CheckpointMismatchError(f"config.json {name}={value}: only square sizes are supported")
            value = value[0]
        return int(value)

    names = {
        "hidden_size": "hidden_size",
        "num_hidden_layers": "num_layers",
        "num_attention_heads": "num_heads",
        "intermediate_size": "mlp_dim",
        "vocab_size": "vocab_size",
        "max_position_embeddings": "max_text_len",
        "type_vocab_size": "type_vocab_size",
        "modality_type_vocab_size": "modality_vocab_size",
        "num_channels": "in_chans",
        "qkv_bias": "qkv_bias",
    }
    arch: dict[str, Any] = {ours: config[theirs] for theirs, ours in names.items() if theirs in config}
    for name in ("patch_size", "image_size"):
        if name in config:
            arch[name] = single(config[name], name)
    if "layer_norm_eps" in config:
        # transformers applies one epsilon to every LayerNorm of the encoder and embeddings.
        arch["layer_norm_eps"] = arch["text_layer_norm_eps"] = float(config["layer_norm_eps"])
    return arch, names_from_id2label(config)


def _config_note(config: Mapping[str, Any] | None) -> str:
    architectures = (config or {}).get("architectures") or []
    if architectures and _VQA_CLASS not in architectures:
        return f"config.json says this is a {', '.join(architectures)} checkpoint; vilt_b32_vqa loads {_VQA_CLASS} ones"
    return ""


def _add_hf_prefix(layout: str, state: dict, model: nn.Module | None) -> dict:
    # a bare ViltModel state dict, without the task model's "vilt." prefix
    if layout != "hf" or any(k.startswith("vilt.") for k in state):
        return state
    return {(k if k.startswith("classifier.") else "vilt." + k): v for k, v in state.items()}


# ---------------------------------------------------------------------------------------
# mobilevt's own files: what save_weights stores beside the tensors


def _exit_options(model: nn.Module) -> dict[str, Any] | None:
    if not model.exit_layers:
        return None
    return {
        "exit_layers": list(model.exit_layers),
        "predictor_layer": int(model.predictor_layer),
        "predictor_hidden": int(model.exit_predictor[0].fc1.out_features),
        "predictor_risk": float(model.predictor_risk),
    }


def vilt_metadata(model: nn.Module) -> dict[str, str]:
    """The safetensors metadata with which ``mobilevt.save_weights`` stores a ViLT: number
    of answers, architecture (every ``ViltArch`` field), the answer names and the exit
    heads' layers, all JSON."""
    metadata = {
        "num_classes": str(model.num_answers),
        _ARCH_KEY: json.dumps({name: getattr(model.arch, name) for name in VILT_ARCH_FIELDS}),
        _ANSWERS_KEY: json.dumps(list(model.answers)),
    }
    exits = _exit_options(model)
    if exits is not None:
        metadata[_EXITS_KEY] = json.dumps(exits)
    if getattr(model, "answer_softmax", False):
        metadata[_SCORES_KEY] = "softmax"
    rule = getattr(model, "image_size_rule", VILT_IMAGE_SIZE_RULE)
    if rule != VILT_IMAGE_SIZE_RULE:
        metadata[_IMAGE_RULE_KEY] = json.dumps(rule.to_dict())
    return metadata


def vilt_options_from_metadata(metadata: Mapping[str, str]) -> dict[str, Any]:
    """Architecture fields and exit options a mobilevt file records (empty for a bare
    state dict). Fields a newer mobilevt may have written are ignored."""
    try:
        arch = json.loads(metadata[_ARCH_KEY]) if _ARCH_KEY in metadata else {}
        exits = json.loads(metadata[_EXITS_KEY]) if _EXITS_KEY in metadata else {}
        options = {k: v for k, v in arch.items() if k in VILT_ARCH_FIELDS}
        if exits:
            options.update({name: exits[name] for name in EXIT_OPTIONS})
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointMismatchError(
            f"the file's ViLT metadata is unreadable ({type(err).__name__}: {err}); "
            "re-save the model with mobilevt.save_weights"
        ) from err
    return options


def apply_vilt_settings(model: nn.Module, metadata: Mapping[str, str]) -> None:
    """What a mobilevt file stores beside the weights, set on the loaded model: softmax
    answer scores for a model trained with them and the image size rule of a model trained on
    other images than ViLT's (a mobilevt file without them gives ViLT's sigmoid and rule; other
    checkpoints record neither and change nothing), and the exit predictor's calibrated risk
    (files from before the calibration keep the model's default)."""
    try:
        if _ARCH_KEY in metadata:  # a mobilevt file: a setting it does not record is ViLT's
            model.answer_softmax = metadata.get(_SCORES_KEY, "sigmoid") == "softmax"
            rule = metadata.get(_IMAGE_RULE_KEY)
            model.image_size_rule = ViltImageSizeRule.from_dict(json.loads(rule)) if rule else VILT_IMAGE_SIZE_RULE
        if _EXITS_KEY not in metadata or not getattr(model, "exit_layers", None):
            return
        risk = json.loads(metadata[_EXITS_KEY]).get("predictor_risk")
    except (ValueError, AttributeError, TypeError) as err:
        raise CheckpointMismatchError(
            f"the file's ViLT settings are unreadable ({type(err).__name__}: {err}); re-save the model"
        ) from err
    if risk is not None:
        model.predictor_risk = float(risk)


# ---------------------------------------------------------------------------------------
# What to tell the user when a checkpoint does not fit


def _has_exit_keys(keys: Iterable[str]) -> bool:
    return any(k.startswith(("exit_heads.", "exit_predictor.")) for k in keys)


def _differences_from_file(model: nn.Module, checkpoint: Any) -> str:
    """What a mobilevt file records that differs from ``model`` (architecture, exits)."""
    if "vilt_arch" not in checkpoint.metadata and _EXITS_KEY not in checkpoint.metadata:
        return ""
    stored = vilt_options_from_metadata(checkpoint.metadata)
    differ = [
        f"{k}={v!r} (model {getattr(model.arch, k)!r})"
        for k, v in stored.items()
        if k in VILT_ARCH_FIELDS and getattr(model.arch, k) != v
    ]
    ours = _exit_options(model)
    ours = None if ours is None else {k: ours[k] for k in EXIT_OPTIONS}  # the structure; not the threshold
    if "exit_layers" in stored and {k: stored[k] for k in EXIT_OPTIONS} != ours:
        differ.append(
            f"exit heads after layers {list(stored['exit_layers'])}, predictor after layer "
            f"{stored['predictor_layer']} (model: "
            + ("none" if ours is None else f"{ours['exit_layers']}, {ours['predictor_layer']}")
            + ")"
        )
    if not differ:
        return ""
    name = getattr(model, "model_name", "vilt_b32_vqa")
    return (
        f"the checkpoint is a ViLT with {'; '.join(differ)}: create the model from the file instead, "
        f"mobilevt.create_model({name!r}, weights=path)"
    )


def _exits_note(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], model: nn.Module) -> str:
    if _has_exit_keys(state) and _EXITS_KEY not in metadata and not model.exit_layers:
        return (
            "the checkpoint has MobiVQA exit heads (exit_heads.*, exit_predictor.*) but its metadata does not "
            "say after which layers (a file not written by mobilevt.save_weights): create the model, call "
            "model.add_early_exits(exit_layers, predictor_layer=...) and load the file with "
            "mobilevt.load_weights(model, path)"
        )
    if model.exit_layers and not _has_exit_keys(state):
        return (
            "the model has MobiVQA exit heads the checkpoint lacks: load the weights first, then call "
            "add_early_exits (and train the heads)"
        )
    return ""


def _size_note(found: Mismatch) -> str:
    if found.mis_shaped:
        return (
            "the checkpoint is a ViLT of another size: pass its architecture (hidden_size=, num_layers=, "
            "num_heads=, mlp_dim=, vocab_size=, max_text_len=, image_size=, patch_size=) to create_model, or "
            "load its folder with config.json"
        )
    keys = list(found.missing) + list(found.unexpected)
    if keys and all(k.startswith(_LAYER_PREFIXES[found.layout]) for k in keys):
        depth = _checkpoint_depth(found.layout, found.state)
        return (
            f"the checkpoint has {depth} encoder layers, the model "
            f"{_checkpoint_depth('mobilevt', found.model.state_dict())}: it is a ViLT of another size; pass its "
            f"architecture (num_layers={depth}, hidden_size=, num_heads=, mlp_dim= ...) to create_model, or load "
            "its folder with config.json"
        )
    return ""


def _explain(found: Mismatch) -> str:
    other = next((what for prefix, what in _OTHER_TASKS if any(k.startswith(prefix) for k in found.unexpected)), None)
    note = (
        _differences_from_file(found.model, found.checkpoint)
        or _config_note(found.checkpoint.config)
        or _exits_note(found.state, found.checkpoint.metadata, found.model)
        or _size_note(found)
    )
    return "; ".join(([f"this is {other}, not a VQA checkpoint"] if other else []) + ([note] if note else []))


def _refuse_loading(model: nn.Module, checkpoint: Any) -> str:
    if "transformer.patch_embed.proj.weight" in checkpoint.state_dict and model.arch.layer_norm_eps != 1e-6:
        name = getattr(model, "model_name", "vilt_b32_vqa")
        logger.warning(
            "%s: dandelin/ViLT checkpoints were trained with LayerNorm eps 1e-6, the model uses %g; its answers will "
            "differ slightly. Create the model with mobilevt.create_model(%r, weights=path) instead.",
            name,
            model.arch.layer_norm_eps,
            name,
        )
    return _differences_from_file(model, checkpoint)


def _head_keys(model: nn.Module) -> list[str]:
    # the answer classifiers: the model's and each exit head's last layer
    return [
        k
        for k in model.state_dict()
        if k.startswith("head.fc2.") or (k.startswith("exit_heads.") and ".head.fc2." in k)
    ]


VILT_CHECKPOINTS = CheckpointFamily(
    name="vilt",
    layouts=(
        ("mobilevt", "image_embeddings.patch_embed.weight"),
        ("hf", "vilt.embeddings.patch_embeddings.projection.weight"),
        ("dandelin", "transformer.patch_embed.proj.weight"),
        ("hf", "embeddings.patch_embeddings.projection.weight"),  # a bare ViltModel
    ),
    source_keys=lambda layout, key, model: vilt_source_keys(layout, key),
    head_keys=_head_keys,
    not_this_family=_not_vilt,
    num_classes_option="num_answers",
    default_num_classes=3129,
    ignored_keys=_IGNORED,
    prepare_state=_add_hf_prefix,
    options_from_config=lambda config: vilt_options_from_hf_config(config),
    options_from_metadata=vilt_options_from_metadata,
    apply_settings=apply_vilt_settings,
    metadata_of=vilt_metadata,
    # dandelin/ViLT's ViT norms use timm's 1e-6, its BERT embeddings 1e-12
    layout_options={"dandelin": {"layer_norm_eps": 1e-6, "text_layer_norm_eps": 1e-12}},
    names_attribute="answers",
    explain=_explain,
    refuse_loading=_refuse_loading,
)

"""ViLT checkpoints: layouts, key conversion, and ``create_model("vilt_b32_vqa", weights=...)``.

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
  MobiVQA exit layers in their metadata (:func:`vilt_weights_metadata`), so
  ``create_model("vilt_b32_vqa", weights=file)`` rebuilds any ViLT size, with its exits.

As for MobileViT (:mod:`mobilevt.weights.convert`), conversion pulls: every key of the
target model names the source key(s) holding it, every source key must be used, so a
checkpoint of another task or size is refused with the keys named.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlparse

import torch
from torch import nn

from .convert import HF_TRANSFORMER_LAYER_KEYS, CheckpointMismatchError, mismatch_lines
from .entries import Weights
from .loading import HF_PREFIX, WeightsNotFoundError, hub_file, read_checkpoint, resolve_source

logger = logging.getLogger(__name__)

VILT_LAYOUTS = ("mobilevt", "hf", "dandelin")

_SIGNATURES = (
    ("mobilevt", "image_embeddings.patch_embed.weight"),
    ("hf", "vilt.embeddings.patch_embeddings.projection.weight"),
    ("dandelin", "transformer.patch_embed.proj.weight"),
)
# Buffers some checkpoints carry that the model recomputes (BERT's position ids).
_IGNORED = {
    "hf": ("vilt.embeddings.text_embeddings.position_ids", "vilt.embeddings.text_embeddings.token_type_ids"),
    "dandelin": ("text_embeddings.position_ids",),
    "mobilevt": (),
}
# Heads of other ViLT tasks, to say what a refused checkpoint is.
_OTHER_TASKS = (
    ("mlm_score.", "a masked-language-model (pre-training) checkpoint"),
    ("itm_score.", "a pre-training checkpoint (image-text matching head)"),
    ("rank_output.", "an image-text retrieval checkpoint"),
    ("nlvr2_classifier.", "an NLVR2 (two-image) checkpoint"),
)
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_./-]+)?$")
_VQA_CLASS = "ViltForQuestionAnswering"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")


def detect_vilt_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the layout of a ViLT state dict: one of ``VILT_LAYOUTS``."""
    for layout, signature in _SIGNATURES:
        if signature in state_dict:
            return layout
    if "embeddings.patch_embeddings.projection.weight" in state_dict:
        return "hf"  # a bare ViltModel; its missing classifier is reported by the conversion
    sample = ", ".join(list(state_dict)[:6])
    hint = ""
    try:
        from .convert import detect_layout

        hint = f" It is a MobileViT checkpoint ({detect_layout(state_dict)} layout): create a mobilevit model instead."
    except CheckpointMismatchError:
        pass
    raise CheckpointMismatchError(
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
    raise ValueError(f"unknown ViLT checkpoint layout {layout!r}; expected one of {', '.join(VILT_LAYOUTS)}")


def convert_vilt_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    target_keys: Iterable[str] | nn.Module,
    layout: str | None = None,
    model_name: str = "vilt_b32_vqa",
    note: str = "",
) -> dict[str, torch.Tensor]:
    """Convert a ViLT state dict of any supported layout to mobilevt's keys.

    ``target_keys`` are the model's state-dict keys (or the model itself). Raises
    ``CheckpointMismatchError`` naming the missing and unexpected keys when the
    checkpoint is of another task or depth.
    """
    target_keys = list(target_keys.state_dict() if isinstance(target_keys, nn.Module) else target_keys)
    state = dict(state_dict)
    layout = layout or detect_vilt_layout(state)
    if layout == "hf" and not any(k.startswith("vilt.") for k in state):
        state = {(k if k.startswith("classifier.") else "vilt." + k): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    used = set(_IGNORED[layout])
    missing: list[str] = []
    for key in target_keys:
        sources = vilt_source_keys(layout, key)
        if all(s in state for s in sources):
            tensors = [state[s] for s in sources]
            out[key] = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)
            used.update(sources)
        else:
            missing.extend(s for s in sources if s not in state)
    unexpected = [k for k in state if k not in used]
    if missing or unexpected:
        if not note and all(_is_layer_key(layout, k) for k in missing + unexpected):
            depth = _checkpoint_depth(layout, state)
            note = (
                f"the checkpoint has {depth} encoder layers, the model {_checkpoint_depth('mobilevt', target_keys)}: "
                f"it is a ViLT of another size; pass its architecture (num_layers={depth}, hidden_size=, num_heads=, "
                "mlp_dim= ...) to create_model, or load its folder with config.json"
            )
        raise CheckpointMismatchError(
            _mismatch_message(model_name, layout, missing, unexpected, [], note), missing, unexpected
        )
    return out


_LAYER_PREFIXES = {"mobilevt": "encoder.layers.", "hf": "vilt.encoder.layer.", "dandelin": "transformer.blocks."}


def _is_layer_key(layout: str, key: str) -> bool:
    return key.startswith(_LAYER_PREFIXES[layout])


def _checkpoint_depth(layout: str, keys: Iterable[str]) -> int:
    prefix = _LAYER_PREFIXES[layout]
    indices = {int(k[len(prefix) :].split(".", 1)[0]) for k in keys if k.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def _mismatch_message(
    model_name: str, layout: str, missing: list[str], unexpected: list[str], mis_shaped: list[str], note: str
) -> str:
    other = next((what for prefix, what in _OTHER_TASKS if any(k.startswith(prefix) for k in unexpected)), None)
    fixes = ([f"this is {other}, not a VQA checkpoint"] if other else []) + ([note] if note else [])
    return "\n".join(mismatch_lines(model_name, layout, missing, unexpected, mis_shaped, "; ".join(fixes) or None))


def check_vilt_shapes(
    model: nn.Module, state: Mapping[str, torch.Tensor], layout: str, model_name: str = "vilt_b32_vqa", note: str = ""
) -> None:
    """Raise ``CheckpointMismatchError`` naming every key whose shape differs from ``model``'s."""
    target = model.state_dict()
    mis_shaped = [
        f"{k} {list(v.shape)} vs model {list(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    if mis_shaped:
        note = note or (
            "the checkpoint is a ViLT of another size: pass its architecture (hidden_size=, num_layers=, "
            "num_heads=, mlp_dim=, vocab_size=, max_text_len=, image_size=, patch_size=) to create_model, or load "
            "its folder with config.json"
        )
        raise CheckpointMismatchError(_mismatch_message(model_name, layout, [], [], mis_shaped, note), mis_shaped=mis_shaped)


# ---------------------------------------------------------------------------------------
# transformers' config.json


def arch_from_hf_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
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
    answers: list[str] = []
    id2label = config.get("id2label")
    if isinstance(id2label, Mapping) and id2label:
        labels = {int(k): str(v) for k, v in id2label.items()}
        if sorted(labels) == list(range(len(labels))):
            answers = [labels[i] for i in range(len(labels))]
    return arch, answers


def _config_note(config: Mapping[str, Any] | None) -> str:
    architectures = (config or {}).get("architectures") or []
    if architectures and _VQA_CLASS not in architectures:
        return f"config.json says this is a {', '.join(architectures)} checkpoint; vilt_b32_vqa loads {_VQA_CLASS} ones"
    return ""


# ---------------------------------------------------------------------------------------
# Sources


def _download_config_from_hub(repo: str) -> dict[str, Any] | None:
    from huggingface_hub.constants import HF_HUB_CACHE

    repo_id = repo.partition("@")[0]
    try:
        path = hub_file(repo, "config.json")
    except Exception as err:  # offline, not found, auth ...
        if type(err).__name__ in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
            return None  # a repository of weights only
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsNotFoundError(
            f"could not get config.json of {repo_id} from the Hugging Face Hub ({type(err).__name__}: {reason}). "
            f"If this machine is offline, download config.json and model.safetensors (or pytorch_model.bin) from "
            f"https://huggingface.co/{repo_id} on a connected machine into one folder and pass that folder as "
            f"weights=..., or fill the Hub cache at {HF_HUB_CACHE} (`hf download {repo_id}` on a connected machine, then copy it)."
        ) from err
    return json.loads(Path(path).read_text(encoding="utf-8"))


def resolve_vilt_source(weights: str | os.PathLike | Weights) -> tuple[Path, dict[str, Any] | None, str | None]:
    """Local weights file, the ``config.json`` beside it (if any) and its sha256 for a
    ViLT weights source: a model folder, a file, an http(s) URL, ``hf-hub:<org>/<repo>``
    or a bare Hub id ``<org>/<repo>`` that is not a local path."""
    sha256 = None
    if isinstance(weights, Weights):
        sha256 = weights.sha256
        weights = weights.source
    text = os.fspath(weights)
    repo = None
    if text.startswith(HF_PREFIX):
        repo = text[len(HF_PREFIX) :]
    elif urlparse(text).scheme in ("http", "https", "file"):
        return resolve_source(text, sha256), None, sha256
    else:
        path = Path(text).expanduser()
        if path.exists():
            folder = path if path.is_dir() else path.parent
            config_path = folder / "config.json"
            config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None
            return resolve_source(path), config, sha256
        if _HUB_ID.match(text) and not text.endswith(_WEIGHT_SUFFIXES):
            repo = text
    if repo is None:
        return resolve_source(text), None, sha256  # raises WeightsNotFoundError naming the forms accepted
    config = _download_config_from_hub(repo)
    return resolve_source(HF_PREFIX + repo), config, sha256


# ---------------------------------------------------------------------------------------
# mobilevt's own files: what save_weights stores beside the tensors

_ARCH_KEY = "vilt_arch"
_ANSWERS_KEY = "answers"
_EXITS_KEY = "vilt_exits"


@dataclass(frozen=True)
class ViltExits:
    """The MobiVQA exit heads of a model: ``add_early_exits``'s arguments."""

    exit_layers: tuple[int, ...]
    predictor_layer: int
    predictor_hidden: int

    @classmethod
    def of(cls, model: nn.Module) -> ViltExits | None:
        if not model.exit_layers:
            return None
        return cls(tuple(model.exit_layers), int(model.predictor_layer), int(model.exit_predictor[0].fc1.out_features))

    def add_to(self, model: nn.Module) -> None:
        model.add_early_exits(list(self.exit_layers), self.predictor_layer, self.predictor_hidden)


def vilt_weights_metadata(model: nn.Module) -> dict[str, str]:
    """The safetensors metadata with which ``mobilevt.save_weights`` stores a ViLT: model
    name, number of answers, architecture (every :class:`~mobilevt.models.vilt.ViltArch`
    field), the answer names (``id2label``) and the exit heads' layers, all JSON."""
    metadata = {
        "model": str(getattr(model, "model_name", None) or "vilt_b32_vqa"),
        "num_classes": str(model.num_answers),
        _ARCH_KEY: json.dumps(asdict(model.arch)),
        _ANSWERS_KEY: json.dumps(list(model.answers)),
    }
    exits = ViltExits.of(model)
    if exits is not None:
        metadata[_EXITS_KEY] = json.dumps(asdict(exits))
    return metadata


def _stored_vilt(metadata: Mapping[str, str]) -> tuple[dict[str, Any], list[str], ViltExits | None]:
    """Architecture fields, answers and exits from a mobilevt file's metadata (empty when
    the file has none: a bare state dict)."""
    from ..models.vilt import ARCH_FIELDS

    try:
        arch = json.loads(metadata[_ARCH_KEY]) if _ARCH_KEY in metadata else {}
        answers = [str(a) for a in json.loads(metadata[_ANSWERS_KEY])] if _ANSWERS_KEY in metadata else []
        exits = json.loads(metadata[_EXITS_KEY]) if _EXITS_KEY in metadata else None
        # Fields a newer mobilevt may have written are ignored; missing ones take their defaults.
        arch = {k: v for k, v in arch.items() if k in ARCH_FIELDS}
        if exits is not None:
            exits = ViltExits(tuple(int(n) for n in exits["exit_layers"]), int(exits["predictor_layer"]),
                              int(exits["predictor_hidden"]))
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointMismatchError(f"the file's ViLT metadata is unreadable ({type(err).__name__}: {err}); "
                                      "re-save the model with mobilevt.save_weights") from err
    return arch, answers, exits


def _has_exit_keys(keys: Iterable[str]) -> bool:
    return any(k.startswith(("exit_heads.", "exit_predictor.")) for k in keys)


def _exits_note(state: Mapping[str, torch.Tensor], exits: ViltExits | None, model_has_exits: bool) -> str:
    if _has_exit_keys(state) and exits is None and not model_has_exits:
        return ("the checkpoint has MobiVQA exit heads (exit_heads.*, exit_predictor.*) but its metadata does not "
                "say after which layers (a file not written by mobilevt.save_weights): create the model, call "
                "model.add_early_exits(exit_layers, predictor_layer=...) and load the file with "
                "mobilevt.load_weights(model, path)")
    if model_has_exits and not _has_exit_keys(state):
        return ("the model has MobiVQA exit heads the checkpoint lacks: load the weights first, then call "
                "add_early_exits (and train the heads)")
    return ""


def _config_beside(path: Path | None) -> dict[str, Any] | None:
    if path is None or not (path.parent / "config.json").is_file():
        return None
    try:
        return json.loads((path.parent / "config.json").read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None


def load_vilt_weights(model: nn.Module, checkpoint) -> None:
    """``mobilevt.load_weights`` for ViLT: load a Hugging Face, dandelin ``.ckpt`` or
    mobilevt checkpoint (a :class:`~mobilevt.weights.loading.Checkpoint`) into ``model``
    strictly, and take the checkpoint's answer names (mobilevt metadata, or the
    ``id2label`` of the ``config.json`` beside a Hugging Face file) when it has them.

    Every key must match in name and shape, and a mobilevt file's recorded architecture
    and exit layers must equal the model's: otherwise ``CheckpointMismatchError`` names
    what differs (``create_model(name, weights=file)`` builds the model the file needs).
    """
    name = str(getattr(model, "model_name", None) or "vilt_b32_vqa")
    state = checkpoint.state_dict
    layout = detect_vilt_layout(state)
    answers: list[str] = []
    note = ""
    exits = None
    if layout == "mobilevt":
        arch, answers, exits = _stored_vilt(checkpoint.metadata)
        differ = [f"{k}={v!r} (model {getattr(model.arch, k)!r})" for k, v in arch.items() if getattr(model.arch, k) != v]
        if exits is not None and exits != ViltExits.of(model):
            ours = ViltExits.of(model)
            differ.append(f"exit heads after layers {list(exits.exit_layers)}, predictor after layer "
                          f"{exits.predictor_layer} (model: "
                          + ("none" if ours is None else f"{list(ours.exit_layers)}, {ours.predictor_layer}") + ")")
        if differ:
            note = (f"the checkpoint is a ViLT with {'; '.join(differ)}: create the model from the file instead, "
                    f"mobilevt.create_model({name!r}, weights=path)")
    elif layout == "hf":
        config = _config_beside(checkpoint.path)
        if config is not None:
            _, answers = arch_from_hf_config(config)
            note = _config_note(config)
    elif layout == "dandelin" and model.arch.layer_norm_eps != 1e-6:
        logger.warning(
            "%s: dandelin/ViLT checkpoints were trained with LayerNorm eps 1e-6, the model uses %g; its answers will "
            "differ slightly. Create the model with mobilevt.create_model(%r, weights=path) instead.",
            name, model.arch.layer_norm_eps, name,
        )
    note = note or _exits_note(state, exits, bool(model.exit_layers))
    converted = convert_vilt_state_dict(state, model, layout, name, note)
    check_vilt_shapes(model, converted, layout, name, note)
    if layout == "mobilevt" and note.startswith("the checkpoint is a ViLT with"):
        # every key fits, but not what the keys do not show (norm eps, exit layers ...)
        raise CheckpointMismatchError(_mismatch_message(name, layout, [], [], [], note))
    params = model.state_dict()
    model.load_state_dict({k: v.to(dtype=params[k].dtype) for k, v in converted.items()}, strict=True)
    if answers and len(answers) == model.num_answers:
        model.answers = list(answers)


# ---------------------------------------------------------------------------------------
# create_model hook


def _build(entry, options: Mapping[str, Any], exits: ViltExits | None, **head: Any) -> nn.Module:
    model = entry.builder(**head, **options)
    if exits is not None:
        exits.add_to(model)
    return model


def create_vilt(entry, weights=None, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """``create_model`` for ViLT: build the model and load weights from any source.

    The architecture is ViLT-B/32 (the registered variant), replaced by the fields of an
    Hugging Face folder's ``config.json`` or a mobilevt file's metadata, replaced in turn
    by explicit keyword arguments (``hidden_size=``, ``num_layers=`` ... of
    :class:`~mobilevt.models.vilt.ViltArch`). ``num_classes`` is the number of answers: by
    default the checkpoint's; when it differs, every weight but the last classifier layer
    (and the exit heads, which answer the old vocabulary) is loaded (fine-tuning on a new
    answer vocabulary). ``model.answers`` comes from ``config.json``'s ``id2label`` or the
    mobilevt file; a mobilevt file's MobiVQA exit heads are rebuilt after their layers.
    """
    if weights is None:
        model = entry.builder(num_answers=3129 if num_classes is None else num_classes, **kwargs)
        model.model_name = entry.name
        model.pretrained_weights = None
        return model

    weights_path, config, _ = resolve_vilt_source(weights)
    checkpoint = read_checkpoint(weights_path)
    layout = detect_vilt_layout(checkpoint.state_dict)
    options: dict[str, Any] = {}
    answers: list[str] = []
    exits: ViltExits | None = None
    note = ""
    if layout == "hf" and config is not None:
        options, answers = arch_from_hf_config(config)
        note = _config_note(config)
    elif layout == "dandelin":
        # dandelin/ViLT's ViT norms use timm's 1e-6, its BERT embeddings 1e-12.
        options = {"layer_norm_eps": 1e-6, "text_layer_norm_eps": 1e-12}
    elif layout == "mobilevt":
        options, answers, exits = _stored_vilt(checkpoint.metadata)
        note = _exits_note(checkpoint.state_dict, exits, False)
    options.update(kwargs)
    user_answers = options.pop("answers", None)

    with torch.device("meta"):
        skeleton = _build(entry, options, exits)
    converted = convert_vilt_state_dict(checkpoint.state_dict, skeleton, layout, entry.name, note)
    checkpoint_answers = converted["head.fc2.weight"].shape[0]
    num_answers = checkpoint_answers if num_classes is None else num_classes
    if num_answers != checkpoint_answers:
        logger.warning(
            "%s: the checkpoint has %d answers, the model %d: loading everything but the last classifier layer%s, "
            "which is freshly initialised",
            entry.name, checkpoint_answers, num_answers, " and the exit heads" if exits is not None else "",
        )
        converted = {k: v for k, v in converted.items() if not k.startswith("head.fc2.") and not _has_exit_keys([k])}
        answers = []
        exits = None
    if user_answers is not None:
        answers = list(user_answers)
    elif answers and len(answers) != num_answers:
        logger.warning("%s: the checkpoint names %d answers for %d outputs; ignoring them", entry.name, len(answers), num_answers)
        answers = []

    with torch.device("meta"):
        skeleton = _build(entry, options, exits, num_answers=num_answers, answers=answers)
    check_vilt_shapes(skeleton, converted, layout, entry.name, note)
    if num_answers != checkpoint_answers:
        model = _build(entry, options, exits, num_answers=num_answers, answers=answers)
        fresh = {k: v for k, v in model.state_dict().items() if k.startswith("head.fc2.")}
        model.load_state_dict({**converted, **fresh}, strict=True)
    else:
        # Every tensor comes from the checkpoint: assign it instead of initialising
        # 100M parameters only to overwrite them.
        model = skeleton
        params = dict(model.state_dict())
        model.load_state_dict(
            {k: v.to(dtype=params[k].dtype).contiguous() for k, v in converted.items()}, strict=True, assign=True
        )
    model.model_name = entry.name
    model.pretrained_weights = weights if isinstance(weights, Weights) else None
    return model

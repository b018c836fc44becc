"""Training configuration: typed dataclasses read from YAML, with ``key.sub=value``
overrides, checked before anything runs (unknown keys and wrong types are named)."""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import MobilevtError
from .task_registry import task_names


class ConfigError(MobilevtError, ValueError):
    """A configuration that cannot be trained: unknown key, wrong type or bad value."""


class TrainingError(MobilevtError, RuntimeError):
    """Training cannot go on (NaN loss, a checkpoint of another model ...)."""


# evaluation keeps this share of the resized image (ml-cvnets' and timm's ImageNet crop_pct)
IMAGENET_EVAL_CROP = 0.875


@dataclass
class DataConfig:
    # "digits" (scikit-learn's handwritten digits, no download) or an ImageFolder root
    # with train/ and val/ subfolders (or set train_dir / val_dir)
    dataset: str = "digits"
    train_dir: str | None = None
    val_dir: str | None = None
    val_fraction: float = 0.2  # digits only: held-out share
    # evaluation resizes the shorter side to image_size / eval_crop, then center-crops
    # image_size (timm's crop_pct; ml-cvnets' 0.875); 1.0 keeps the whole image
    eval_crop: float = IMAGENET_EVAL_CROP
    workers: int = 2


@dataclass
class SamplerConfig:
    name: str = "multiscale"  # or "fixed"
    image_size: int = 256  # base resolution (the evaluation size)
    min_size: int = 160
    max_size: int = 320
    num_scales: int = 5
    divisor: int = 32


@dataclass
class AugmentConfig:
    random_resized_crop_scale: list = field(default_factory=lambda: [0.08, 1.0])
    interpolation: str = "bilinear"  # of RandomResizedCrop: bilinear (v1) or bicubic (v2)
    hflip: bool = True
    rand_augment: bool = False
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # dense tasks (segmentation, detection): probability of torchvision's
    # RandomPhotometricDistort (brightness, contrast, saturation, hue, channel order)
    photometric_distort: float = 0.0
    # detection (SSD): probability of RandomZoomOut (canvas up to zoom_out_max x the image,
    # filled with the ImageNet mean) and whether to apply RandomIoUCrop
    zoom_out: float = 0.0
    zoom_out_max: float = 4.0
    iou_crop: bool = False


@dataclass
class OptimConfig:
    lr: float = 2e-3
    min_lr: float = 2e-4
    weight_decay: float = 0.01
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 3000
    clip_grad_norm: float | None = None
    accumulation_steps: int = 1


@dataclass
class TrainConfig:
    # what is trained: "classification", "segmentation" or "detection"
    # (mobilevt.training.tasks; the model must be of that task)
    task: str = "classification"
    model: str = "mobilevit_xxs"
    weights: str | None = None  # start from a checkpoint (fine-tuning); the head is replaced if classes differ
    epochs: int = 300
    batch_size: int = 128  # per process, at the base resolution
    label_smoothing: float = 0.1
    # segmentation: weight the cross-entropy per batch by ENet's 1 / ln(1.1 + class frequency)
    # (ml-cvnets' loss.segmentation.cross_entropy.class_weights) against class imbalance
    class_weights: bool = False
    ema_decay: float | None = 0.9995  # ml-cvnets' EMA momentum 0.0005; null disables
    drop_path_rate: float = 0.0
    # further create_model keyword arguments of the model (e.g. a segmenter's
    # output_stride: 8, aux_head: true, backbone_weights: DEFAULT)
    model_options: dict = field(default_factory=dict)
    amp: str = "none"  # "bf16" or "fp16" on CUDA
    channels_last: bool = False
    device: str = "auto"
    seed: int = 0
    output_dir: str = "runs/train"
    save_every_steps: int = 0  # also checkpoint every N optimizer steps (0: per epoch only)
    max_steps: int = 0  # stop after N optimizer steps (0: all epochs); for smoke runs
    # stop after the first epoch whose validation metric (the model's or its EMA's) reaches this,
    # in the task's unit (top1: %, miou and map50: 0-1); the schedule stays that of all epochs
    stop_at_metric: float | None = None
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def builtin_recipes() -> list[str]:
    folder = resources.files("mobilevt.training").joinpath("recipes")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_config(source: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML recipe (a path, or the name of a built-in recipe such as ``digits``),
    apply ``section.key=value`` overrides, and validate every key and type."""
    data: dict[str, Any] = {}
    if source is not None:
        path = Path(source)
        if not path.is_file():
            if str(source) in builtin_recipes():
                text = resources.files("mobilevt.training").joinpath("recipes", f"{source}.yaml").read_text()
            else:
                raise ConfigError(
                    f"{source}: no such config file, and not a built-in recipe ({', '.join(builtin_recipes())})"
                )
        else:
            text = path.read_text()
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of keys, not {type(data).__name__}")
    for override in overrides or []:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r} is not key=value (e.g. optim.lr=1e-3)")
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {override!r}: {part!r} is not a section")
        target[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
    return _build(TrainConfig, data, "")


def _build(cls, data: dict[str, Any], prefix: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f" in section {prefix.rstrip('.')!r}" if prefix else ""
        close = [prefix + match for u in unknown for match in difflib.get_close_matches(u, names, n=1, cutoff=0.6)]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown config key(s){where}: {', '.join(prefix + u for u in unknown)}.{hint} known: {sorted(names)}"
        )
    values = {}
    for name, value in data.items():
        key = prefix + name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{key} must be a section (mapping), got {value!r}")
            values[name] = _build(hint, value, key + ".")
        else:
            values[name] = _check_type(key, value, hint)
    config = cls(**values)
    _validate(config, prefix)
    return config


def _check_type(key: str, value: Any, hint) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    if origin in (list, dict, tuple):  # list[str] ...: the container is checked
        hint = origin
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return value
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _validate(config, prefix: str) -> None:
    if isinstance(config, TrainConfig):
        if config.task not in task_names():
            raise ConfigError(f"task must be one of {', '.join(task_names())}, not {config.task!r}")
        if config.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"amp must be none, bf16 or fp16, not {config.amp!r}")
        for key in ("epochs", "batch_size"):
            if getattr(config, key) <= 0:
                raise ConfigError(f"{key} must be positive, got {getattr(config, key)}")
        if config.ema_decay is not None and not 0.0 < config.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in (0, 1) or null, got {config.ema_decay}")
    if isinstance(config, SamplerConfig) and config.name not in ("multiscale", "fixed"):
        raise ConfigError(f"{prefix}name must be 'multiscale' or 'fixed', not {config.name!r}")
    if isinstance(config, AugmentConfig) and config.interpolation not in ("bilinear", "bicubic"):
        raise ConfigError(f"{prefix}interpolation must be bilinear or bicubic, not {config.interpolation!r}")
    if isinstance(config, DataConfig) and not 0.0 < config.eval_crop <= 1.0:
        raise ConfigError(
            f"{prefix}eval_crop must be in (0, 1] (the share of the resized image kept), got {config.eval_crop}"
        )
    if isinstance(config, OptimConfig) and config.accumulation_steps < 1:
        raise ConfigError(f"{prefix}accumulation_steps must be >= 1")

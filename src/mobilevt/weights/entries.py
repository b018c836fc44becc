"""Weights entries: where a checkpoint lives, how its inputs must be prepared, and what
it scores. Modelled on torchvision's weights API, so that ``create_model(name,
weights=entry)`` and ``entry.transforms()`` go together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from ..data.preprocess import PreprocessConfig

__all__ = ["PreprocessConfig", "Weights"]

Layout = Literal["mobilevt", "cvnets", "timm", "hf", "mmpretrain"]


@dataclass(frozen=True)
class Weights:
    """One published checkpoint of one model variant."""

    model: str
    tag: str
    source: str  # https URL or "hf-hub:<repo id>"
    layout: Layout
    preprocess: PreprocessConfig
    # the published headline figure of these weights, in ``metric`` (top-1 %, mIoU % ...)
    score: float | None = None
    top5: float | None = None
    num_classes: int = 1000
    dataset: str = "ImageNet-1k"
    sha256: str | None = None
    paper_source: str = ""  # where the accuracy figure comes from
    # builder options these weights need beyond the model's defaults (output stride ...)
    arch_options: tuple[tuple[str, Any], ...] = ()
    metric: str = "top-1 %"  # what ``score`` measures on ``dataset``

    @property
    def top1(self) -> float | None:
        """ImageNet-style top-1 (%) of a classifier's weights; ``None`` for weights scored
        with another metric (see ``score`` and ``metric``)."""
        return self.score if self.metric == "top-1 %" else None

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    def transforms(self) -> nn.Module:
        return self.preprocess.transforms()

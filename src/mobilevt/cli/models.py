"""``mobilevt models``: params, MACs and published accuracy of every model."""

from __future__ import annotations

import json
import sys

import torch
from tqdm.auto import tqdm

from ..factory import create_model
from ..model_kind import ModelKind
from ..profiling import count_macs
from ..registry import get_model_entry, list_models


def configure_models_parser(p) -> None:
    p.add_argument("pattern", nargs="?", default=None, help="shell pattern, e.g. 'mobilevitv2_*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    p.set_defaults(func=lambda args: _models_table(args.pattern, args.json))


class _WithExampleText(torch.nn.Module):
    """A model taking ``input_ids, attention_mask, pixel_values, pixel_mask`` (ViLT) as
    the one-input module ``count_macs`` runs: the image comes from the counter, the rest
    from ``model.example_inputs``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        input_ids, attention_mask, _, pixel_mask = self.model.example_inputs(
            pixel_values.shape[0], tuple(pixel_values.shape[-2:])
        )
        return self.model(input_ids, attention_mask, pixel_values, pixel_mask)


def _models_table(pattern: str | None, as_json: bool) -> int:

    names = list_models(pattern)
    if not names:
        print(f"no model matches {pattern!r}", file=sys.stderr)
        return 1
    if as_json:  # one document at the end: a progress bar meanwhile (on a terminal)
        print(
            json.dumps(
                [_model_row(name) for name in tqdm(names, desc="profiling", unit="model", disable=None, leave=False)],
                indent=2,
            )
        )
        return 0
    # the table is printed row by row as each model is profiled (58 take ~30 s)
    print(
        "MACs = multiply-accumulates of one image at the input size: convolutions, linear layers and "
        "attention matmuls counted; element-wise ops not."
    )
    print(
        "| model | params (M) | MACs (G) | published MACs (G) | input | published accuracy | weights |\n"
        "|---|---:|---:|---:|---|---:|---|",
        flush=True,
    )
    for name in names:
        r = _model_row(name)
        score = f"{r['score']:.2f} {r['metric']} ({r['dataset']})" if r["score"] is not None else "-"
        published_macs = r["published_macs_g"] if r["published_macs_g"] is not None else "-"
        print(
            f"| {r['model']} | {r['params_m']:.2f} | {r['macs_g']:.3f} | {published_macs} | {r['resolution']} "
            f"| {score} | {', '.join(r['weights'])} |",
            flush=True,
        )
    return 0


def _model_row(name: str) -> dict:

    entry = get_model_entry(name)
    model = create_model(name)
    size = entry.default_preprocess.input_size
    resolution = f"{size[0]}x{size[1]}"
    if entry.kind != ModelKind.VQA:  # image in (classifiers, detectors ...)
        cost = count_macs(model, size)
    else:  # a model that also reads text (ViLT): profiled with its own full-length example question
        cost = count_macs(_WithExampleText(model), size)
        resolution += f" + {model.example_inputs()[0].shape[1]} tokens"
    weights = entry.default_weights
    score = weights.score if weights is not None else entry.published_top1
    return {
        "model": name,
        "params_m": round(cost.params / 1e6, 3),
        "macs_g": round(cost.macs / 1e9, 3),
        "published_macs_g": entry.published_macs_g,
        "resolution": resolution,
        "score": score,
        "top1": score if entry.kind == ModelKind.CLASSIFICATION else None,  # the field before "score"
        "metric": weights.metric if weights is not None else "top-1 %",
        "dataset": weights.dataset if weights is not None else "ImageNet-1k",
        "weights": [w.tag for w in entry.weights],
    }

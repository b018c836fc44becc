"""Helpers shared by the subcommands."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from mobilevt.console import terminal
from mobilevt.data.images import ImageDecodeError
from mobilevt.fileio import write_text_atomic
from mobilevt.weights.loading import recorded_model_name

from ..errors import InvalidInputError
from ..factory import create_model, is_random_weights
from ..model_kind import ModelKind
from ..registry import get_model_entry
from .values import device, folder_target, positive_int, writable_target


def add_dense_task_arguments(p, family: str, default_model: str, out_help: str, json_help: str) -> None:
    """The arguments ``segment`` and ``detect`` share: images or ``--evaluate DATA``, the
    model and its weights, where the pictures go, and the evaluation's batching."""
    p.add_argument(
        "inputs", nargs="*", metavar="IMAGE_OR_DIR", help="image files and/or folders (searched recursively)"
    )
    p.add_argument(
        "--model", help=f"a {family}_* model (default: the one a mobilevt weights file records, else {default_model})"
    )
    p.add_argument(
        "--weights",
        default="DEFAULT",
        help="weights tag, file, folder, URL or hf-hub:<repo> (default: "
        "the model's published weights; 'none' for random)",
    )
    p.add_argument(
        "--out", type=folder_target, default=".", help=f"folder for {out_help} (default: the current folder)"
    )
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--split", default="val", help="--evaluate: the dataset split (default val)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N images only")
    p.add_argument("--output", "-o", type=writable_target, help="--evaluate: write the scores as JSON to this file")
    p.add_argument("--device", type=device, default="auto", help="auto (CUDA if available), cpu, cuda ...")


def dense_task_model(args, command: str, kind: ModelKind, default_model: str) -> nn.Module:
    """The fused model of ``args`` for ``mobilevt segment`` / ``detect``, after checking
    that it is a ``kind`` model and that images or ``--evaluate DATA`` (not both) were given."""

    args.model = model_name_from_args(args.model, args.weights, default_model)
    entry = get_model_entry(args.model)
    if entry.kind != kind:
        family = default_model.split("_", 1)[0]
        raise InvalidInputError(f"{args.model} is a {entry.kind} model; mobilevt {command} takes a {family}_* model")
    what, metric = {"segment": ("segment", "mIoU on a dataset folder"), "detect": ("detect objects in", "COCO mAP")}[
        command
    ]
    if args.evaluate is None and not args.inputs:
        raise InvalidInputError(f"give images to {what}, or --evaluate DATA for {metric}")
    if args.evaluate is not None and args.inputs:
        raise InvalidInputError(f"give either images to {what} or --evaluate DATA, not both")
    return create_model_from_args(args.model, args.weights).fuse()


def run_dense_task(args, command: str, kind: ModelKind, default_model: str, apply, evaluate) -> int:
    """``mobilevt segment`` / ``detect``: the model, then ``evaluate(model, args)`` with
    ``--evaluate``, else ``apply(model, args)`` to the images."""
    model = dense_task_model(args, command, kind, default_model)
    return evaluate(model, args) if args.evaluate is not None else apply(model, args)


def existing_image_inputs(paths: list[str]) -> list:
    """The images under ``paths`` (files and folders); a missing path gets one error line."""

    from mobilevt.tasks.classification import expand_image_inputs

    for path in paths:
        if not os.path.exists(path):
            print(f"error: {path}: no such file or directory", file=sys.stderr)
    return expand_image_inputs([p for p in paths if os.path.exists(p)])


def report_per_image(args, paths: list[str], items: list, results: list, write_one, failed_rows: bool = False) -> int:
    """The end of ``predict``, ``segment`` and ``detect``: ``write_one(item, result)`` writes
    one image's outputs and returns its JSON row and its printed line; a missing path, an
    image that failed or one that cannot be drawn is one error line, and a last line counts
    them. With ``--json`` the rows are printed as JSON instead of the lines. Returns the exit
    code: 1 if any input failed or no image was found. ``failed_rows``: the JSON keeps a row
    (with its ``error``) for each image that failed, in the order of the images."""

    missing = sum(not os.path.exists(p) for p in paths)
    failed, rows = missing, []
    for item, result in zip(items, results):
        if result.error:
            print(f"error: {result.source}: {result.error}", file=sys.stderr)
            failed += 1
            if failed_rows:
                rows.append(result.to_dict())
            continue
        try:
            row, line = write_one(item, result)
        except ImageDecodeError as exc:  # pragma: no cover - decoded once already
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        rows.append(row)
        if not args.json:
            print(line)
    if args.json:
        print(json.dumps(rows, indent=2))
    if not items and not missing:
        print("error: no image files found in the given folders", file=sys.stderr)
        return 1
    if failed:
        print(f"{failed} of {len(items) + missing} inputs failed", file=sys.stderr)
    return 1 if failed else 0


def create_model_from_args(name: str, weights: str | None) -> nn.Module:
    """``--model``/``--weights`` to a model in eval mode: ``--weights`` is passed to
    ``create_model`` as it is (``DEFAULT``, a tag, a file, a URL, ``hf-hub:``, ``none``)."""
    if is_random_weights(weights):
        get_model_entry(name)  # an unknown name fails here, before the warning
        warn_random_weights(name, "predictions")
    return create_model(name, weights=weights).eval()


def warn_random_weights(name: str, outputs: str) -> None:
    print(f"warning: {name} has random weights (--weights none); its {outputs} are meaningless", file=sys.stderr)


def model_name_from_args(model: str | None, weights: str | None, default: str | None = None) -> str:
    """``--model``, else the model a mobilevt weights file records (``mobilevt train`` and
    ``save_weights`` write it), else ``default``."""
    if model:
        return model

    if weights and Path(weights).expanduser().is_file():
        recorded = recorded_model_name(Path(weights).expanduser())
        if recorded:
            return recorded
    if default:
        return default
    raise InvalidInputError(f"pass --model NAME: the weights {weights!r} do not record which model they belong to")


def report_evaluation(args, report: dict, failed: list, summary: list[str]) -> int:
    """``--evaluate``'s end for segment and detect: the JSON report to ``--output``, one
    error line per undecodable image, then the report (``--json``) or the summary lines;
    exit status 1 when an image failed."""

    if args.output:
        write_text_atomic(Path(args.output), json.dumps(report, indent=2) + "\n")
    for path in failed:
        print(f"error: {path}: undecodable image, not counted", file=sys.stderr)
    print(json.dumps(report, indent=2) if args.json else "\n".join(summary))
    return 1 if failed else 0


def stage_printer(model: str) -> Callable[[str], None]:
    """export_model's ``progress``: one stderr line per stage, with the seconds since the
    export started, so a minute-long conversion is never a silent wait."""
    start = time.perf_counter()

    def show(stage: str) -> None:
        print(f"{model}: [{time.perf_counter() - start:5.1f} s] {stage} ...", file=terminal(), flush=True)

    return show

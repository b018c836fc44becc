"""``mobilevt train``."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from ..fileio import DiskFullError
from .values import key_value


def configure_train_parser(p) -> None:
    p.description = "Multi-GPU / multi-node: torchrun --nproc_per_node N -m mobilevt train --config ..."
    p.add_argument("--config", default="digits", help="YAML file or built-in recipe name (default: digits)")
    p.add_argument(
        "overrides", nargs="*", type=key_value, metavar="KEY=VALUE", help="e.g. epochs=5 optim.lr=1e-3 data.workers=4"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    mode.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an earlier run's files in OUTPUT_DIR first (default: refuse a used folder)",
    )
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from mobilevt.training import load_config, train

    config = load_config(args.config, args.overrides)
    try:
        result = train(config, resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt:
        if int(os.environ.get("RANK", "0")) == 0:
            print(_resume_hint(config, args, "interrupted"), file=sys.stderr)
        return 130
    except DiskFullError as exc:  # what was saved before is whole (atomic writes): say where
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {exc}", file=sys.stderr)
            print(_resume_hint(config, args, "stopped"), file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    best = (
        f"top-1 {result.best_metric:.2f}%"
        if result.metric_name == "top1"
        else f"{result.metric_name} {result.best_metric:.4f}"
    )
    use = {"classification": "predict", "segmentation": "segment", "detection": "detect"}.get(config.task, "predict")
    print(
        f"best val {best} (epoch {result.best_epoch}) in {result.seconds:.0f} s, "
        f"{result.steps} steps; weights: {result.best_path} "
        f"(mobilevt {use} IMAGE --model {config.model} --weights {result.best_path})"
    )
    return 0


def _resume_hint(config, args, what: str) -> str:
    """One line for a run that stopped early (Ctrl-C, a full disk): the last good
    checkpoint and the command that resumes from it."""

    from mobilevt.training.trainer import CHECKPOINT, checkpoint_position

    path = Path(config.output_dir) / CHECKPOINT
    position = checkpoint_position(path)
    if position is None:
        command = shlex.join(["mobilevt", "train", "--config", args.config, *args.overrides, "--overwrite"])
        return f"{what} before the first checkpoint, nothing to resume; start again with: {command}"
    command = shlex.join(["mobilevt", "train", "--config", args.config, *args.overrides, "--resume"])
    return f"{what}; last good checkpoint {path} (epoch {position[0]}, step {position[1]}); resume with: {command}"

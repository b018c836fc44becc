"""``mobilevt train``."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune from a YAML recipe (built-in: digits, mobilevit_imagenet, ...)",
        description="Multi-GPU / multi-node: torchrun --nproc_per_node N -m mobilevt train --config ...",
    )
    p.add_argument("--config", default="digits", help="YAML file or built-in recipe name (default: digits)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. epochs=5 optim.lr=1e-3 data.workers=4")
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
            print(_interrupted(config, args), file=sys.stderr)
        return 130
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


def _interrupted(config, args) -> str:
    """One line for Ctrl-C: where the last checkpoint is and the command that resumes."""

    from mobilevt.training.trainer import CHECKPOINT, checkpoint_position

    path = Path(config.output_dir) / CHECKPOINT
    position = checkpoint_position(path)
    if position is None:
        command = shlex.join(["mobilevt", "train", "--config", args.config, *args.overrides, "--overwrite"])
        return f"interrupted before the first checkpoint, nothing to resume; start again with: {command}"
    command = shlex.join(["mobilevt", "train", "--config", args.config, *args.overrides, "--resume"])
    return f"interrupted; last checkpoint {path} (epoch {position[0]}, step {position[1]}); resume with: {command}"

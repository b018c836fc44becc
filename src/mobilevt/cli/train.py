"""``mobilevt train``."""
from __future__ import annotations

import os


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune from a YAML recipe (built-in: digits, mobilevit_imagenet, ...)",
        description="Multi-GPU / multi-node: torchrun --nproc_per_node N -m mobilevt train --config ...",
    )
    p.add_argument("--config", default="digits", help="YAML file or built-in recipe name (default: digits)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. epochs=5 optim.lr=1e-3 data.workers=4")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")


def run_train(args) -> int:
    from mobilevt.training import load_config, train

    config = load_config(args.config, args.overrides)
    result = train(config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    best = f"top-1 {result.best_metric:.2f}%" if result.metric_name == "top1" \
        else f"{result.metric_name} {result.best_metric:.4f}"
    use = {"classification": "predict", "segmentation": "segment", "detection": "detect"}.get(config.task, "predict")
    print(
        f"best val {best} (epoch {result.best_epoch}) in {result.seconds:.0f} s, "
        f"{result.steps} steps; weights: {result.best_path} "
        f"(mobilevt {use} IMAGE --model {config.model} --weights {result.best_path})"
    )
    return 0

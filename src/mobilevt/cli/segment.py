"""``mobilevt segment``: colour masks and overlays of images, or mIoU on a dataset folder."""

from __future__ import annotations

import functools

from ..model_kind import ModelKind
from .common import add_dense_task_arguments, existing_image_inputs, report_evaluation, report_per_image, run_dense_task
from .values import existing_dir


def configure_segment_parser(p) -> None:
    p.description = (
        "Segment images with a deeplabv3_* model, writing a palette PNG of class indices "
        "(<stem>_mask.png, VOC colours) and the image with the classes blended in (<stem>_overlay.png); or, "
        "with --evaluate, the mean IoU on a PASCAL VOC- or ADE20K-layout folder."
    )
    add_dense_task_arguments(
        p,
        "deeplabv3",
        "deeplabv3_mobilevit_s",
        "the mask and overlay PNGs",
        "print JSON (per image: class pixel fractions; or the scores)",
    )
    p.add_argument(
        "--evaluate",
        type=existing_dir,
        metavar="DATA",
        help="report mIoU on this dataset folder instead of segmenting images",
    )
    p.add_argument("--layout", choices=("voc", "ade20k"), help="dataset layout (default: detected)")
    p.set_defaults(
        func=functools.partial(
            run_dense_task,
            command="segment",
            kind=ModelKind.SEGMENTATION,
            default_model="deeplabv3_mobilevit_s",
            apply=_segment,
            evaluate=_evaluate,
        )
    )


def _segment(model, args) -> int:
    from mobilevt.tasks.segmentation import segment, write_segmentation

    items = existing_image_inputs(args.inputs)
    results = segment(model, items, device=args.device, on_error="report")

    def write_one(item, result):
        mask_path, overlay_path = write_segmentation(result, item, args.out)
        top = ", ".join(f"{name} {fraction:.1%}" for name, fraction in list(result.class_fractions().items())[:5])
        return (
            result.to_dict() | {"mask": str(mask_path), "overlay": str(overlay_path)},
            f"{result.source}: {top} -> {mask_path.name}, {overlay_path.name}",
        )

    return report_per_image(args, args.inputs, items, results, write_one)


def _evaluate(model, args) -> int:
    from mobilevt.tasks.segmentation import evaluate_segmentation

    result = evaluate_segmentation(
        model,
        args.evaluate,
        split=args.split,
        layout=args.layout,
        batch_size=args.batch_size,
        limit=args.limit,
        device=args.device,
    )
    summary = [
        f"mIoU {100 * result.miou:.2f}%  pixel accuracy {100 * result.pixel_accuracy:.2f}%  "
        f"mean accuracy {100 * result.mean_accuracy:.2f}%  ({result.num_images} images, "
        f"{result.images_per_second:.1f} images/s)"
    ]
    summary += [
        f"  {name:<20} IoU {'-' if iou != iou else f'{100 * iou:.2f}%'}"
        for name, iou in zip(result.class_names, result.iou)
    ]
    return report_evaluation(args, result.to_dict(), result.failed, summary)

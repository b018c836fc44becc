"""``mobilevt detect``: boxes and labels drawn on images, or COCO mAP on a dataset."""

from __future__ import annotations

import functools
from pathlib import Path

from torchvision.io import write_png

from mobilevt.data.images import load_image
from mobilevt.fileio import atomic_path

from ..model_kind import ModelKind
from .common import add_dense_task_arguments, existing_image_inputs, report_evaluation, report_per_image, run_dense_task
from .values import existing_dir, existing_file, probability, writable_target


def configure_detect_parser(p) -> None:
    p.description = (
        "Detect objects with an ssdlite_* model and write each image with its boxes and labels drawn "
        "(<stem>_detections.png); or, with --evaluate, compute COCO mAP (pycocotools) on an images folder and "
        "its COCO-format annotation file."
    )
    add_dense_task_arguments(
        p, "ssdlite", "ssdlite_mobilevit_s", "the drawn PNGs", "print JSON (per image: its boxes; or the scores)"
    )
    p.add_argument(
        "--threshold",
        type=probability,
        default=None,
        help="lowest score of a box to keep (default 0.3; --evaluate uses the model's 0.01 unless given)",
    )
    p.add_argument(
        "--evaluate",
        type=existing_dir,
        metavar="DATA",
        help="report COCO mAP on DATA: an images folder with --annotations, or a COCO-layout folder "
        "(annotations/instances_<split>2017.json + <split>2017/)",
    )
    p.add_argument("--annotations", type=existing_file, help="--evaluate: the COCO instances JSON of the images folder")
    p.add_argument(
        "--results", type=writable_target, help="--evaluate: write the detections in COCO results format to this file"
    )
    p.set_defaults(
        func=functools.partial(
            run_dense_task,
            command="detect",
            kind=ModelKind.DETECTION,
            default_model="ssdlite_mobilevit_s",
            apply=_detect,
            evaluate=_evaluate,
        )
    )


def _detect(model, args) -> int:

    from mobilevt.tasks.detection import detect, draw_detections

    items = existing_image_inputs(args.inputs)
    threshold = 0.3 if args.threshold is None else args.threshold
    results = detect(
        model, items, score_threshold=threshold, batch_size=args.batch_size, device=args.device, on_error="report"
    )
    out = Path(args.out)

    def write_one(item, result):
        image = load_image(item)
        target = out / f"{Path(result.source).stem}_detections.png"
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            write_png(draw_detections(image, result), str(tmp))
        found = ", ".join(f"{o.name} {o.score:.2f}" for o in result.objects[:8]) or "nothing"
        more = f" (+{len(result.objects) - 8} more)" if len(result.objects) > 8 else ""
        return result.to_dict() | {"drawn": str(target)}, f"{result.source}: {found}{more} -> {target.name}"

    return report_per_image(args, args.inputs, items, results, write_one)


def _evaluate(model, args) -> int:
    from mobilevt.tasks.detection import evaluate_detection
    from mobilevt.training.detection import open_coco_split

    if args.annotations is not None:
        images, annotations = Path(args.evaluate), Path(args.annotations)
    else:
        images, annotations = open_coco_split(args.evaluate, args.split)
    # default: the model's own threshold (0.01, as ml-cvnets' COCO evaluation)
    result = evaluate_detection(
        model,
        images,
        annotations,
        batch_size=args.batch_size,
        limit=args.limit,
        score_threshold=args.threshold,
        device=args.device,
        results_json=args.results,
    )
    m = result.metrics
    summary = (
        f"mAP@[.5:.95] {m['map']:.4f}  mAP@0.5 {m['map50']:.4f}  mAP@0.75 {m['map75']:.4f}  "
        f"AR@100 {m['mar100']:.4f}  ({result.num_images} images, {result.images_per_second:.1f} images/s)"
    )
    return report_evaluation(args, result.to_dict(), result.failed, [summary])

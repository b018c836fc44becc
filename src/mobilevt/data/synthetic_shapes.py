"""A synthetic segmentation and detection data set: filled shapes on real photo backgrounds.

Each image is a random crop of a real photo with 1..``max_shapes`` filled circles, squares
and triangles of random colour, size, rotation and position painted on it, anti-aliased,
some overlapping and some cut by the image border. The same draw gives

- a PASCAL VOC-style class mask (palette PNG: 0 background, 1 + index into
  :data:`SHAPE_CLASSES`, 255 = ignore on the anti-aliased edge pixels, which mix two labels),
- COCO-format boxes of the visible part of every shape.

It is small and quick enough to prove, on a CPU in minutes, that a segmentation or
detection model and its training loop learn, and it uses real photos so that the model
has to tell shapes from clutter rather than from a flat colour.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InvalidInputError
from ..fileio import atomic_path, write_text_atomic
from .segmentation_palette import IGNORE_INDEX, voc_palette

SHAPE_CLASSES = ("circle", "square", "triangle")

_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: coverage in steps of 1/16
_MIN_VISIBLE_FRACTION = 0.5  # a shape less visible than this (of its in-image area) is dropped
_MANIFEST = "shapes.json"  # written last: the data set is complete when it exists
_FORMAT_VERSION = 2  # 2: scikit-learn's two photos only

PathLike = str | os.PathLike


# The backgrounds of the default draw: the two real photos that scikit-learn ships (BSD; part
# of mobilevt[train]). The same files on every machine, so a draw is the same everywhere:
# nothing machine-specific (a photo folder beside the checkout, which optional packages are
# installed) may add to or change them.
DEFAULT_BACKGROUNDS = ("sklearn:china.jpg", "sklearn:flower.jpg")


@dataclass(frozen=True)
class _Background:
    """One background photo: a file path, or the name of a photo scikit-learn ships."""

    name: str
    path: Path | None = None

    def load(self) -> Image.Image:
        if self.path is not None:
            with Image.open(self.path) as image:
                return image.convert("RGB")
        return _sklearn_photo(self.name.partition(":")[2])


@functools.cache
def _sklearn_photo(name: str) -> Image.Image:
    """A scikit-learn sample photo, decoded once per process (every image of a draw crops
    one of two photos; callers only read it)."""
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name)).convert("RGB")


def default_backgrounds() -> list[_Background]:
    """The real photos the shapes are painted on by default: scikit-learn's sample photos
    ``china.jpg`` and ``flower.jpg``, the same on every machine.

    Raises:
        RuntimeError: scikit-learn is not installed.
    """
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "the shapes data set paints on scikit-learn's sample photos: pip install scikit-learn "
            '(or "mobilevt[train]"), or pass backgrounds=[photo files]'
        ) from None
    return [_Background(name) for name in DEFAULT_BACKGROUNDS]


def write_shapes_dataset(
    root: PathLike,
    num_train: int = 400,
    num_val: int = 100,
    image_size: int = 256,
    max_shapes: int = 3,
    seed: int = 0,
    *,
    backgrounds: Sequence[PathLike] | None = None,
    reuse_existing: bool = False,
) -> Path:
    """Write the shapes data set under ``root`` and return ``root`` as a ``Path``.

    Layout (PASCAL VOC for segmentation, COCO for detection)::

        root/JPEGImages/<id>.jpg                      RGB, image_size x image_size
        root/SegmentationClass/<id>.png               palette PNG: 0 background, 1.. shapes, 255 ignore
        root/ImageSets/Segmentation/{train,val}.txt   one id per line
        root/annotations/instances_{train,val}.json   COCO boxes [x, y, w, h] of the visible parts
        root/classes.txt                              line i: the name of mask value i (background first)
        root/shapes.json                              the parameters; written last

    Ids are ``train_000000`` ... and ``val_000000`` .... Every file is written atomically.
    The output depends only on the arguments and on the background photos: the same seed
    and the same photos give byte-identical files (each image draws from its own random
    stream, keyed by seed, split and index).

    Args:
        root: output folder (created; existing files of the same names are replaced).
        num_train, num_val: images per split.
        image_size: side of the square images.
        max_shapes: each image gets 1..max_shapes shapes. Shapes of which less than half
            of their in-image area stays visible under later shapes are left out of the
            boxes, and their visible pixels are marked 255 (ignore) in the mask, so that
            masks and boxes describe the same objects.
        seed: random seed.
        backgrounds: photo files to use as backgrounds; default :func:`default_backgrounds`
            (scikit-learn's two sample photos, so that the same seed gives the same data on
            every machine).
        reuse_existing: return ``root`` untouched when it already holds a complete data set
            written with these parameters and the same photos (its ``shapes.json``), as the
            training recipes do on every run after the first.

    Raises:
        ValueError: bad sizes or counts.
        RuntimeError: no background photos (install scikit-learn, or pass ``backgrounds``).
    """
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise InvalidInputError(f"need at least one image: num_train={num_train}, num_val={num_val}")
    if image_size < 16:
        raise InvalidInputError(f"image_size must be at least 16, got {image_size}")
    if max_shapes < 1:
        raise InvalidInputError(f"max_shapes must be at least 1, got {max_shapes}")
    photos = _background_photos(backgrounds)
    root = Path(root)
    manifest = _manifest(num_train, num_val, image_size, max_shapes, seed, photos)
    if reuse_existing and _read_manifest(root) == manifest:
        return root
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        _write_split(
            root,
            split,
            [np.random.default_rng([seed, split_index, index]) for index in range(count)],
            photos,
            image_size,
            max_shapes,
        )
    write_text_atomic(root / "classes.txt", "".join(f"{name}\n" for name in ("background", *SHAPE_CLASSES)))
    write_text_atomic(root / _MANIFEST, json.dumps(manifest, indent=2))
    return root


def _background_photos(backgrounds: Sequence[PathLike] | None) -> list[_Background]:
    photos = default_backgrounds() if backgrounds is None else [_Background(Path(p).name, Path(p)) for p in backgrounds]
    if not photos:
        raise RuntimeError(
            "no background photos for the shapes data set: pass backgrounds=[photo files], or leave it out "
            "for scikit-learn's sample photos"
        )
    return photos


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_split(
    root: Path,
    split: str,
    streams: list[np.random.Generator],
    photos: Sequence[_Background],
    image_size: int,
    max_shapes: int,
) -> None:
    """One split's images, masks, id list and COCO file; image ``index`` draws from
    ``streams[index]``."""
    palette = voc_palette()
    ids, images, annotations = [], [], []
    for index, rng in enumerate(streams):
        image_id = f"{split}_{index:06d}"
        photo, mask, shapes = _draw_sample(rng, photos, image_size, max_shapes)
        with atomic_path(root / "JPEGImages" / f"{image_id}.jpg") as tmp:
            Image.fromarray(photo).save(tmp, format="JPEG", quality=95)
        mask_image = Image.fromarray(mask, mode="L").convert("P")
        mask_image.putpalette(palette)
        with atomic_path(root / "SegmentationClass" / f"{image_id}.png") as tmp:
            mask_image.save(tmp, format="PNG")
        ids.append(image_id)
        images.append({"id": index + 1, "file_name": f"{image_id}.jpg", "height": image_size, "width": image_size})
        annotations += [
            {
                "id": len(annotations) + number + 1,
                "image_id": index + 1,
                "category_id": label,
                "bbox": box,
                "area": area,
                "iscrowd": 0,
            }
            for number, (label, box, area) in enumerate(shapes)
        ]
    write_text_atomic(root / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(SHAPE_CLASSES)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    write_text_atomic(root / "annotations" / f"instances_{split}.json", json.dumps(coco))


def _manifest(num_train, num_val, image_size, max_shapes, seed, photos: Sequence[_Background]) -> dict:
    return {
        "format": _FORMAT_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "max_shapes": max_shapes,
        "seed": seed,
        "classes": list(SHAPE_CLASSES),
        "backgrounds": [p.name for p in photos],
    }


def _draw_sample(
    rng: np.random.Generator, photos: Sequence[_Background], size: int, max_shapes: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, list[float], float]]]:
    """One image (uint8 HxWx3), its mask (uint8 HxW) and its shapes (category id, visible
    box [x, y, w, h], visible area in pixels)."""
    image = _background(rng, photos[int(rng.integers(len(photos)))], size).astype(np.float32)
    num_shapes = int(rng.integers(1, max_shapes + 1))
    labels, coverages = [], []
    for _ in range(num_shapes):
        label = int(rng.integers(len(SHAPE_CLASSES))) + 1
        coverage = _shape_coverage(rng, SHAPE_CLASSES[label - 1], size)
        colour = rng.integers(0, 256, size=3).astype(np.float32)
        image = image * (1.0 - coverage[..., None]) + colour * coverage[..., None]
        labels.append(label)
        coverages.append(coverage)

    # Painter's order: the topmost shape touching a pixel owns it; the pixel gets that
    # shape's class if the shape covers it fully, else it mixes labels: ignore.
    owner = np.full((size, size), -1, dtype=np.int64)
    mask = np.zeros((size, size), dtype=np.uint8)
    for i, coverage in enumerate(coverages):
        touched = coverage > 0
        owner[touched] = i
        mask[touched] = IGNORE_INDEX
        mask[coverage >= 1.0] = labels[i]
    shapes = []
    for i, coverage in enumerate(coverages):
        visible = coverage.copy()
        for later in coverages[i + 1 :]:
            visible *= 1.0 - later
        area = float(visible.sum())
        mine = owner == i
        if area < _MIN_VISIBLE_FRACTION * float(coverage.sum()) or not mine.any():
            mask[mine] = IGNORE_INDEX  # a fragment without a box: not a learnable object
            continue
        rows, cols = np.nonzero(mine)
        x0, y0, x1, y1 = int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1
        shapes.append((labels[i], [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], round(area, 2)))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask, shapes


def _background(rng: np.random.Generator, photo: _Background, size: int) -> np.ndarray:
    """A random square-ish crop of 30-100% of the photo's shorter side, resized to ``size``."""
    image = photo.load()
    width, height = image.size
    side = min(width, height) * float(rng.uniform(0.3, 1.0))
    aspect = math.exp(float(rng.uniform(math.log(3 / 4), math.log(4 / 3))))
    crop_w = min(width, side * math.sqrt(aspect))
    crop_h = min(height, side / math.sqrt(aspect))
    left = float(rng.uniform(0, width - crop_w))
    top = float(rng.uniform(0, height - crop_h))
    crop = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(crop, dtype=np.uint8)


def _shape_coverage(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """The fraction of each pixel a random shape covers (float32 HxW in [0, 1]).

    The shape's centre lies inside the image, so at least about a quarter of it is visible;
    near the border part of it falls outside."""
    s = _SUPERSAMPLE
    radius = float(rng.uniform(0.08, 0.22)) * size * s  # circumradius
    cx, cy = (float(v) * size * s for v in rng.uniform(0.0, 1.0, size=2))
    angle = float(rng.uniform(0, 2 * math.pi))
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    else:
        corners = 4 if kind == "square" else 3
        points = [
            (
                cx + radius * math.cos(angle + 2 * math.pi * k / corners),
                cy + radius * math.sin(angle + 2 * math.pi * k / corners),
            )
            for k in range(corners)
        ]
        draw.polygon(points, fill=255)
    fine = np.asarray(canvas, dtype=np.float32) / 255.0
    return fine.reshape(size, s, size, s).mean(axis=(1, 3))

"""The synthetic shapes data set: layout, masks and boxes that agree, reproducibility."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilevt.data.synthetic_shapes import SHAPE_CLASSES, write_shapes_dataset

SIZE = 64


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=3, image_size=SIZE, seed=5)


def _split(root, split):
    ids = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    coco = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    return ids, coco


def test_layout_and_formats(shapes_root):
    assert (shapes_root / "classes.txt").read_text().split() == ["background", *SHAPE_CLASSES]
    for split, count in (("train", 8), ("val", 3)):
        ids, coco = _split(shapes_root, split)
        assert len(ids) == count == len(coco["images"])
        assert coco["categories"] == [
            {"id": 1, "name": "circle"},
            {"id": 2, "name": "square"},
            {"id": 3, "name": "triangle"},
        ]
        for image_id, info in zip(ids, coco["images"]):
            assert info["file_name"] == f"{image_id}.jpg" and (info["height"], info["width"]) == (SIZE, SIZE)
            photo = Image.open(shapes_root / "JPEGImages" / info["file_name"])
            assert photo.format == "JPEG" and photo.mode == "RGB" and photo.size == (SIZE, SIZE)
            mask = Image.open(shapes_root / "SegmentationClass" / f"{image_id}.png")
            assert mask.mode == "P" and mask.size == (SIZE, SIZE)
            assert mask.getpalette()[:6] == [0, 0, 0, 128, 0, 0]  # VOC: background black, class 1 dark red
            assert set(np.unique(np.asarray(mask))) <= {0, 1, 2, 3, 255}
        for ann in coco["annotations"]:
            assert ann["iscrowd"] == 0 and ann["category_id"] in (1, 2, 3) and ann["area"] > 0
    # no stray temporary files from the atomic writes
    assert not list(shapes_root.rglob("*.tmp"))


def test_masks_and_boxes_agree(shapes_root):
    seen_ignore = False
    for split in ("train", "val"):
        ids, coco = _split(shapes_root, split)
        for image_id, info in zip(ids, coco["images"]):
            mask = np.asarray(Image.open(shapes_root / "SegmentationClass" / f"{image_id}.png"))
            seen_ignore |= bool((mask == 255).any())
            boxes = [a for a in coco["annotations"] if a["image_id"] == info["id"]]
            assert 1 <= len(boxes) <= 3
            covered = {k: np.zeros_like(mask, dtype=bool) for k in (1, 2, 3)}
            for ann in boxes:
                x, y, w, h = (int(v) for v in ann["bbox"])
                assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= SIZE and y + h <= SIZE
                inside = mask[y : y + h, x : x + w]
                # the box holds pixels of its class, and it is tight: each of its four
                # border lines touches the shape (its class or its anti-aliased edge)
                assert (inside == ann["category_id"]).any()
                shape = inside != 0
                assert shape[0].any() and shape[-1].any() and shape[:, 0].any() and shape[:, -1].any()
                assert ann["area"] <= w * h
                covered[ann["category_id"]][y : y + h, x : x + w] = True
            # every pixel of a class lies in a box of that class
            for k, in_box in covered.items():
                assert not ((mask == k) & ~in_box).any(), f"{image_id}: class {k} pixels outside its boxes"
    assert seen_ignore, "anti-aliased edges must be marked 255"


def test_reproducible_from_seed(tmp_path, shapes_root):
    again = write_shapes_dataset(tmp_path / "again", num_train=8, num_val=3, image_size=SIZE, seed=5)
    other = write_shapes_dataset(tmp_path / "other", num_train=8, num_val=3, image_size=SIZE, seed=6)
    files = sorted(p.relative_to(shapes_root) for p in shapes_root.rglob("*") if p.is_file())
    assert len(files) == 2 * 11 + 2 + 2 + 1 + 1
    for rel in files:
        assert (again / rel).read_bytes() == (shapes_root / rel).read_bytes(), rel
    differ = [
        rel
        for rel in files
        if rel.suffix in (".jpg", ".png") and (other / rel).read_bytes() != (shapes_root / rel).read_bytes()
    ]
    assert len(differ) == 22


def test_reuse_existing_keeps_a_complete_dataset_written_with_the_same_parameters(tmp_path):
    root = write_shapes_dataset(tmp_path, num_train=2, num_val=1, image_size=32, seed=1, reuse_existing=True)
    marker = root / "JPEGImages" / "train_000000.jpg"
    before = marker.stat().st_mtime_ns
    write_shapes_dataset(tmp_path, num_train=2, num_val=1, image_size=32, seed=1, reuse_existing=True)
    assert marker.stat().st_mtime_ns == before  # same parameters: not rewritten
    write_shapes_dataset(tmp_path, num_train=2, num_val=1, image_size=32, seed=2, reuse_existing=True)
    assert json.loads((root / "shapes.json").read_text())["seed"] == 2


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="at least one image"):
        write_shapes_dataset(tmp_path, num_train=0, num_val=0)
    with pytest.raises(RuntimeError, match="no background photos"):
        write_shapes_dataset(tmp_path, num_train=1, num_val=0, backgrounds=[])


def test_the_default_draw_is_the_same_on_every_machine(tmp_path, monkeypatch):
    """The recipes' data must not depend on the machine: a ``../shared`` folder of photos
    (``MOBILEVT_SHARED``) or an optional package must not change a byte of it."""
    from mobilevt.data.synthetic_shapes import DEFAULT_BACKGROUNDS

    photos = tmp_path / "shared" / "data" / "imagenet-sample"
    photos.mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photos / "n01440764_tench.JPEG")
    written = []
    for shared in (tmp_path / "shared", tmp_path / "absent"):
        monkeypatch.setenv("MOBILEVT_SHARED", str(shared))
        if shared.name == "absent":  # and scikit-image, which the tests install, missing
            monkeypatch.setitem(sys.modules, "skimage", None)
        root = write_shapes_dataset(tmp_path / shared.name / "draw", num_train=6, num_val=2, image_size=48, seed=5)
        written.append({p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()})
    assert written[0] == written[1]
    manifest = json.loads(written[0][Path("shapes.json")])
    assert manifest["backgrounds"] == list(DEFAULT_BACKGROUNDS) == ["sklearn:china.jpg", "sklearn:flower.jpg"]

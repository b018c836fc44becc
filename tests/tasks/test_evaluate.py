"""Evaluation on real images: accuracy bookkeeping checked against answers fixed in advance,
the dataset layouts, broken files, and distributed evaluation on 2 gloo processes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from conftest import IMAGENET_META, IMAGENET_VAL10, real_photos
from oracle import OracleClassifier, designed_logits

import mobilevt
from mobilevt.data import imagenet_classes

CONFIG = mobilevt.PreprocessConfig((64, 64), 72, "bilinear")  # small inputs keep the oracle cheap


def _wnid_tree(root, count: int = 24):
    """root/<wnid>/<photo>: the sample photos under their own class (or, without
    ../shared, the packaged photos under the first ImageNet classes)."""
    photos = real_photos(count)
    wnids = imagenet_classes().wnids
    targets = []
    for i, photo in enumerate(photos):
        wnid = photo.name.split("_")[0] if photo.name.startswith("n") and "_" in photo.name else wnids[i]
        (root / wnid).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / wnid / photo.name)
        targets.append(imagenet_classes().index_of_wnid[wnid])
    # the dataset lists files sorted by path: reorder targets the same way
    order = sorted(range(len(photos)), key=lambda i: str(root / wnids[targets[i]] / photos[i].name))
    return [photos[i] for i in order], [targets[i] for i in order]


def _oracle(root, photos, targets):
    preprocess = mobilevt.transforms_for(CONFIG)
    inputs = torch.stack([preprocess(mobilevt.load_image(p)) for p in photos])
    # image i: correct when i % 3 == 0, else wrong first class (target third for even i)
    first = [t if i % 3 == 0 else (t + 500) % 1000 for i, t in enumerate(targets)]
    model = OracleClassifier(inputs, designed_logits(targets, first), CONFIG)
    expected_top1 = 100.0 * sum(i % 3 == 0 for i in range(len(targets))) / len(targets)
    expected_top5 = 100.0 * sum(i % 3 == 0 or i % 2 == 0 for i in range(len(targets))) / len(targets)
    return model, expected_top1, expected_top5


@pytest.fixture
def wnid_folder(tmp_path):
    root = tmp_path / "val"
    photos, targets = _wnid_tree(root)
    model, top1, top5 = _oracle(root, photos, targets)
    return root, model, top1, top5, targets


def test_accuracy_matches_the_designed_answers(wnid_folder):
    root, model, top1, top5, targets = wnid_folder
    result = mobilevt.evaluate(model, root, batch_size=5, workers=0, progress=False)
    assert result.images == len(targets) and not result.failures
    assert result.top1 == pytest.approx(top1) and result.top5 == pytest.approx(top5)
    assert 0 < result.top1 < result.top5 < 100
    per_class = {c.index: c for c in result.per_class}
    assert sorted(per_class) == sorted(set(targets))
    assert [row[1] for row in result.predictions] == targets


def test_index_folders_and_limit(wnid_folder, tmp_path):
    root, model, top1, top5, targets = wnid_folder
    by_index = tmp_path / "by_index"
    for folder in root.iterdir():
        shutil.copytree(folder, by_index / str(imagenet_classes().index_of_wnid[folder.name]))
    result = mobilevt.evaluate(model, by_index, batch_size=4, workers=0, progress=False)
    assert (result.top1, result.top5) == pytest.approx((top1, top5))
    limited = mobilevt.evaluate(model, root, batch_size=4, workers=0, progress=False, limit=6)
    assert limited.images == 6
    assert limited.top1 == pytest.approx(100.0 * sum(i % 3 == 0 for i in range(6)) / 6)


def test_dataset_object_of_pil_images(wnid_folder):
    from PIL import Image

    root, model, top1, top5, targets = wnid_folder
    files = sorted(p for p in root.rglob("*") if p.is_file())
    dataset = [(Image.open(f).convert("RGB"), t) for f, t in zip(files, targets)]
    result = mobilevt.evaluate(model, dataset, batch_size=7, workers=0, progress=False)
    assert (result.top1, result.top5) == pytest.approx((top1, top5))


@pytest.mark.skipif(not IMAGENET_VAL10.is_dir(), reason="../shared/data/imagenet-val-first10 is absent")
def test_flat_ilsvrc_layout_with_loc_solution_and_real_labels(tmp_path):
    rows = list(csv.DictReader(open(IMAGENET_VAL10 / "labels.csv")))
    targets = [int(r["class_index"]) for r in rows]
    real = json.loads((IMAGENET_META / "imagenet_real_labels.json").read_text())[: len(rows)]
    photos = [IMAGENET_VAL10 / r["file"] for r in rows]
    # first class: the target for even images, else a ReaL label that is not the target
    # when there is one (counted right by ReaL, wrong by the original labels)
    first = []
    for i, (t, labels) in enumerate(zip(targets, real)):
        others = [c for c in labels if c != t]
        first.append(t if i % 2 == 0 else (others[0] if others else (t + 1) % 1000))
    preprocess = mobilevt.transforms_for(CONFIG)
    model = OracleClassifier(
        torch.stack([preprocess(mobilevt.load_image(p)) for p in photos]), designed_logits(targets, first), CONFIG
    )
    expected_real = [first[i] in real[i] for i in range(len(rows)) if real[i]]

    result = mobilevt.evaluate(
        model,
        IMAGENET_VAL10,
        labels=IMAGENET_META / "LOC_val_solution.csv",
        real_labels=IMAGENET_META / "imagenet_real_labels.json",
        batch_size=3,
        workers=0,
        progress=False,
    )
    assert result.images == len(rows) and result.details["layout"] == "ilsvrc-val"
    assert result.top1 == pytest.approx(100.0 * sum(f == t for f, t in zip(first, targets)) / len(rows))
    assert result.real_images == len(expected_real)
    assert result.real_top1 == pytest.approx(100.0 * sum(expected_real) / len(expected_real))
    # the folder's own labels.csv is found without --labels and agrees
    assert mobilevt.evaluate(model, IMAGENET_VAL10, workers=0, progress=False).top1 == result.top1


def test_broken_files_are_reported_not_counted(wnid_folder):
    root, model, top1, top5, targets = wnid_folder
    some_class = next(root.iterdir())
    good = next(some_class.iterdir())
    (some_class / "broken.JPEG").write_bytes(b"not a jpeg")
    (some_class / "truncated.JPEG").write_bytes(good.read_bytes()[:300])
    result = mobilevt.evaluate(model, root, batch_size=4, workers=0, progress=False)
    assert result.images == len(targets)
    assert sorted(os.path.basename(f) for f, _ in result.failures) == ["broken.JPEG", "truncated.JPEG"]
    assert (result.top1, result.top5) == pytest.approx((top1, top5))


def test_missing_ground_truth_and_bad_folders_have_clear_errors(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(real_photos(1)[0], flat / "ILSVRC2012_val_00000001.JPEG")
    model = mobilevt.create_model("mobilevit_xxs")
    with pytest.raises(mobilevt.data.DatasetLayoutError, match="LOC_val_solution.csv"):
        mobilevt.evaluate(model, flat, workers=0, progress=False)
    with pytest.raises(mobilevt.data.DatasetLayoutError, match="no class folders"):
        mobilevt.data.image_folder(flat)
    (tmp_path / "empty" / "n01440764").mkdir(parents=True)
    with pytest.raises(mobilevt.data.DatasetLayoutError, match="hold no images"):
        mobilevt.evaluate(model, tmp_path / "empty", workers=0, progress=False)


# ---------------------------------------------------------------------------------------
# distributed: 2 processes on gloo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _evaluate_rank(rank: int, world_size: int, port: int, model, root: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    result = mobilevt.evaluate(model, root, batch_size=4, workers=0, progress=False, distributed=True)
    with open(f"{out}.{rank}", "w") as handle:
        json.dump(
            {
                "top1": result.top1,
                "top5": result.top5,
                "images": result.images,
                "predictions": result.predictions,
                "world_size": result.world_size,
            },
            handle,
        )


def test_two_gloo_processes_give_exact_totals(wnid_folder, tmp_path):
    root, model, top1, top5, targets = wnid_folder
    # 23 images: the shards are uneven (12 + 11), where a padding sampler would count one twice
    os.remove(sorted(p for p in root.rglob("*") if p.is_file())[-1])
    single = mobilevt.evaluate(model, root, batch_size=4, workers=0, progress=False)
    out = str(tmp_path / "rank")
    mp.spawn(_evaluate_rank, args=(2, _free_port(), model, str(root), out), nprocs=2, join=True)
    for rank in range(2):
        result = json.loads(open(f"{out}.{rank}").read())
        assert result["world_size"] == 2
        assert result["images"] == single.images == len(targets) - 1
        assert result["top1"] == pytest.approx(single.top1) and result["top5"] == pytest.approx(single.top5)
        assert [tuple(p[:2]) for p in result["predictions"]] == [tuple(p[:2]) for p in single.predictions]


@pytest.mark.slow
def test_torchrun_cli_matches_single_process(tmp_path):
    photos_root = tmp_path / "val"
    count = len(_wnid_tree(photos_root, count=13)[0])
    weights = tmp_path / "xxs.safetensors"
    mobilevt.save_weights(mobilevt.create_model("mobilevit_xxs"), weights)
    common = [
        "evaluate",
        "--model",
        "mobilevit_xxs",
        "--weights",
        str(weights),
        "--data",
        str(photos_root),
        "--workers",
        "0",
        "--batch-size",
        "4",
        "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run(
        [
            sys.executable,
            "-m",
            "mobilevt",
            *common,
            "--predictions-csv",
            str(tmp_path / "one.csv"),
            "-o",
            str(tmp_path / "one.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "mobilevt",
            *common,
            "--predictions-csv",
            str(tmp_path / "two.csv"),
            "-o",
            str(tmp_path / "two.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert double.returncode == 0, double.stderr
    one, two = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert one["images"] == two["images"] == count and two["world_size"] == 2
    assert (one["top1"], one["top5"]) == (two["top1"], two["top5"])
    assert (tmp_path / "one.csv").read_text() == (tmp_path / "two.csv").read_text()
    assert "2 process(es)" in double.stdout and double.stdout.count("top-1") == 1  # rank 0 reports alone

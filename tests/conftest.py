"""Shared helpers for the test suite.

Reference models (timm, transformers) are given random weights that exercise every
parameter and BatchNorm statistic: default initialisations leave BatchNorm at identity
and transformers' MobileViT drives activations to denormals, which would let a wrong
model pass (see ../shared/README.md).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# ../shared (real photos, ImageNet metadata); MOBILEVT_SHARED points elsewhere, e.g. to a
# missing folder to run the suite as on a fresh clone.
SHARED = Path(os.environ.get("MOBILEVT_SHARED", ROOT.parent / "shared"))
PARITY_ATOL = 1e-4  # max-abs logit difference accepted against a reference library

# One intra-op thread in every test and in the command-line runs the tests start: a result
# (its summation order) must not depend on the machine's core count or on a thread count
# an earlier test left behind, and the suite runs as two pytest-xdist workers on the two
# cores (pyproject's addopts), so more threads would only oversubscribe them.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_inside_the_run(tmp_path_factory):
    """Temporary files of the tests and of the processes they start (torchrun's rendezvous
    folders, Core ML packages ...) go under pytest's own folder for this run, which pytest
    removes with the next run, instead of piling up in the system's temp folder."""
    import tempfile

    folder = tmp_path_factory.mktemp("tempfiles")
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(folder), str(folder)
    yield
    tempfile.tempdir = saved[1]
    if saved[0] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved[0]


@pytest.fixture(autouse=True)
def _one_thread():
    yield
    torch.set_num_threads(1)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and BatchNorm statistic a random, well-scaled value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.05
            is_norm_scale = (
                param.dim() == 1
                and name.endswith("weight")
                and any(tag in name for tag in ("norm", "bn", "layernorm", "ln"))
            )
            param.copy_(noise + (1.0 if is_norm_scale else 0.0))
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=generator) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=generator) + 0.5)
    return model.eval()


def model_with_structure(name: str, photos: list[torch.Tensor], seed: int = 3) -> torch.nn.Module:
    """A randomised model whose BatchNorm statistics are measured on real photos: with the
    random statistics of ``randomize_`` the signal fades with depth and every photo gets
    (almost) the same logits, which would make top-1 agreement meaningless."""
    import mobilevt
    from mobilevt.data import ImagePreprocess

    model = randomize_(mobilevt.create_model(name), seed=seed)
    batch = torch.stack([ImagePreprocess(model.preprocess)(photo) for photo in photos])
    return measure_batchnorm_(model, batch)


def measure_batchnorm_(model: torch.nn.Module, batch: torch.Tensor) -> torch.nn.Module:
    """Set every BatchNorm's statistics to those of ``batch`` (one cumulative pass). Only
    the BatchNorms run in training mode: dropout stays off, so the result does not depend
    on the global random state (that is, on which tests ran before)."""
    model.eval()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batch
            module.train()
    with torch.no_grad():
        model(batch)
    return model.eval()


def export_stages(stderr: str, model: str) -> list[str]:
    """The stages ``mobilevt export`` printed for ``model``, after checking each line's form
    (``model: [  1.2 s] stage ...``) and that the elapsed times never go back."""
    stages, elapsed = [], []
    for line in stderr.splitlines():
        match = re.fullmatch(rf"{re.escape(model)}: \[ *(\d+\.\d) s\] (.+) \.\.\.", line)
        assert match, f"not a stage line: {line!r}"
        elapsed.append(float(match.group(1)))
        stages.append(match.group(2))
    assert elapsed == sorted(elapsed), elapsed
    return stages


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture
def images() -> torch.Tensor:
    """A batch of two images in [0, 1] (random: parity does not depend on content)."""
    return torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))


IMAGENET_SAMPLE = SHARED / "data" / "imagenet-sample"
IMAGENET_VAL10 = SHARED / "data" / "imagenet-val-first10"
IMAGENET_META = SHARED / "data" / "imagenet-meta"

# Real photos shipped inside PyPI packages: the fallback when ../shared is absent.
_PACKAGED_PHOTOS = {
    "skimage": [
        "data/chelsea.png",
        "data/coffee.png",
        "data/astronaut.png",
        "data/rocket.jpg",
        "data/motorcycle_left.png",
        "data/camera.png",
        "data/hubble_deep_field.jpg",
        "data/retina.jpg",
    ],
    "sklearn": ["datasets/images/china.jpg", "datasets/images/flower.jpg"],
}


def packaged_photos() -> list[Path]:
    import importlib.util

    found = []
    for package, files in _PACKAGED_PHOTOS.items():
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        root = Path(spec.origin).parent
        found += [root / f for f in files if (root / f).is_file()]
    return found


def real_photos(limit: int | None = None) -> list[Path]:
    """The 1000 ImageNet sample photos (class i = i-th file) when ../shared is present,
    else the photos shipped in scikit-image and scikit-learn."""
    if IMAGENET_SAMPLE.is_dir():
        photos = sorted(IMAGENET_SAMPLE.glob("*.JPEG"))
    else:
        photos = packaged_photos()
    if not photos:
        pytest.skip("no real photos: ../shared is absent and scikit-image / scikit-learn are not installed")
    return photos[:limit] if limit else photos


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """A folder of six real photos (to check exports on)."""
    folder = tmp_path_factory.mktemp("photos")
    for photo in real_photos(6):
        shutil.copy(photo, folder / photo.name)
    return folder


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """Folder ``name``, filled by ``build`` once per test run and shared by the pytest-xdist
    workers (separate processes: a session fixture alone would build it once per worker)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    # under xdist each worker's basetemp is a subfolder of the run's; without it, the run's own
    run_root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = run_root / name
    with FileLock(str(folder) + ".lock"):
        if not (folder / ".complete").is_file():
            if folder.exists():
                shutil.rmtree(folder)  # left half-built by a worker that failed
            folder.mkdir()
            build(folder)
            (folder / ".complete").touch()
    return folder


def _train_digits(root: Path) -> None:
    """The digits recipe for 4 epochs (mobilevit_xxs) into root/run, its result in
    root/result.json, and real digit images: root/calibration (64 of the train split) and
    root/val (120 of the validation split) with their labels in root/labels.json."""
    import dataclasses
    import json

    from PIL import Image

    from mobilevt.training import load_config, train
    from mobilevt.training.data import DigitsDataset

    result = train(load_config("digits", [f"output_dir={root / 'run'}", "epochs=4", "optim.warmup_steps=20"]))
    (root / "result.json").write_text(json.dumps(dataclasses.asdict(result)))
    labels = {}
    for split, folder, count in (("train", "calibration", 64), ("val", "val", 120)):
        data = DigitsDataset(split)
        (root / folder).mkdir()
        for i in range(count):
            image, target = data[i]
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / folder / f"{i:04d}.png")
            labels[f"{folder}/{i:04d}.png"] = target
    (root / "labels.json").write_text(json.dumps(labels))


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """A 4-epoch digits training run (see ``_train_digits``), made once per test run for
    every test and worker that uses it."""
    pytest.importorskip("sklearn")
    return built_once(tmp_path_factory, "trained-digits", _train_digits)


@pytest.fixture(scope="session")
def shapes_cache(tmp_path_factory) -> Path:
    """A fresh cache folder for the recipes' generated shapes data set (``MOBILEVT_CACHE``),
    shared by the segmentation and detection learning tests: generated once per session,
    as a user's first run generates it."""
    return tmp_path_factory.mktemp("mobilevt-cache")


def pytest_collection_modifyitems(config, items):
    """The learning proofs first, then the other slow tests, then the rest. pytest-xdist
    hands each of its two workers two tests to start with (``--maxschedchunk 1``), then
    one at a time as they finish: the proofs go at positions 0 and 2 so that each starts
    at once on its own worker, and no long test is left for the end."""

    def rank(item) -> int:
        return 0 if item.get_closest_marker("learning") else 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)  # stable: file order within each rank
    # the slow tests that share the trained digits run: the first one, first among the slow
    # tests, builds it (about 40 s); the others go last, so that no worker waits on its lock
    sharing = [item for item in items if rank(item) == 1 and "digits_run" in item.fixturenames]
    slow = [item for item in items if rank(item) == 1 and item not in sharing]
    items[:] = (
        [item for item in items if rank(item) == 0]
        + sharing[:1]
        + slow
        + sharing[1:]
        + [item for item in items if rank(item) == 2]
    )
    learning = [item for item in items if rank(item) == 0]
    others = [item for item in items if rank(item) != 0]
    ordered = []
    for proof in learning:
        ordered += [proof] + others[:1]
        others = others[1:]
    items[:] = ordered + others


def _build_example(example: str, program: str, folder: Path) -> None:
    """Builds examples/<example>/ with its build.sh into folder/<program>."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "examples" / example / "build.sh"
    run = subprocess.run(
        ["sh", str(script), str(folder / program)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.fixture(scope="session")
def cpp_runner(tmp_path_factory) -> Path:
    """examples/cpp/mobilevt_run built against the installed torch wheel's libtorch, once per
    test run (about a minute of g++)."""
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler (g++) on this machine: the C++ example cannot be built")
    return (
        built_once(tmp_path_factory, "cpp-example", functools.partial(_build_example, "cpp", "mobilevt_run"))
        / "mobilevt_run"
    )


@pytest.fixture(scope="session")
def pte_runner(tmp_path_factory) -> Path:
    """examples/executorch_cpp/mobilevt_pte_run built against the executorch wheel's C++
    runtime (seconds of g++), once per test run."""
    pytest.importorskip("executorch")
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler (g++) on this machine: the ExecuTorch C++ example cannot be built")
    return (
        built_once(
            tmp_path_factory,
            "executorch-example",
            functools.partial(_build_example, "executorch_cpp", "mobilevt_pte_run"),
        )
        / "mobilevt_pte_run"
    )


def assert_cpp_executorch_agrees(runner: Path, program: Path, inputs: list, folder: Path, tolerance: float = 1e-4):
    """Runs ``program`` on ``inputs`` in the C++ ExecuTorch example and in Python's ExecuTorch
    runtime, and asserts every output agrees within ``tolerance``."""
    import subprocess

    from mobilevt.export.native_logs import load_executorch_method

    paths = [write_raw_tensor(x, folder / f"cpp-input{i}.bin") for i, x in enumerate(inputs)]
    run = subprocess.run(
        [str(runner), str(program), *map(str, paths), "--dump", str(folder / "cpp-output")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    _, method = load_executorch_method(program)
    expected = method.execute([x.contiguous() for x in inputs])
    assert run.stdout.count("output\t") == len(expected)
    for i, tensor in enumerate(expected):
        assert (read_raw_tensor(folder / f"cpp-output.{i}.bin") - tensor.float()).abs().max() <= tolerance, i


def write_ppm(image: torch.Tensor, path: Path) -> Path:
    """A uint8 [H, W, 3] image as binary PPM, the C++ example's image format."""
    height, width, _ = image.shape
    path.write_bytes(f"P6\n{width} {height}\n255\n".encode() + image.contiguous().numpy().tobytes())
    return path


def write_raw_tensor(tensor: torch.Tensor, path: Path) -> Path:
    """A tensor in the C++ examples' raw format: a "float32 d0 d1 ..." (or "int64 ...") line,
    then the values, little-endian."""
    is_integer = not tensor.is_floating_point()
    header = " ".join(["int64" if is_integer else "float32", *map(str, tensor.shape)]) + "\n"
    values = tensor.contiguous().numpy().astype("<i8" if is_integer else "<f4")
    path.write_bytes(header.encode() + values.tobytes())
    return path


def read_raw_tensor(path: Path) -> torch.Tensor:
    import numpy as np

    with open(path, "rb") as file:
        header = file.readline().split()
        assert header[0] == b"float32", header
        values = np.frombuffer(file.read(), dtype="<f4").reshape([int(size) for size in header[1:]])
    return torch.from_numpy(values.copy())

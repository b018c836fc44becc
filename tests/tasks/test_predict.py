"""``mobilevt predict`` and ``mobilevt.predict`` on real photos, broken files included, and
an end-to-end check against timm (its transform + its model) on the same random weights."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import IMAGENET_SAMPLE, PARITY_ATOL, randomize_, real_photos
from PIL import Image

import mobilevt
from mobilevt.cli.main import main


@pytest.fixture(scope="module")
def xxs_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "mobilevit_xxs.safetensors"
    mobilevt.save_weights(randomize_(mobilevt.create_model("mobilevit_xxs")), path)
    return path


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "mobilevt", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(not IMAGENET_SAMPLE.is_dir(), reason="../shared/data/imagenet-sample is absent")
def test_cli_predicts_every_sample_photo(xxs_weights):
    run = _cli(
        "predict",
        str(IMAGENET_SAMPLE),
        "--model",
        "mobilevit_xxs",
        "--weights",
        str(xxs_weights),
        "--json",
        "--batch-size",
        "32",
        "--workers",
        "2",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    predictions = json.loads(run.stdout)
    assert len(predictions) == len(list(IMAGENET_SAMPLE.glob("*.JPEG"))) == 1000
    names = set(mobilevt.data.imagenet_classes().names)
    for p in predictions:
        assert p["error"] is None and len(p["top"]) == 5
        probabilities = [c["probability"] for c in p["top"]]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-5
        assert all(c["name"] in names for c in p["top"])


def test_cli_reports_each_broken_file_and_goes_on(xxs_weights, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    photos = real_photos(3)
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    (folder / "notes.jpg").write_text("a text file named like a photo")
    (folder / "empty.png").write_bytes(b"")
    (folder / "cut.jpg").write_bytes(photos[0].read_bytes()[:200])
    run = _cli(
        "predict",
        str(folder),
        str(tmp_path / "missing.jpg"),
        "--model",
        "mobilevit_xxs",
        "--weights",
        str(xxs_weights),
        "--topk",
        "3",
        "--workers",
        "0",
    )
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    for broken in ("notes.jpg", "empty.png", "cut.jpg", "missing.jpg"):
        assert sum(broken in line for line in errors) == 1, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == len(photos) and all(line.count("%") == 3 for line in lines)
    assert "4 of 7 inputs failed" in run.stderr
    # --json: a row for every image found, the broken ones with their error (the missing path
    # has no row: it is not an image)
    args = ["predict", str(folder), "--weights", str(xxs_weights), "--topk", "3", "--workers", "0", "--json"]
    assert main(args) == 1
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6 and sum(row["error"] is not None for row in rows) == 3
    assert all(len(row["top"]) == 3 for row in rows if row["error"] is None)


def test_python_api_takes_paths_pil_images_and_tensors(xxs_weights):
    model = mobilevt.create_model("mobilevit_xxs", weights=str(xxs_weights))
    path = real_photos(1)[0]
    image = Image.open(path)
    tensor = mobilevt.load_image(path)
    by_path, by_pil, by_tensor = mobilevt.predict(model, [path, image, tensor], topk=3)
    assert [c.index for c in by_path.top] == [c.index for c in by_pil.top] == [c.index for c in by_tensor.top]
    assert by_path.top[0].probability == pytest.approx(by_tensor.top[0].probability, abs=1e-6)
    with pytest.raises(mobilevt.data.ImageDecodeError):
        mobilevt.predict(model, [__file__])
    reported = mobilevt.predict(model, [__file__, path], on_error="report")
    assert reported[0].error and reported[1].error is None


def test_predict_names_classes_of_fine_tuned_heads():
    model = mobilevt.create_model("mobilevit_xxs", num_classes=3)
    model.class_names = ["cat", "dog", "bird"]
    (prediction,) = mobilevt.predict(model, real_photos(1), topk=5)
    assert len(prediction.top) == 3 and {c.name for c in prediction.top} == {"cat", "dog", "bird"}


@pytest.mark.slow
def test_same_top5_as_timm_transform_and_model(tmp_path):
    """mobilevt's preprocessing + model reproduce timm's pipeline end to end."""
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config
    from timm.models._hub import save_for_hf

    # timm's own random init: its features vary with the image (randomize_'s random
    # BatchNorm statistics saturate this deep a network into image-independent logits).
    torch.manual_seed(0)
    reference = timm.create_model("mobilevit_s").eval()
    save_for_hf(reference, str(tmp_path), safe_serialization=True)
    model = mobilevt.create_model("mobilevit_s", weights=str(tmp_path))
    transform = create_transform(**resolve_data_config({}, model=reference))
    photos = real_photos(64)
    ours = mobilevt.predict(model, photos, topk=5, batch_size=16)
    with torch.no_grad():
        logits = torch.cat(
            [
                reference(torch.stack([transform(Image.open(p).convert("RGB")) for p in photos[start : start + 16]]))
                for start in range(0, len(photos), 16)
            ]
        )
    theirs = logits.topk(5, dim=-1).indices.tolist()
    assert len({tuple(t) for t in theirs}) > len(photos) // 2, "the answers hardly depend on the image: vacuous"
    exact = 0
    for row, (prediction, expected) in enumerate(zip(ours, theirs)):
        got = [c.index for c in prediction.top]
        exact += got == expected
        for ours_k, theirs_k in zip(got, expected):
            # a different class at rank k is only acceptable as a tie within logit tolerance
            assert abs(logits[row, ours_k] - logits[row, theirs_k]) <= PARITY_ATOL, (photos[row].name, got, expected)
    assert exact >= 0.95 * len(photos)


def test_predict_takes_the_model_name_from_a_mobilevt_weights_file(tmp_path, capsys):
    from mobilevt.cli.main import main

    photo = str(real_photos(1)[0])
    weights = mobilevt.save_weights(mobilevt.create_model("mobilevit_xs", num_classes=3), tmp_path / "xs.safetensors")
    assert main(["predict", photo, "--weights", str(weights), "--topk", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["top"]) == 3
    assert main(["predict", photo]) == 1  # published weights: which model is not written anywhere
    assert "pass --model NAME" in capsys.readouterr().err


def test_misspelled_model_is_the_only_line(capsys):
    """The name is checked first: no warning about random weights for a model that does
    not exist, and the hint names the command a CLI user runs."""
    from mobilevt.cli.main import main

    assert main(["predict", "x.jpg", "--model", "mobilevit_ss", "--weights", "none"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown model 'mobilevit_ss'. Did you mean: mobilevit_s")
    assert "`mobilevt models`" in err[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["predict", "x.jpg", "--model", "mobilevit_ss"], "Did you mean: mobilevit_s"),
        (["export", "mobilevit_xxs", "--weights", "/nonexistent.pt", "--format", "onnx", "-o", "x.onnx"], "not found"),
        (["evaluate", "--model", "mobilevit_xxs", "--weights", "none", "--data", "."], "no class folders"),
        (["train", "--config", "digits", "model=mobilevit_q"], "unknown model"),
    ],
)
def test_cli_user_errors_are_one_line(args, expected, tmp_path, monkeypatch, capsys):
    # in-process: an exception that escaped main() would fail the test as a traceback would
    # (test_profiling_cli runs the console script itself in a subprocess)
    from mobilevt.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(args) == 1
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], stderr


def test_a_bug_keeps_its_traceback_while_a_user_error_is_one_line(monkeypatch, capsys):
    """The CLI turns only mobilevt's user errors into one line: a ValueError or ImportError
    from a bug (here raised inside the command) still reaches the caller whole."""
    from mobilevt.cli import main as cli
    from mobilevt.errors import InvalidInputError, MissingDependencyError

    parser = cli.build_parser()
    for bug in (ValueError("a bug"), ImportError("a bug")):

        def broken(args, bug=bug):
            raise bug

        monkeypatch.setattr(cli, "build_parser", lambda *commands: _with_func(parser, broken))
        with pytest.raises(type(bug), match="a bug"):
            cli.main(["models"])
    for mistake in (InvalidInputError("bad value: use 3"), MissingDependencyError("pip install x")):

        def refused(args, mistake=mistake):
            raise mistake

        monkeypatch.setattr(cli, "build_parser", lambda *commands: _with_func(parser, refused))
        assert cli.main(["models"]) == 1
        assert capsys.readouterr().err == f"error: {mistake}\n"


def _with_func(parser, func):
    parser.set_defaults(func=func)
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            sub.set_defaults(func=func)
    return parser

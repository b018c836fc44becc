"""examples/web: an exported ONNX classifier (preprocessing included) in headless Chromium
with ONNX Runtime Web (WebAssembly), driven as a user does it (the page served on
127.0.0.1, a photo picked in its file input), gives the top-5 and logits of Python's
onnxruntime on the same file and pixels.

Needs Chromium and its driver (`apt-get install chromium chromium-driver`), selenium and
`npm ci` in examples/web; `.ci/run` installs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_, real_photos
from PIL import Image
from web_page import chromium, page_url, phone_size, pngs, screenshot, serve, wait_for

import mobilevt
from mobilevt.data.imagenet import imagenet_classes
from mobilevt.export import export_model

pytestmark = pytest.mark.slow  # a browser and an ONNX export

# WebAssembly kernels against onnxruntime's native CPU kernels: different summation orders
TOLERANCE = 1e-4


@pytest.fixture
def browser():
    yield from chromium()


def _pick(browser, png: Path, session):
    """Picks ``png`` in the page's file input as a user does; the page's published result,
    the photo's pixels and Python onnxruntime's output on them."""
    browser.execute_script("document.getElementById('result').dataset.done = ''")
    browser.find_element("id", "photo").send_keys(str(png))
    wait_for(browser, "return document.getElementById('result').dataset.done === 'true'")
    shown = json.loads(browser.find_element("id", "result").get_attribute("textContent"))
    pixels = np.asarray(Image.open(png))
    (expected,) = session.run(None, {session.get_inputs()[0].name: pixels})
    return shown, pixels, expected


def test_page_classifies_a_picked_photo_as_python_onnxruntime_does(browser, tmp_path):
    import onnxruntime as ort

    model = randomize_(mobilevt.create_model("mobilevit_xxs"), seed=3)
    model.preprocess = mobilevt.get_model_entry("mobilevit_xxs").get_weights("cvnets_in1k").preprocess
    export_model(model, tmp_path / "model.onnx", "onnx", include_preprocessing=True, latency_runs=0)
    names = imagenet_classes().names
    (tmp_path / "labels.txt").write_text("".join(name + "\n" for name in names))
    server = serve(tmp_path)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    try:
        browser.get(page_url(server, "index.html?runs=3"))
        wait_for(browser, "return document.getElementById('status').textContent.startsWith('ready')")
        photos = pngs(tmp_path, 2)
        for png in photos + photos[-1:]:  # the same photo picked twice in a row runs twice
            shown, pixels, expected = _pick(browser, png, session)
            expected = torch.from_numpy(expected).reshape(-1)
            assert (shown["height"], shown["width"]) == pixels.shape[:2]
            assert (torch.tensor(shown["logits"]) - expected).abs().max() <= TOLERANCE
            assert shown["top5"] == expected.topk(5).indices.tolist()
            assert shown["names"] == [names[k] for k in shown["top5"]] and shown["latency_ms"] > 0
            assert shown["first_result_ms"] > 0 and shown["decodeMs"] >= 0 and shown["modelMs"] > 0
            # cross-origin isolated by serve.py: WebAssembly on the cores there are (up to 4)
            assert shown["threads"] == min(4, browser.execute_script("return navigator.hardwareConcurrency"))
    finally:
        server.shutdown()


def _page(tmp_path, with_model: bool = True):
    """The page's files (and, with_model, a small random-weights export) served from tmp_path."""
    if with_model:
        model = randomize_(mobilevt.create_model("mobilevit_xxs"), seed=3)
        export_model(model, tmp_path / "model.onnx", "onnx", include_preprocessing=True, latency_runs=0)
    return serve(tmp_path)


def test_page_at_phone_size_is_readable_and_says_what_to_run(browser, tmp_path):
    """390x844 at 3x (a phone): laid out at the screen's width (viewport tag), text of 14 px
    or more, tap targets of 44 px or more. A missing model, labels file or runtime each get a
    message naming the command; a photo picked while loading is run once the model is ready;
    flat probabilities (random weights) get a note. A screenshot is kept as an artifact."""
    phone_size(browser)
    server = _page(tmp_path, with_model=False)
    try:
        browser.get(page_url(server, "index.html"))
        wait_for(browser, "return document.getElementById('status').textContent.startsWith('error')")
        assert (
            "mobilevt export mobilevit_xxs --format onnx --include-preprocessing"
            in browser.find_element("id", "status").text
        )
        assert browser.execute_script("return document.documentElement.clientWidth") == 390
        sizes = browser.execute_script(
            "return [...document.querySelectorAll('p, td, th, label, button, span')]"
            ".map((e) => parseFloat(getComputedStyle(e).fontSize))"
        )
        assert min(sizes) >= 14, sizes
        for target in ("label[for=photo]", "#time"):
            box = browser.execute_script(f"return document.querySelector('{target}').getBoundingClientRect().toJSON()")
            assert box["height"] >= 44 and box["width"] >= 44, (target, box)

        # the model now exported; a photo picked before it has loaded is queued, then run
        export_model(
            randomize_(mobilevt.create_model("mobilevit_xxs"), seed=3),
            tmp_path / "model.onnx",
            "onnx",
            include_preprocessing=True,
            latency_runs=0,
        )
        photo = tmp_path / "photo.png"
        Image.open(real_photos(1)[0]).convert("RGB").save(photo)
        browser.get(page_url(server, "index.html"))
        browser.find_element("id", "photo").send_keys(str(photo))
        wait_for(browser, "return document.getElementById('result').dataset.done === 'true'")
        note = browser.find_element("id", "note").text
        assert "No labels.txt" in note and "random weights" in note, note
        screenshot(browser, "web-classifier-390x844.png")
    finally:
        server.shutdown()


def test_segmentation_page_colours_the_mask_python_onnxruntime_gives(browser, tmp_path):
    """segment.html with a DeepLabV3 export (preprocessing included): for two real photos the
    logits equal Python's onnxruntime on the same pixels within 1e-4, the argmax mask is the
    same pixel for pixel, and the legend lists the classes found with their shares. Screenshots
    at a phone's size are kept as artifacts."""
    import onnxruntime as ort

    model = randomize_(mobilevt.create_model("deeplabv3_mobilevit_xxs"), seed=5)
    export_model(model, tmp_path / "segment.onnx", "onnx", include_preprocessing=True, latency_runs=0)
    (tmp_path / "segment-labels.txt").write_text("".join(name + "\n" for name in model.class_names))
    server = _page(tmp_path, with_model=False)
    session = ort.InferenceSession(str(tmp_path / "segment.onnx"), providers=["CPUExecutionProvider"])
    phone_size(browser, scale=2)
    try:
        browser.get(page_url(server, "segment.html"))
        wait_for(browser, "return document.getElementById('status').textContent.startsWith('ready')")
        for i, png in enumerate(pngs(tmp_path, 2)):
            shown, pixels, expected = _pick(browser, png, session)
            expected = torch.from_numpy(expected)
            logits = torch.tensor(shown["logits"]).reshape(shown["dims"])
            assert shown["dims"] == list(expected.shape) and (logits - expected).abs().max() <= TOLERANCE
            mask = expected.argmax(1).reshape(-1)
            assert torch.equal(logits.argmax(1).reshape(-1), mask)
            counts = torch.bincount(mask, minlength=expected.shape[1])
            found = {c["index"]: c for c in shown["classes"]}
            assert set(found) == set(torch.nonzero(counts).reshape(-1).tolist())
            for index, entry in found.items():
                assert entry["name"] == model.class_names[index]
                assert entry["share"] == pytest.approx(counts[index].item() / mask.numel())
            screenshot(browser, f"web-segmentation-390x844-{i}.png")
    finally:
        server.shutdown()

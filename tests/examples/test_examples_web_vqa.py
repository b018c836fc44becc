"""examples/web/vqa.html: a ViLT ONNX file from the exporter answers questions about a photo
in headless Chromium with ONNX Runtime Web, its pre-processing done in the page (vilt.js):

- the question tokenizer (Hugging Face's JavaScript tokenizers on the ``tokenizer.json`` the
  export writes) gives mobilevt's ids (themselves BERT's) on a corpus of 2,000+ questions;
- the image transform gives mobilevt's ``pixel_values`` bit for bit;
- the page, driven as a person uses it (photo picked, question typed, model file chosen),
  gives the logits of Python's onnxruntime on mobilevt's inputs for the same photo and
  question, for the full file and a MobiVQA one.

Needs Chromium, its driver, selenium and `npm ci` in examples/web (`.ci/run` installs them)."""

from __future__ import annotations

import base64
import copy
import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image
from question_corpus import question_corpus
from web_page import chromium, page_url, phone_size, pngs, screenshot, serve, wait_for

import mobilevt
from mobilevt.data.tokenizer import create_tokenizer
from mobilevt.data.vilt_preprocess import ViltImagePreprocess, ViltImageSizeRule
from mobilevt.errors import InvalidInputError
from mobilevt.export import export_model
from mobilevt.export.vilt import _model_inputs
from mobilevt.tasks.vqa import VqaPipeline

pytestmark = pytest.mark.slow  # a browser and two ONNX exports

TOLERANCE = 1e-4  # WebAssembly kernels against onnxruntime's native ones: other summation orders
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ANSWERS = ["yes", "no", "two", "three", "red", "blue", "a cat", "a dog", "outside", "tennis", "pizza", "東京"]
MOBIVQA_SENTENCE = "MobiVQA: keeps 50 % of the image tokens after layer 1 and exits after layer 3."
QUESTIONS = ("What is in the picture?", "¿Cuántas personas hay en la foto?", "这是什么动物？")
FIXTURE_RULE = ViltImageSizeRule.for_image_size(192, 32)  # the exported model's, not ViLT-B/32's 384


@pytest.fixture
def browser():
    yield from chromium()


def _corpus_vocabulary(folder, corpus: list[str]):
    """A BERT-style vocabulary trained on the corpus itself, so that most of its words are
    in it and the tokenizers' word splitting, not [UNK], is what the test compares."""
    tokenizers = pytest.importorskip("tokenizers", reason='pip install "mobilevt[test]"')
    trainer_tokenizer = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
    trainer_tokenizer.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    trainer_tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    trainer = tokenizers.trainers.WordPieceTrainer(vocab_size=6000, special_tokens=SPECIAL, show_progress=False)
    trainer_tokenizer.train_from_iterator(corpus, trainer)
    tokens = [token for token, _ in sorted(trainer_tokenizer.get_vocab().items(), key=lambda item: item[1])]
    path = folder / "vocab.txt"
    path.write_text("".join(token + "\n" for token in tokens), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small random ViLT (4 layers, patch 32 as ViLT-B/32) exported as the page expects it:
    vqa.onnx (full) and vqa-mobivqa.onnx (half the image tokens after layer 1, exit after
    layer 3), with their side files; and the pipeline."""
    folder = tmp_path_factory.mktemp("vqa-page")
    corpus = question_corpus()
    tokenizer = create_tokenizer(_corpus_vocabulary(folder, corpus))
    model = mobilevt.create_model(
        "vilt_b32_vqa",
        num_classes=len(ANSWERS),
        answers=ANSWERS,
        hidden_size=64,
        num_layers=4,
        num_heads=4,
        mlp_dim=128,
        vocab_size=len(tokenizer.id_to_token),
    )
    torch.manual_seed(0)
    with torch.no_grad():  # logits spread well beyond the tolerance
        model.head.fc2.weight.normal_(0, 0.5)
    # a size rule of its own (the page must read it from the file) and, for the MobiVQA file,
    # softmax scores (the page must score each file as its report says)
    model.image_size_rule = FIXTURE_RULE
    pipeline = VqaPipeline(model.eval(), tokenizer)
    export_model(pipeline, folder / "vqa.onnx", "onnx", latency_runs=0, max_check_images=2)
    mobivqa = copy.deepcopy(pipeline)
    mobivqa.model.add_early_exits([2, 3])
    mobivqa.model.set_token_pruning(1, 0.5)
    mobivqa.model.set_early_exit(layer=3)
    mobivqa.answer_softmax = True
    export_model(mobivqa, folder / "vqa-mobivqa.onnx", "onnx", latency_runs=0, max_check_images=2)
    return folder, corpus, {"vqa.onnx": pipeline, "vqa-mobivqa.onnx": mobivqa}


def test_page_tokenizer_gives_mobilevts_ids_on_2000_questions(browser, exported):
    folder, corpus, pipelines = exported
    assert len(corpus) >= 2000
    tokenizer = pipelines["vqa.onnx"].tokenizer
    server = serve(folder)
    try:
        browser.get(page_url(server, ""))
        got = browser.execute_async_script(
            """
            const [texts, done] = arguments;
            const script = document.createElement("script");
            script.src = "vilt.js";
            script.onload = async () => {
              const { Tokenizer } = await import("/tokenizers/tokenizers.min.mjs");
              const read = async (name) => (await fetch(name)).json();
              const config = await read("vqa.tokenizer_config.json");
              const tokenizer = new Tokenizer(await read("vqa.tokenizer.json"), config);
              done(texts.map((text) => encodeQuestion(tokenizer, text, config.model_max_length)));
            };
            document.head.append(script);
            """,
            corpus,
        )
    finally:
        server.shutdown()
    mismatches = [(text, ids) for text, ids in zip(corpus, got, strict=True) if ids != tokenizer.encode(text)]
    assert not mismatches, f"{len(mismatches)} of {len(corpus)} differ, e.g. {mismatches[:3]}"
    unknown = sum(ids.count(tokenizer.unk_token_id) for ids in got) / sum(len(ids) for ids in got)
    assert unknown < 0.05  # the corpus's own vocabulary: words are split, not unknown


def _photos(folder) -> list[np.ndarray]:
    """Real photos at their sizes, and sizes ViLT enlarges, shrinks and caps."""
    rng = np.random.default_rng(0)
    photos = [np.asarray(Image.open(path)) for path in pngs(folder, 2)]
    return photos + [rng.integers(0, 256, size, dtype=np.uint8) for size in ((50, 70, 3), (383, 1000, 3), (31, 500, 3))]


def test_page_preprocessing_gives_mobilevts_pixel_values_bit_for_bit(browser, exported, tmp_path):
    folder, _, _ = exported
    server = serve(folder)
    # the exported model's rule as vqa.preprocessor_config.json gives it to the page, ViLT-B/32's,
    # and a small model's with other sizes and ImageNet's mean and std
    exported_rule = json.loads((folder / "vqa.preprocessor_config.json").read_text())
    assert exported_rule["size"] == {"shortest_edge": 192} and exported_rule["size_divisor"] == 32
    small = ViltImageSizeRule(96, 159, 8, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    cases = [
        (exported_rule, ViltImagePreprocess(FIXTURE_RULE)),
        (ViltImageSizeRule().preprocessor_config(), ViltImagePreprocess()),
        (small.preprocessor_config(), ViltImagePreprocess(small)),
    ]
    try:
        browser.get(page_url(server, ""))
        for photo, (config, preprocess) in itertools.product(_photos(tmp_path), cases):
            height, width, _ = photo.shape
            got = browser.execute_async_script(
                """
                const [encoded, height, width, config, done] = arguments;
                const run = () => {
                  const rgb = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
                  const rule = imageRule(config, "preprocessor_config.json");
                  let pixels;
                  try {
                    pixels = viltPixelValues(rgb, height, width, rule);
                  } catch (error) {
                    return done(["error", error.message]);
                  }
                  const { values, height: h, width: w } = pixels;
                  const bytes = new Uint8Array(values.buffer);
                  let text = "";
                  for (let i = 0; i < bytes.length; i += 8192) {
                    text += String.fromCharCode(...bytes.subarray(i, i + 8192));
                  }
                  done([btoa(text), h, w]);
                };
                if (typeof viltPixelValues === "function") return run();
                const script = document.createElement("script");
                script.src = "vilt.js";
                script.onload = run;
                document.head.append(script);
                """,
                base64.b64encode(photo.tobytes()).decode(),
                height,
                width,
                config,
            )
            if 0 in preprocess.output_size(height, width):  # both refuse it, saying why
                assert got[0] == "error" and "too elongated" in got[1], got
                with pytest.raises(InvalidInputError, match="too elongated"):
                    preprocess(torch.from_numpy(photo.copy()))
                continue
            expected, _ = preprocess(torch.from_numpy(photo.copy()))
            values = np.frombuffer(base64.b64decode(got[0]), dtype=np.float32)
            assert [got[1], got[2]] == list(expected.shape[-2:]), (photo.shape, config)
            assert np.array_equal(values.reshape(expected.shape), expected.numpy()), (photo.shape, config)
    finally:
        server.shutdown()


def _ask(browser, question: str, png=None) -> dict:
    """Types ``question`` and picks ``png`` (or asks about the photo already picked)."""
    browser.execute_script("document.getElementById('result').dataset.done = ''")
    field = browser.find_element("id", "question")
    field.clear()
    field.send_keys(question)
    if png is None:
        browser.find_element("id", "ask").click()
    else:
        browser.find_element("id", "photo").send_keys(str(png))
    wait_for(browser, "return document.getElementById('result').dataset.done === 'true'")
    return json.loads(browser.find_element("id", "result").get_attribute("textContent"))


def _switch(browser, index: int) -> dict:
    """Chooses the ``index``-th model file in the selector, which answers again."""
    from selenium.webdriver.support.ui import Select

    browser.execute_script("document.getElementById('result').dataset.done = ''")
    Select(browser.find_element("id", "variant")).select_by_index(index)
    wait_for(browser, "return document.getElementById('result').dataset.done === 'true'")
    return json.loads(browser.find_element("id", "result").get_attribute("textContent"))


def _expected_logits(folder, pipeline, png, question: str, model_file: str):
    import onnxruntime as ort

    image = torch.from_numpy(np.asarray(Image.open(png)).copy())
    inputs = _model_inputs(pipeline, image, question, pad_text=False)
    session = ort.InferenceSession(str(folder / model_file), providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]
    (logits,) = session.run(None, {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)})
    return torch.from_numpy(logits).reshape(-1), inputs[0].reshape(-1).tolist()


def test_vqa_page_answers_as_python_onnxruntime_for_the_full_and_mobivqa_files(browser, exported, tmp_path):
    """Two real photos, three questions in three scripts, both model files: logits within 1e-4
    of Python's onnxruntime on mobilevt's inputs, the same top-5 answers, the time of each
    stage. At a phone's size the page is readable and tappable; screenshots are kept. Without
    a model file the page says what to export."""
    folder, _, pipelines = exported
    empty = tmp_path / "empty"
    empty.mkdir()
    phone_size(browser)
    server = serve(empty)
    try:
        browser.get(page_url(server, "vqa.html"))
        wait_for(browser, "return document.getElementById('status').textContent.startsWith('error')")
        assert "mobilevt export vilt_b32_vqa --format onnx" in browser.find_element("id", "status").text
    finally:
        server.shutdown()
    server = serve(folder)
    try:
        browser.get(page_url(server, "vqa.html"))
        wait_for(browser, "return document.getElementById('status').textContent.startsWith('ready')")
        options = browser.execute_script("return [...document.getElementById('variant').options].map((o) => o.text)")
        assert options == ["full model", "MobiVQA: 50 % tokens, exit 3"]
        _assert_readable_at_phone_size(browser)
        photos = pngs(tmp_path, 2)
        # (photo picked, or None: the question asked about the photo already there; question; file)
        steps = [
            (photos[0], QUESTIONS[0], "vqa.onnx"),
            (None, QUESTIONS[1], "vqa.onnx"),
            (photos[1], QUESTIONS[2], "vqa.onnx"),
            ("switch", QUESTIONS[2], "vqa-mobivqa.onnx"),  # choosing the file answers again
            (photos[0], QUESTIONS[0], "vqa-mobivqa.onnx"),
        ]
        png = None
        for pick, question, model_file in steps:
            if pick == "switch":
                screenshot(browser, "web-vqa-390x844-full.png")
                shown = _switch(browser, index=1)
            else:
                png = pick or png
                shown = _ask(browser, question, pick)
            expected, ids = _expected_logits(folder, pipelines[model_file], png, question, model_file)
            assert shown["model"].endswith("/" + model_file) and shown["question"] == question
            note = browser.find_element("id", "variant-note").text
            assert note == ("The full model." if model_file == "vqa.onnx" else MOBIVQA_SENTENCE)
            assert shown["ids"] == ids
            assert (torch.tensor(shown["logits"]) - expected).abs().max() <= TOLERANCE
            assert shown["top5"] == expected.topk(5).indices.tolist()
            assert shown["names"] == [ANSWERS[k] for k in shown["top5"]]
            # each file scored as its export report says: sigmoid (ViLT), softmax (trained so)
            scores = expected.softmax(-1) if model_file == "vqa-mobivqa.onnx" else expected.sigmoid()
            assert shown["scores"] == pytest.approx(scores[shown["top5"]].tolist(), abs=TOLERANCE)
            assert [shown["pixelHeight"], shown["pixelWidth"]] == list(FIXTURE_RULE.output_size(*_size_of(png)))
            for stage in ("decodeMs", "preprocessMs", "tokenizeMs", "modelMs", "first_result_ms"):
                assert shown[stage] >= 0, stage
        screenshot(browser, "web-vqa-390x844-mobivqa.png")
    finally:
        server.shutdown()


def _size_of(png) -> tuple[int, int]:
    with Image.open(png) as image:
        return image.height, image.width


def _assert_readable_at_phone_size(browser) -> None:
    assert browser.execute_script("return document.documentElement.clientWidth") == 390
    sizes = browser.execute_script(
        "return [...document.querySelectorAll('p, td, th, label, button, span, input, select')]"
        ".filter((e) => e.id !== 'photo').map((e) => parseFloat(getComputedStyle(e).fontSize))"
    )
    assert min(sizes) >= 14, sizes
    for target in ("label[for=photo]", "#ask", "#question", "#variant"):
        box = browser.execute_script(f"return document.querySelector('{target}').getBoundingClientRect().toJSON()")
        assert box["height"] >= 44 and box["width"] >= 44, (target, box)


# WebGPU kernels (here Chromium's software adapter) sum in other orders and may use fused
# multiply-adds: a looser bar on the logits, the same top-5
WEBGPU_TOLERANCE = 1e-3


def test_vqa_page_on_webgpu_answers_as_python_onnxruntime(exported, tmp_path):
    """Where the browser has WebGPU the page offers it; on it (?backend=webgpu) the answers
    are Python onnxruntime's: logits within 1e-3, the same top-5."""
    folder, _, pipelines = exported
    driver_steps = chromium(webgpu=True)
    browser = next(driver_steps)
    server = serve(folder)
    try:
        browser.get(page_url(server, "vqa.html"))
        wait_for(browser, "return document.getElementById('backend-choice').dataset.checked === 'true'")
        if browser.execute_script("return document.getElementById('backend-choice').hidden"):
            pytest.skip("this Chromium offers no WebGPU adapter, not even its software one")
        browser.get(page_url(server, "vqa.html?backend=webgpu"))
        wait_for(browser, "return document.getElementById('status').textContent.startsWith('ready (WebGPU')")
        png = pngs(tmp_path, 1)[0]
        shown = _ask(browser, QUESTIONS[0], png)
        expected, ids = _expected_logits(folder, pipelines["vqa.onnx"], png, QUESTIONS[0], "vqa.onnx")
        assert shown["backend"] == "webgpu" and shown["ids"] == ids
        assert (torch.tensor(shown["logits"]) - expected).abs().max() <= WEBGPU_TOLERANCE
        assert shown["top5"] == expected.topk(5).indices.tolist()
    finally:
        server.shutdown()
        next(driver_steps, None)

"""The end-to-end ViLT VQA pipeline: image preprocessing against transformers'
``ViltImageProcessor`` on real photos, the whole pipeline against ``ViltProcessor`` +
``ViltForQuestionAnswering``, TorchScript save/load, ``mobilevt vqa`` and
``mobilevt export vilt_b32_vqa``.

No download: the reference model is a small random ViLT saved with ``save_pretrained`` and
its vocabulary is trained here with ``tokenizers``' WordPiece trainer.

Tolerances: the image preprocessing runs the kernel the reference runs (torch's uint8
antialiased bicubic) and the same fused float32 normalisation, so it must be bit-exact
(0.0). Logits against transformers: 1e-4 (PARITY_ATOL: different attention kernels and
summation orders, as in tests/models/test_vilt.py); TorchScript vs eager: 1e-5 (same kernels).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import PARITY_ATOL, SHARED, max_abs, real_photos

import mobilevt
from mobilevt.cli.main import main
from mobilevt.data import load_image
from mobilevt.data.vilt_preprocess import ViltImagePreprocess, ViltImageSizeRule
from mobilevt.tasks.vqa import VqaPipeline, create_vqa_pipeline, load_vqa_pipeline

transformers = pytest.importorskip("transformers", reason='the parity tests need it: pip install "mobilevt[test]"')
tokenizers = pytest.importorskip("tokenizers", reason='the parity tests need it: pip install "mobilevt[test]"')
from transformers import BertTokenizerFast, ViltConfig, ViltImageProcessor, ViltProcessor  # noqa: E402
from transformers import ViltForQuestionAnswering as HfViltForQuestionAnswering  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

ANSWERS = ["yes", "no", "2", "cat", "red", "1", "dog", "white", "blue", "3", "remote", "couch"]
SMALL_HF = dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=4, intermediate_size=192, image_size=160)
QUESTIONS = [
    "How many cats are there?",
    "What color is the blanket?",
    "Is there a remote control on the couch?",
    "What is the animal doing?",
    "Are the cats sleeping or awake?",
    "what's on the left side of the picture?",
]
COCO_CATS = SHARED / "data" / "coco-cats" / "000000039769.png"


def _photos(limit: int) -> list:
    photos = ([COCO_CATS] if COCO_CATS.is_file() else []) + real_photos(limit)
    return photos[:limit]


def _train_vocab(path) -> str:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer_tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trainer_tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    trainer_tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=special, show_progress=False)
    trainer_tokenizer.train_from_iterator(["\n".join(QUESTIONS)] * 20, trainer)
    tokens = [token for token, _ in sorted(trainer_tokenizer.get_vocab().items(), key=lambda item: item[1])]
    path.write_text("".join(token + "\n" for token in tokens), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def reference():
    config = ViltConfig(
        **SMALL_HF,
        num_labels=len(ANSWERS),
        id2label=dict(enumerate(ANSWERS)),
        label2id={a: i for i, a in enumerate(ANSWERS)},
    )
    model = HfViltForQuestionAnswering(config)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():  # every parameter random, norm scales around 1 (defaults hide errors)
        for name, param in model.named_parameters():
            is_norm_scale = (
                param.dim() == 1
                and name.endswith("weight")
                and ("norm" in name.lower() or name.startswith("classifier.1."))
            )
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + (1.0 if is_norm_scale else 0.0))
    return model.eval()


@pytest.fixture(scope="module")
def hf_folder(reference, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vilt_vqa_hf")
    reference.save_pretrained(folder)
    _train_vocab(folder / "vocab.txt")
    return folder


@pytest.fixture(scope="module")
def processor(hf_folder):
    return ViltProcessor(
        image_processor=ViltImageProcessor(), tokenizer=BertTokenizerFast(str(hf_folder / "vocab.txt"))
    )


@pytest.fixture(scope="module")
def pipeline(hf_folder):
    return create_vqa_pipeline(weights=str(hf_folder))


def _reference_logits(reference, processor, photo, question) -> torch.Tensor:
    from PIL import Image

    inputs = processor(images=Image.open(photo).convert("RGB"), text=question, return_tensors="pt")
    torch.manual_seed(0)  # transformers permutes the patches with torch.multinomial
    with torch.no_grad():
        return reference(**inputs).logits[0]


# ---------------------------------------------------------------------------------------
# Image preprocessing


def test_preprocessing_matches_vilt_image_processor_on_real_photos():
    photos = _photos(24)
    reference = ViltImageProcessor()
    ours = torch.jit.script(ViltImagePreprocess())
    differing = total = 0
    worst = 0.0
    for photo in photos:
        from PIL import Image

        expected = reference(Image.open(photo).convert("RGB"), return_tensors="pt")
        image = load_image(photo)
        for layout in (image, image.permute(1, 2, 0).contiguous()):  # [3, H, W] and [H, W, 3]
            pixel_values, pixel_mask = ours(layout)
            assert pixel_values.shape == expected["pixel_values"].shape, photo.name
            assert torch.equal(pixel_mask, expected["pixel_mask"])
            difference = (pixel_values - expected["pixel_values"]).abs()
            worst = max(worst, difference.max().item())
            differing += int((difference > 0).sum())
            total += difference.numel()
    # Measured on 24 photos (ImageNet sample + COCO cats): max 0, mean 0, 0% of values
    # differ: the same uint8 bicubic kernel and normalisation as the reference.
    assert worst == 0.0 and differing == 0, f"max-abs {worst}, {differing / total:.2%} of values differ"


def test_a_small_models_size_rule_and_scores_match_the_reference_and_are_saved_with_it(pipeline, tmp_path):
    """A ViLT trained on 96x96 images with patch 8: its rule is ViltImageProcessor's with
    shortest_edge 96 and size_divisor 8 (other mean and std too); trained with cross-entropy,
    its answers are scored with a softmax. The weights file keeps both."""
    from PIL import Image

    rule = ViltImageSizeRule.for_image_size(96, 8)
    rule = ViltImageSizeRule.from_dict(rule.to_dict() | {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
    reference = ViltImageProcessor(**rule.preprocessor_config())
    assert ViltImageSizeRule.from_preprocessor_config(reference.to_dict()) == rule  # its own file, read back
    for photo in _photos(4):
        expected = reference(Image.open(photo).convert("RGB"), return_tensors="pt")["pixel_values"]
        pixel_values, _ = ViltImagePreprocess(rule)(load_image(photo))
        assert pixel_values.shape[-1] % 8 == 0 and min(pixel_values.shape[-2:]) <= 96
        assert torch.equal(pixel_values, expected), photo.name
    small = dict(hidden_size=32, num_layers=1, num_heads=2, mlp_dim=64, image_size=96, patch_size=8)
    vocab_size = len(pipeline.tokenizer.id_to_token)
    model = mobilevt.create_model("vilt_b32_vqa", **small, vocab_size=vocab_size, num_classes=2)
    model.image_size_rule, model.answer_softmax = rule, True  # trained with cross-entropy: softmax scores
    saved = mobilevt.save_weights(model, tmp_path / "m.safetensors")
    loaded = mobilevt.create_model("vilt_b32_vqa", weights=str(saved))
    assert loaded.image_size_rule == rule and loaded.answer_softmax
    small_pipeline = VqaPipeline(loaded, pipeline.tokenizer)
    assert small_pipeline.image_preprocess.size_rule() == rule
    small_pipeline = torch.jit.script(small_pipeline)  # what an app runs
    photo = load_image(_photos(1)[0])
    scores = [score for _, score in small_pipeline(photo, QUESTIONS[0], 2)]
    expected = small_pipeline.answer_logits(photo, QUESTIONS[0]).softmax(-1).sort(descending=True).values
    assert scores == pytest.approx(expected.tolist(), abs=1e-6)
    # ViLT's own files keep sigmoid scores
    assert not mobilevt.create_model(
        "vilt_b32_vqa", weights=str(mobilevt.save_weights(pipeline.model, tmp_path / "v.safetensors"))
    ).answer_softmax


def test_padded_batch_and_mask_match_vilt_image_processor():
    from PIL import Image

    photos = _photos(4)
    pil_images = [Image.open(p).convert("RGB") for p in photos]
    # a portrait and a landscape photo so that both height and width need padding
    pil_images.append(pil_images[0].transpose(Image.Transpose.ROTATE_90))
    expected = ViltImageProcessor()(pil_images, return_tensors="pt")
    preprocess = torch.jit.script(ViltImagePreprocess())
    tensors = [torch.from_numpy(__import__("numpy").asarray(im).copy()) for im in pil_images]  # [H, W, 3]
    pixel_values, pixel_mask = preprocess.pad_batch(tensors)
    assert pixel_mask.shape == expected["pixel_mask"].shape and torch.equal(pixel_mask, expected["pixel_mask"])
    assert torch.equal(pixel_values, expected["pixel_values"])
    assert (pixel_mask == 0).any(), "the batch has no padding: the test would not check the mask"


def test_preprocessing_rejects_bad_images_clearly():
    preprocess = ViltImagePreprocess()
    with pytest.raises(ValueError, match="expected a uint8 RGB image"):
        preprocess(torch.rand(64, 64, 3))
    with pytest.raises(ValueError, match=r"expected one RGB image \[H, W, 3\] or \[3, H, W\], got shape \[64, 64, 4\]"):
        preprocess(torch.zeros(64, 64, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="too elongated"):
        preprocess(torch.zeros(4, 2000, 3, dtype=torch.uint8))


# ---------------------------------------------------------------------------------------
# End-to-end pipeline


def test_pipeline_matches_transformers_end_to_end_on_real_photos(pipeline, reference, processor):
    photos = _photos(4)
    for photo, question in zip(photos, QUESTIONS):
        expected = _reference_logits(reference, processor, photo, question)
        assert expected.abs().max() > 1.0, "reference logits are degenerate; the comparison would be vacuous"
        image = load_image(photo).permute(1, 2, 0).contiguous()
        with torch.no_grad():
            logits = pipeline.answer_logits(image, question)
            answers = pipeline(image, question, top_k=3)
        assert max_abs(logits, expected) <= PARITY_ATOL, photo.name
        scores = torch.sigmoid(expected)
        best = scores.topk(3)
        assert [a for a, _ in answers] == [ANSWERS[i] for i in best.indices.tolist()]
        assert [s for _, s in answers] == pytest.approx(best.values.tolist(), abs=1e-5)


def test_saved_torchscript_pipeline_gives_the_same_answers(pipeline, tmp_path):
    path = pipeline.save_torchscript(tmp_path / "vqa.pt")
    loaded = load_vqa_pipeline(path)
    photos = _photos(3)
    images = [load_image(p).permute(1, 2, 0).contiguous() for p in photos]
    with torch.no_grad():
        for image, question in zip(images, QUESTIONS):
            eager = pipeline(image, question, 5)
            scripted = loaded(image, question, 5)
            assert [a for a, _ in scripted] == [a for a, _ in eager]
            assert [s for _, s in scripted] == pytest.approx([s for _, s in eager], abs=1e-5)
        # batch of differently sized images and questions: each row as if alone
        batch = loaded.answer_batch(images, QUESTIONS[: len(images)], 2)
        for row, (image, question) in zip(batch, zip(images, QUESTIONS)):
            alone = pipeline(image, question, 2)
            assert [a for a, _ in row] == [a for a, _ in alone]
            assert [s for _, s in row] == pytest.approx([s for _, s in alone], abs=1e-5)


def test_a_pipeline_that_calls_an_extension_operator_is_not_saved(pipeline, tmp_path):
    from mobilevt.data.preprocess import EncodedImagePreprocess, ImagePreprocess
    from mobilevt.export import ExportError

    pipeline.decoder = EncodedImagePreprocess(ImagePreprocess(mobilevt.PreprocessConfig((64, 64), 64)))
    try:
        with pytest.raises(ExportError, match="calls image::decode_image, image::read_file, operators that core"):
            pipeline.save_torchscript(tmp_path / "vqa.pt")
    finally:
        del pipeline.decoder
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # builds the C++ example once per run (about a minute of g++)
def test_cpp_example_answers_like_python(pipeline, cpp_runner, tmp_path):
    """The saved pipeline in a C++ program on libtorch alone: image file and question
    string in, the same answers and scores as Python's TorchScript interpreter, also for
    non-ASCII and empty questions."""
    import subprocess

    from conftest import write_ppm

    path = pipeline.save_torchscript(tmp_path / "vqa.pt")
    loaded = load_vqa_pipeline(path)
    image = load_image(_photos(1)[0]).permute(1, 2, 0).contiguous()
    ppm = write_ppm(image, tmp_path / "photo.ppm")
    for question in [QUESTIONS[0], "¿De qué color es el gato? 猫は何色？", ""]:
        run = subprocess.run(
            [str(cpp_runner), "vqa", str(path), str(ppm), question, "--topk", "4", "--threads", "1"],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        printed = [line.split("\t") for line in run.stdout.splitlines()]
        with torch.no_grad():
            expected = loaded(image, question, 4)
        assert [answer for _, answer in printed] == [answer for answer, _ in expected]
        assert [float(score) for score, _ in printed] == pytest.approx([score for _, score in expected], abs=1e-4)


def test_pipeline_errors_are_clear(pipeline, tmp_path, hf_folder):
    image = torch.zeros(100, 120, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        pipeline(image, "what?", 0)
    assert len(pipeline(image, "what?", 100)) == len(ANSWERS)  # top_k beyond the answers: all of them
    # an HF folder without vocab.txt
    folder = tmp_path / "no_vocab"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((hf_folder / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="no vocab.txt in .*no_vocab.*vocab_file=FILE"):
        create_vqa_pipeline(weights=str(folder))
    # random weights need a vocabulary too
    with pytest.raises(ValueError, match=r"random ViLT weights .*come without a vocabulary: pass vocab_file="):
        create_vqa_pipeline(weights=None)
    # the vocab of a folder can be given explicitly
    explicit = create_vqa_pipeline(weights=str(folder), vocab_file=hf_folder / "vocab.txt")
    assert isinstance(explicit, VqaPipeline) and explicit.answers == ANSWERS


# ---------------------------------------------------------------------------------------
# Command line


def test_vqa_command_prints_the_pipelines_answers(pipeline, hf_folder, capsys):
    photo = _photos(1)[0]
    question = QUESTIONS[0]
    assert main(["vqa", str(photo), question, "--weights", str(hf_folder), "--topk", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    with torch.no_grad():
        expected = pipeline(load_image(photo), question, 3)
    assert [row["answer"] for row in printed["answers"]] == [a for a, _ in expected]
    assert [row["score"] for row in printed["answers"]] == pytest.approx([s for _, s in expected], abs=1e-5)
    assert printed["question"] == question


def test_vqa_command_errors_are_one_line(hf_folder, tmp_path, capsys):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("hello")
    assert main(["vqa", str(bad), "what?", "--weights", str(hf_folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not_an_image.jpg" in err and "\n" not in err
    folder = tmp_path / "no_vocab"
    folder.mkdir()
    (folder / "config.json").write_bytes((hf_folder / "config.json").read_bytes())
    (folder / "model.safetensors").write_bytes((hf_folder / "model.safetensors").read_bytes())
    assert main(["vqa", str(_photos(1)[0]), "what?", "--weights", str(folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no vocab.txt") and "--vocab" in err and "\n" not in err


def test_vqa_command_with_random_weights_needs_only_a_vocabulary(hf_folder, capsys):
    """``--weights none`` is random weights in `vqa` as in every command (not a Hub id):
    without ``--vocab`` one line says which vocabulary to pass; with it, answers come."""
    photo = str(_photos(1)[0])
    assert main(["vqa", photo, "what?", "--weights", "none"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "warning: vilt_b32_vqa has random weights (--weights none); its answers are meaningless"
    assert len(err) == 2 and err[1].startswith("error: random ViLT weights") and "--vocab FILE" in err[1]
    assert (
        main(
            [
                "vqa",
                photo,
                "what?",
                "--weights",
                "none",
                "--vocab",
                str(hf_folder / "vocab.txt"),
                "--topk",
                "2",
                "--json",
            ]
        )
        == 0
    )
    assert len(json.loads(capsys.readouterr().out)["answers"]) == 2


# ---------------------------------------------------------------------------------------
# mobilevt export vilt_b32_vqa


@pytest.fixture(scope="module")
def check_folder(tmp_path_factory):
    """Three real photos of different sizes, one turned to portrait: the exports must take
    every image size ViLT's preprocessing makes."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("vqa_check")
    photos = _photos(3)
    for index, photo in enumerate(photos):
        image = Image.open(photo).convert("RGB")
        if index == 1:
            image = image.transpose(Image.Transpose.ROTATE_90)
        image.save(folder / f"{index}.png")
    return folder


def _export(hf_folder, check_folder, output, fmt, capsys) -> dict:
    args = [
        "export",
        "vilt_b32_vqa",
        "--weights",
        str(hf_folder),
        "--format",
        fmt,
        "-o",
        str(output),
        "--check-images",
        str(check_folder),
    ]
    assert main(args) == 0, capsys.readouterr().err
    assert "top-1 agreement 100.0%" in capsys.readouterr().out
    return json.loads((output.parent / (output.name + ".report.json")).read_text())


def test_export_torchscript_is_the_whole_pipeline(pipeline, hf_folder, check_folder, tmp_path, capsys):
    output = tmp_path / "vqa.pt"
    report = _export(hf_folder, check_folder, output, "torchscript", capsys)
    assert report["check_images"] == 3 and report["include_preprocessing"]
    assert report["max_abs_diff"] <= 1e-5 and report["top1_agreement"] == 1.0  # the same kernels as eager
    assert report["exported_latency_ms"] > 0 and report["eager_latency_ms"] > 0
    # libtorch alone loads the pipeline (tokenizer included): no extension operator in its code
    from mobilevt.export.formats.torchscript import extension_operators

    assert extension_operators(output) == []
    loaded = torch.jit.load(str(output))
    image = load_image(_photos(1)[0]).permute(1, 2, 0).contiguous()
    with torch.no_grad():
        assert [a for a, _ in loaded(image, QUESTIONS[1], 3)] == [a for a, _ in pipeline(image, QUESTIONS[1], 3)]
    # the CLI answers with the exported file as well
    assert main(["vqa", str(_photos(1)[0]), QUESTIONS[1], "--pipeline", str(output), "--json", "--topk", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [row["answer"] for row in printed["answers"]] == [a for a, _ in pipeline(image, QUESTIONS[1], 3)]


def _model_inputs(pipeline, image, question, pad_text=False):
    pixel_values, pixel_mask = pipeline.image_preprocess(image)
    input_ids, attention_mask = pipeline.tokenizer.encode_batch([question], pad_text)
    return input_ids, attention_mask, pixel_values, pixel_mask


def test_export_onnx_with_dynamic_image_size_and_vocab(pipeline, hf_folder, check_folder, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason='the onnx export needs it: pip install "mobilevt[onnx]"')
    output = tmp_path / "vqa.onnx"
    report = _export(hf_folder, check_folder, output, "onnx", capsys)
    assert report["max_abs_diff"] <= PARITY_ATOL and report["top1_agreement"] == 1.0
    assert report["details"]["answer_scores"] == "sigmoid"  # ViLT's VQA head; the page scores by it
    # the attention mask is added to the scores: no Where(IsNaN(Softmax)) pass over them per layer
    # (how the exporter writes SDPA's boolean mask; 12% of the int8 ViLT-B/32's time)
    import onnx

    op_types = [n.op_type for n in onnx.load(str(output)).graph.node]
    assert "IsNaN" not in op_types and op_types.count("Where") < SMALL_HF["num_hidden_layers"], op_types
    # an app tokenizes with the shipped vocabulary and names logits with the answers file
    assert (tmp_path / "vqa.vocab.txt").read_text() == (hf_folder / "vocab.txt").read_text()
    assert (tmp_path / "vqa.answers.txt").read_text().splitlines() == ANSWERS
    tokenizer = torch.jit.load(str(tmp_path / "vqa.tokenizer.pt"))
    assert tokenizer.encode(QUESTIONS[2]) == pipeline.tokenizer.encode(QUESTIONS[2])
    # Hugging Face's tokenizer.json (what web pages load) gives the same ids in the reference
    # Rust tokenizers, its truncation included
    from tokenizers import Tokenizer

    hugging_face = Tokenizer.from_file(str(tmp_path / "vqa.tokenizer.json"))
    for text in (*QUESTIONS, "how many " * 50, ""):
        assert hugging_face.encode(text).ids == pipeline.tokenizer.encode(text), text
    # the image rule, in transformers' preprocessor_config.json keys: its ViltImageProcessor
    # reads the file and pre-processes a photo as the pipeline does
    from PIL import Image

    config = json.loads((tmp_path / "vqa.preprocessor_config.json").read_text())
    photo = _photos(1)[0]
    expected = ViltImageProcessor(**config)(Image.open(photo).convert("RGB"), return_tensors="pt")
    assert torch.equal(pipeline.image_preprocess(load_image(photo))[0], expected["pixel_values"])
    # a size and a question length outside the check set
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    image = torch.randint(0, 256, (300, 900, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    inputs = _model_inputs(pipeline, image, "Is there a remote control on the couch or on the table?")
    names = ["input_ids", "attention_mask", "pixel_values", "pixel_mask"]
    (logits,) = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
    with torch.no_grad():
        assert max_abs(torch.from_numpy(logits), pipeline.model(*inputs)) <= PARITY_ATOL


@pytest.mark.slow  # about 30 s: torch.export and XNNPACK lowering
def test_export_executorch_takes_several_image_sizes(pipeline, hf_folder, check_folder, tmp_path, capsys, pte_runner):
    pytest.importorskip("executorch", reason='the executorch export needs it: pip install "mobilevt[executorch]"')
    from conftest import assert_cpp_executorch_agrees

    output = tmp_path / "vqa.pte"
    report = _export(hf_folder, check_folder, output, "executorch", capsys)
    # the three check photos have different sizes: the program took all of them
    assert report["details"]["dynamic_size"] is True
    assert report["max_abs_diff"] <= PARITY_ATOL and report["top1_agreement"] == 1.0
    assert (tmp_path / "vqa.vocab.txt").is_file() and (tmp_path / "vqa.answers.txt").is_file()
    # every layer runs in the XNNPACK delegate: no projection, attention mask or norm operator is
    # left to the portable kernels (a run-time weight slice and SDPA's boolean mask were: 4x slower)
    outside = " ".join(note for note in report["notes"] if "portable kernels" in note)
    for op in ("addmm", "where", "any.dim", "logical_not", "native_layer_norm"):
        assert op not in outside, outside
    # the ExecuTorch C++ runtime that apps link: token ids, mask and pixels in, Python's logits out
    image = load_image(_photos(1)[0]).permute(1, 2, 0).contiguous()
    inputs = _model_inputs(pipeline, image, QUESTIONS[2], pad_text=True)  # the program takes padded ids
    assert_cpp_executorch_agrees(pte_runner, output, list(inputs), tmp_path)


def test_export_refuses_formats_and_options_that_do_not_apply(hf_folder, tmp_path, capsys):
    assert (
        main(
            [
                "export",
                "vilt_b32_vqa",
                "--weights",
                str(hf_folder),
                "--format",
                "tflite",
                "-o",
                str(tmp_path / "x.tflite"),
            ]
        )
        == 1
    )
    assert "ViLT VQA pipelines export to torchscript, onnx, executorch, not 'tflite'" in capsys.readouterr().err
    model = mobilevt.create_model("vilt_b32_vqa", weights=str(hf_folder))
    from mobilevt.export import ExportError, export_model

    with pytest.raises(ExportError, match="needs its question tokenizer"):
        export_model(model, tmp_path / "x.pt", "torchscript")


def test_int8_onnx_export_quantizes_the_linears_and_refuses_the_rest(hf_folder, check_folder, tmp_path, capsys, caplog):
    """--quantize int8 (ViLT: dynamic int8 linears in ONNX): smaller than the fp32 file, its
    linears int8, checked against eager on the check photos with their questions, and its speed
    against fp32 measured."""
    pytest.importorskip("onnxruntime", reason='the onnx export needs it: pip install "mobilevt[onnx]"')
    output = tmp_path / "vqa_int8.onnx"
    args = ["export", "vilt_b32_vqa", "--weights", str(hf_folder), "--format", "onnx", "-o", str(output)]
    assert main([*args, "--check-images", str(check_folder), "--quantize", "int8"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    # the quantizer's advice to run its pre-pass (a root-logger warning) is not for the user
    assert not [r for r in caplog.records if "pre-processing before quantization" in r.getMessage()]
    report = json.loads((tmp_path / "vqa_int8.onnx.report.json").read_text())
    quantization = report["details"]["quantization"]
    # this small model's weights are mostly embeddings, which stay fp32 (ViLT-B/32's are mostly linears)
    assert quantization["size_ratio"] > 1.0 and quantization["int8_latency_ms"] > 0
    import onnx

    op_types = {node.op_type for node in onnx.load(str(output)).graph.node}
    assert "DynamicQuantizeLinear" in op_types and op_types & {"MatMulInteger", "DynamicQuantizeMatMul"}, op_types
    assert "Conv" not in op_types  # the patch embedding is quantized too, as a matrix product
    # random weights leave near-ties between answers, which int8's error flips: the agreement is
    # reported (the accuracy cost belongs to a trained model), the error bounded
    assert 0.0 <= report["top1_agreement"] <= 1.0 and 0 < report["max_abs_diff"] < 0.5, report
    assert "int8 vs fp32 on onnxruntime" in out and sorted(p.name for p in tmp_path.iterdir()) == [
        "vqa_int8.answers.txt",
        "vqa_int8.onnx",
        "vqa_int8.onnx.report.json",
        "vqa_int8.preprocessor_config.json",
        "vqa_int8.tokenizer.json",
        "vqa_int8.tokenizer.pt",
        "vqa_int8.tokenizer_config.json",
        "vqa_int8.vocab.txt",
    ]
    # a calibration folder is refused in one line, before any work (ViLT's int8 is dynamic)
    assert main([*args, "--quantize", "int8", "--calibration", str(check_folder)]) == 1
    assert "takes no --calibration" in capsys.readouterr().err


@pytest.mark.slow  # about 40 s: torch.export, PT2E and two XNNPACK lowerings (int8 and the fp32 to compare)
def test_int8_executorch_export_runs_xnnpack_dynamic_int8_linears(
    pipeline, hf_folder, check_folder, tmp_path, capsys, pte_runner
):
    """--format executorch --quantize int8: the linears quantized dynamically (XNNPACK's QD8
    GEMMs), every layer in the delegate, dynamic image size kept, checked against eager on the
    check photos, its size and speed against the fp32 program measured, and the ExecuTorch C++
    runtime that apps link gives Python's logits."""
    pytest.importorskip("executorch", reason='the executorch export needs it: pip install "mobilevt[executorch]"')
    from conftest import assert_cpp_executorch_agrees

    output = tmp_path / "vqa_int8.pte"
    args = ["export", "vilt_b32_vqa", "--weights", str(hf_folder), "--format", "executorch", "-o", str(output)]
    assert main([*args, "--check-images", str(check_folder), "--quantize", "int8"]) == 0, capsys.readouterr().err
    assert "int8 vs fp32 on" in capsys.readouterr().out
    report = json.loads((tmp_path / "vqa_int8.pte.report.json").read_text())
    quantization = report["details"]["quantization"]
    assert "XNNPACK" in quantization["method"] and quantization["int8_latency_ms"] > 0
    assert quantization["size_ratio"] > 1.0  # this small model's weights are mostly embeddings, which stay fp32
    assert report["details"]["dynamic_size"] is True  # the three check photos have different sizes
    assert any(note.startswith("int8: PT2E dynamic quantization") for note in report["notes"]), report["notes"]
    # every linear and its activation's quantization run in the delegate (the portable
    # kernels keep only the embeddings' shape arithmetic, as in the fp32 program)
    outside = " ".join(note for note in report["notes"] if "portable kernels" in note)
    for op in ("addmm", "linear", "quantize", "choose_qparams", "where", "native_layer_norm"):
        assert op not in outside, outside
    # quantized: not eager's logits, but near them (random weights leave near-ties, so the
    # agreement is reported; the accuracy cost belongs to a trained model, docs/mobivqa.md)
    assert 1e-4 < report["max_abs_diff"] < 0.5, report
    image = load_image(_photos(1)[0]).permute(1, 2, 0).contiguous()
    inputs = _model_inputs(pipeline, image, QUESTIONS[2], pad_text=True)
    assert_cpp_executorch_agrees(pte_runner, output, list(inputs), tmp_path)

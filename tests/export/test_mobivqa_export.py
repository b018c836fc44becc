"""Export of ViLT with the MobiVQA settings switched on: ONNX and ExecuTorch files run in
their runtimes equal the eager model in the same setting, and differ from the full
model's answers (so a setting silently dropped at export fails); the data-dependent
exits export to ONNX with ``If`` nodes and are refused by ExecuTorch; the ``mobilevt
export`` / ``mobilevt vqa`` flags switch the settings.

Tolerance: 1e-4 max-abs logit difference (PARITY_ATOL: onnxruntime / XNNPACK kernels sum
in another order than eager); the full model differs from each setting by more than
100x that. Tiny random ViLT (hidden 64, 4 layers, exits after layers 1, 2, 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import PARITY_ATOL, assert_cpp_executorch_agrees, max_abs

import mobilevt
from mobilevt.cli.main import main
from mobilevt.export import ExportError
from mobilevt.export.vilt import export_vilt_executorch, export_vilt_onnx
from mobilevt.models.mobivqa import later_choices_probability

pytest.importorskip("onnxruntime", reason='the onnx export needs it: pip install "mobilevt[onnx]"')

ARCH = dict(hidden_size=64, num_layers=4, num_heads=4, mlp_dim=128, image_size=128, patch_size=16, vocab_size=300)
ANSWERS = ["yes", "no", "two", "red", "cat", "dog", "left"]
WORDS = ["what", "is", "the", "color", "of", "cat", "how", "many", "dogs", "are", "there", "?", "left", "red"]


def _tiny_vilt(seed: int = 0):
    model = mobilevt.create_model("vilt_b32_vqa", num_classes=len(ANSWERS), answers=ANSWERS, **ARCH)
    model.add_early_exits([1, 2, 3], predictor_layer=1, predictor_hidden=32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every parameter random, norm scales around 1 (biases are zeros by default)
        for name, param in model.named_parameters():
            is_norm_scale = param.dim() == 1 and name.endswith("weight") and "norm" in name
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + (1.0 if is_norm_scale else 0.0))
    return model.eval()


def _inputs(sizes, lengths, seed):
    """A padded batch: images zero-padded to the largest (pixel_mask), questions with [PAD]."""
    generator = torch.Generator().manual_seed(seed)
    batch, height, width = len(sizes), max(h for h, _ in sizes), max(w for _, w in sizes)
    pixel_values = torch.zeros(batch, 3, height, width)
    pixel_mask = torch.zeros(batch, height, width, dtype=torch.long)
    input_ids = torch.zeros(batch, max(lengths), dtype=torch.long)
    attention_mask = torch.zeros(batch, max(lengths), dtype=torch.long)
    for i, ((h, w), n) in enumerate(zip(sizes, lengths)):
        pixel_values[i, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        pixel_mask[i, :h, :w] = 1
        input_ids[i, :n] = torch.randint(5, 300, (n,), generator=generator)
        attention_mask[i, :n] = 1
    return input_ids, attention_mask, pixel_values, pixel_mask


# the export example, then a batch of two of other sizes (padding, shorter questions), then single images
CHECKS = [
    _inputs([(128, 128)], [11], seed=0),
    _inputs([(96, 192), (160, 64)], [7, 11], seed=1),
    *[_inputs([(128, 96)], [9], seed=s) for s in range(2, 8)],
]


def _configure(model, pruning, exit_kwargs):
    model.set_token_pruning(*pruning)
    model.set_early_exit(**exit_kwargs)
    return model


def _check_against_eager(model, run, checks, full):
    """The exported file equals eager in the setting; the setting changes the answers."""
    with torch.no_grad():
        for inputs, _full_logits in zip(checks, full):
            expected = model(*inputs)
            assert max_abs(run(inputs), expected) <= PARITY_ATOL
        assert max(max_abs(model(*inputs), f) for inputs, f in zip(checks, full)) > 100 * PARITY_ATOL


@pytest.fixture(scope="module")
def full_logits():
    with torch.no_grad():
        return [_tiny_vilt()(*inputs) for inputs in CHECKS]


@pytest.mark.parametrize(
    "pruning, exit_kwargs",
    [((1, 0.5), {}), ((0, 1.0), {"layer": 2}), ((2, 0.3), {"layer": 3})],
    ids=["prune-half-after-1", "exit-at-2", "prune-0.3-after-2-exit-at-3"],
)
def test_onnx_of_pruning_and_fixed_exit_equals_eager_at_other_sizes(pruning, exit_kwargs, full_logits, tmp_path):
    model = _configure(_tiny_vilt(), pruning, exit_kwargs)
    run, _ = export_vilt_onnx(model, tmp_path / "vilt.onnx", CHECKS[0])
    _check_against_eager(model, run, CHECKS, full_logits)


def _threshold_between_scores(scores: torch.Tensor, margin: float = 1e-3) -> float:
    """A confidence threshold halfway between the first-exit scores of the two questions of
    the padded batch (CHECKS[1], scores 1 and 2), so that within one batch one question
    stops at the first exit and the other goes on: the exported ``If`` graph must decide per
    question as eager does. No score lies within ``margin`` of it: a threshold on a score
    itself (such as the median of an odd count) lets a 1e-7 difference between runtimes
    flip that question's ``>=``."""
    threshold = float(scores[1] + scores[2]) / 2
    assert float((scores - threshold).abs().min()) > margin, (threshold, scores.tolist())
    return threshold


def _exit_layers(model) -> set[int]:
    with torch.no_grad():
        return {layer for inputs in CHECKS for layer in model.forward_with_exit(*inputs)[1].tolist()}


@pytest.mark.slow  # about 25 s each: the dynamo exporter traces every torch.cond branch
@pytest.mark.parametrize("mode", ["confidence", "predictor"])
def test_onnx_of_data_dependent_exits_uses_if_and_equals_eager(mode, full_logits, tmp_path):
    onnx = pytest.importorskip("onnx")
    model = _tiny_vilt()
    if mode == "confidence":
        with torch.no_grad():
            hidden = [model.encoder.forward_layers(*model.embed(*inputs), 0, 1) for inputs in CHECKS]
            scores = torch.cat([model.exit_heads[0](h).softmax(-1).amax(-1) for h in hidden])
        _configure(model, (1, 0.5), {"threshold": _threshold_between_scores(scores)})
    else:
        with torch.no_grad():  # centre the random predictor's choice logits, so that its pick varies with the input
            predictor = model.exit_predictor[0]
            hidden = [(model.encoder.forward_layers(*model.embed(*inputs), 0, 1), inputs) for inputs in CHECKS]
            choices = torch.cat([predictor(h, model.embed(*inputs)[1], inputs[0].shape[1]) for h, inputs in hidden])
            predictor.fc2.bias.sub_(choices.mean(dim=0))
            # a risk between the checks' chances that a deeper exit is needed, so that some
            # exit at the first exit and some go on
            later = later_choices_probability((choices - choices.mean(dim=0)).softmax(dim=1))[:, 0]
        model.predictor_risk = _threshold_between_scores(later)
        _configure(model, (0, 1.0), {"predictor": True})
    layers = _exit_layers(model)
    assert len(layers) >= 2, f"the checks exit at {layers} only: both If branches must be exercised"
    run, _ = export_vilt_onnx(model, tmp_path / "vilt.onnx", CHECKS[0])
    graph = onnx.load(str(tmp_path / "vilt.onnx")).graph
    assert sum(node.op_type == "If" for node in graph.node) == 1  # nested: one If per exit, the first at the top
    # the dynamo exporter's debugging records (Python stack traces with this machine's paths,
    # most of a small model's file) are not shipped
    shipped = (tmp_path / "vilt.onnx").read_bytes()
    assert b"stack_trace" not in shipped and str(Path(mobilevt.__file__).parent).encode() not in shipped
    _check_against_eager(model, run, CHECKS, full_logits)


def test_executorch_refuses_data_dependent_exits_naming_the_mode_and_the_alternatives(tmp_path):
    model = _tiny_vilt()
    for kwargs, mode in (({"threshold": 0.5}, "confidence-threshold"), ({"predictor": True}, "exit-predictor")):
        model.set_early_exit(**kwargs)
        with pytest.raises(ExportError, match=f"the {mode} early exit") as err:
            export_vilt_executorch(model, tmp_path / "vilt.pte", [CHECKS[0]])
        assert "--format torchscript" in str(err.value) and "--exit-layer" in str(err.value)
    assert not (tmp_path / "vilt.pte").exists()


@pytest.mark.slow  # about 30 s: torch.export and XNNPACK lowering
def test_executorch_of_pruning_with_fixed_exit_equals_eager_at_two_sizes(full_logits, tmp_path, pte_runner):
    pytest.importorskip("executorch", reason='the executorch export needs it: pip install "mobilevt[executorch]"')
    model = _configure(_tiny_vilt(), (1, 0.5), {"layer": 3})
    # ExecuTorch takes batch 1 and questions padded to one length: the single-image checks
    checks = [CHECKS[0]] + [_inputs([(96, 192)], [11], seed=8)]
    full = [full_logits[0], _tiny_vilt()(*checks[1]).detach()]
    notes: list[str] = []
    run, _, dynamic = export_vilt_executorch(model, tmp_path / "vilt.pte", checks, notes)
    assert dynamic, notes
    _check_against_eager(model, run, checks, full)
    # the ExecuTorch C++ runtime that apps link gives Python's runtime's logits
    assert_cpp_executorch_agrees(pte_runner, tmp_path / "vilt.pte", list(checks[1]), tmp_path)


# ---------------------------------------------------------------------------------------
# mobilevt export / mobilevt vqa flags


@pytest.fixture(scope="module")
def weights_folder(tmp_path_factory):
    """A trained-like tiny ViLT saved by mobilevt.save_weights (exit heads included), its
    vocabulary, and two check images of different sizes."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("mobivqa_weights")
    mobilevt.save_weights(_tiny_vilt(), folder / "model.safetensors")
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in special + WORDS), encoding="utf-8")
    images = folder / "images"
    images.mkdir()
    generator = torch.Generator().manual_seed(3)
    for index, (h, w) in enumerate([(200, 300), (260, 180)]):
        pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=generator)
        Image.fromarray(pixels.numpy()).save(images / f"{index}.png")
    return folder


def _export_args(folder, output, fmt, *flags):
    return [
        "export",
        "vilt_b32_vqa",
        "--weights",
        str(folder / "model.safetensors"),
        "--vocab",
        str(folder / "vocab.txt"),
        "--format",
        fmt,
        "-o",
        str(output),
        "--check-images",
        str(folder / "images"),
        *flags,
    ]


def test_export_command_exports_the_mobivqa_setting(weights_folder, tmp_path, capsys):
    output = tmp_path / "vqa.onnx"
    assert (
        main(
            _export_args(
                weights_folder, output, "onnx", "--prune-layer", "1", "--keep-ratio", "0.5", "--exit-layer", "2"
            )
        )
        == 0
    ), capsys.readouterr().err
    report = json.loads((tmp_path / "vqa.onnx.report.json").read_text())
    assert report["details"]["mobivqa"] == {
        "token_pruning": {"after_layer": 1, "keep_ratio": 0.5},
        "early_exit": {"mode": "fixed", "layer": 2},
    }
    assert report["max_abs_diff"] <= PARITY_ATOL and report["top1_agreement"] == 1.0
    # the file answers as the pruned, exiting model does, not as the full model
    pipeline = mobilevt.create_vqa_pipeline(
        weights=str(weights_folder / "model.safetensors"), vocab_file=weights_folder / "vocab.txt"
    )
    from mobilevt.export.vilt import _model_inputs, vilt_onnx_runner

    image = torch.randint(0, 256, (240, 320, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    inputs = _model_inputs(pipeline, image, "what is the color of the cat?", pad_text=False)
    with torch.no_grad():
        full = pipeline.model(*inputs)
        pipeline.model.set_token_pruning(1, 0.5)
        pipeline.model.set_early_exit(layer=2)
        expected = pipeline.model(*inputs)
    exported = vilt_onnx_runner(output)(inputs)
    assert max_abs(exported, expected) <= PARITY_ATOL and max_abs(exported, full) > 100 * PARITY_ATOL


def test_export_command_refusals_are_one_line(weights_folder, tmp_path, capsys):
    assert main(_export_args(weights_folder, tmp_path / "vqa.pte", "executorch", "--exit-threshold", "0.5")) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("error: ExecuTorch cannot export the confidence-threshold early exit") and err.count("\n") == 1
    )
    assert main(_export_args(weights_folder, tmp_path / "vqa.onnx", "onnx", "--exit-layer", "4")) == 1
    assert "fixed exit layer 4 has no exit head; exit layers are [1, 2, 3]" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                "mobilevit_xxs",
                "--weights",
                "none",
                "--format",
                "onnx",
                "-o",
                str(tmp_path / "x.onnx"),
                "--prune-layer",
                "2",
            ]
        )
        == 1
    )
    assert "apply to ViLT models" in capsys.readouterr().err


def test_torchscript_pipeline_keeps_the_setting_and_vqa_command_switches_it(weights_folder, tmp_path, capsys):
    output = tmp_path / "vqa.pt"
    assert (
        main(_export_args(weights_folder, output, "torchscript", "--exit-threshold", "0.3", "--exit-score", "sigmoid"))
        == 0
    ), capsys.readouterr().err
    capsys.readouterr()
    loaded = torch.jit.load(str(output))
    assert (loaded.model.exit_mode, loaded.model.exit_threshold, loaded.model.exit_softmax) == (1, 0.3, False)
    image_path = weights_folder / "images" / "0.png"
    question = "how many dogs are there?"
    pipeline = mobilevt.create_vqa_pipeline(
        weights=str(weights_folder / "model.safetensors"), vocab_file=weights_folder / "vocab.txt"
    )
    image = mobilevt.load_image(image_path)

    def answers_printed(*args):
        assert main(["vqa", str(image_path), question, "--json", "--topk", "7", *args]) == 0, capsys.readouterr().err
        return [(row["answer"], row["score"]) for row in json.loads(capsys.readouterr().out)["answers"]]

    def scores(answers):
        return torch.tensor([score for _, score in sorted(answers)])

    with torch.no_grad():
        full = pipeline(image, question, 7)
        pipeline.model.set_token_pruning(2, 0.25)
        pipeline.model.set_early_exit(layer=3)
        expected = pipeline(image, question, 7)
    assert max_abs(scores(expected), scores(full)) > 100 * PARITY_ATOL  # the setting changes the scores
    weights = ["--weights", str(weights_folder / "model.safetensors"), "--vocab", str(weights_folder / "vocab.txt")]
    switches = ["--prune-layer", "2", "--keep-ratio", "0.25", "--exit-layer", "3"]
    assert max_abs(scores(answers_printed(*weights, *switches)), scores(expected)) <= 1e-5
    assert max_abs(scores(answers_printed("--pipeline", str(output), *switches)), scores(expected)) <= 1e-5
    # a bad setting on the TorchScript pipeline: one line naming what is wrong
    assert main(["vqa", str(image_path), question, "--pipeline", str(output), "--exit-layer", "4"]) == 1
    err = capsys.readouterr().err
    assert "fixed exit layer 4 has no exit head" in err and err.count("\n") == 1

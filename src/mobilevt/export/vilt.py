"""Export of the ViLT VQA pipeline (``mobilevt export vilt_b32_vqa``).

* ``torchscript``: the whole :class:`~mobilevt.tasks.vqa.VqaPipeline` in one file: a uint8
  ``[H, W, 3]`` image and a question string in, top-k ``(answer, score)`` out
  (``answer_logits(image, question)`` gives the logits).
* ``onnx`` / ``executorch``: the model alone, ``(input_ids, attention_mask, pixel_values,
  pixel_mask) -> logits``, with dynamic image height and width (multiples of 32) and
  question length (ONNX; ExecuTorch takes questions padded to ``max_text_len``). Written
  beside it: ``<name>.vocab.txt`` (the BERT vocabulary, for a WordPiece tokenizer in the
  app; :class:`mobilevt.data.tokenizer.WordPieceTokenizer` is the reference
  implementation, and ``<name>.tokenizer.pt`` is that tokenizer as TorchScript) and
  ``<name>.answers.txt`` (the answer of each logit, one per line).

Each export is run in its runtime on real photos with questions and compared with the
eager model (max-abs logit difference, top-1 / top-5 agreement), timed against eager, and
described in ``<file>.report.json``, as :func:`mobilevt.export.export_model` does.

MobiVQA settings (``model.set_token_pruning``, ``model.set_early_exit``) are exported as
they are set on the model:

- TorchScript runs every mode, switchable in the app through the scripted
  ``set_token_pruning`` / ``set_early_exit`` methods;
- token pruning and the fixed exit have a control flow fixed by the settings: ONNX
  (TorchScript-based exporter, dynamic sizes: the kept-patch count follows the image
  size) and ExecuTorch export them as plain graphs;
- the confidence-threshold and exit-predictor exits decide from the data whether to run
  the next layers: ONNX exports them with ``torch.cond`` (the dynamo exporter, opset 18,
  ONNX ``If`` nodes that skip the later layers as eager does). ExecuTorch refuses them:
  its XNNPACK delegate does not lower the layers inside ``torch.cond`` branches, which
  would run on slow portable kernels.

:func:`export_vilt_onnx` and :func:`export_vilt_executorch` write the model alone and
return a runner of the written file (the benchmark uses them too).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch

from ..fileio import atomic_path, write_text_atomic
from .errors import ExportError
from ..models.mobivqa import ExitMode
from . import backends
from .report import ExportReport, check_inputs, file_size, median_ms, topk_agreement, write_report

VQA_FORMATS = ("torchscript", "onnx", "executorch")
CHECK_QUESTIONS = (
    "What is in the picture?",
    "How many animals are there?",
    "What color is it?",
    "Is this photo taken outdoors?",
    "What is the main object doing?",
)
_MAX_PATCH_GRID = 40  # dynamic image sides up to 40 * 32 = 1280 pixels


def export_vqa_pipeline(
    pipeline,
    output: str,
    format: str,
    *,
    check_images: Optional[str] = None,
    max_check_images: int = 8,
    questions: Sequence[str] = CHECK_QUESTIONS,
    latency_runs: int = 10,
    opset: int = 17,
    progress: Callable[[str], None] = lambda stage: None,
) -> ExportReport:
    """Export a :class:`~mobilevt.tasks.vqa.VqaPipeline` (see the module docstring) and
    verify the written file on photos from ``check_images`` (default: the two sample photos
    shipped in scikit-learn), each asked one of ``questions``; ``progress`` is told each
    stage as it starts."""
    if format not in VQA_FORMATS:
        raise ExportError(f"ViLT VQA exports to {', '.join(VQA_FORMATS)}, not {format!r}")
    if not questions:
        raise ExportError("export_vqa_pipeline needs at least one check question")
    if format == "executorch":
        _refuse_data_dependent_exit(pipeline.model)
    progress("reading the check photos and running the eager pipeline on them")
    output = Path(output)
    pipeline = copy.deepcopy(pipeline).eval()
    photos, source = check_inputs(check_images, max_check_images)
    images = [photo.permute(1, 2, 0).contiguous() for photo in photos]  # uint8 [H, W, 3], as apps pass them
    pairs = [(image, questions[i % len(questions)]) for i, image in enumerate(images)]
    with torch.inference_mode():
        expected = torch.stack([pipeline.answer_logits(image, question) for image, question in pairs])
    notes: List[str] = []
    details: dict[str, Any] = {
        "threads": torch.get_num_threads(), "questions": list(questions),
        "scores": "sigmoid(logits): ViLT's VQA head is trained with binary cross-entropy",
        "mobivqa": mobivqa_settings(pipeline.model),
    }

    write = _write_pipeline_torchscript if format == "torchscript" else _write_model_file
    progress(f"writing the {format} file, then running it on the {len(pairs)} check photos and timing it"
             + (" (lowering to XNNPACK takes a minute or more)" if format == "executorch" else ""))
    written = write(pipeline, output, format, pairs, latency_runs, opset, notes, details)
    top1, top5 = topk_agreement(written.actual, expected)
    report = ExportReport(
        format=format, path=str(output), file_bytes=file_size(output), input_size=written.input_size,
        dynamic_batch=written.dynamic_batch, include_preprocessing=format == "torchscript", check_images=len(pairs),
        check_source=source, max_abs_diff=float((written.actual.float() - expected.float()).abs().max()),
        top1_agreement=top1, top5_agreement=top5, agreement_of="top-1 answer",
        eager_latency_ms=written.eager_ms, exported_latency_ms=written.exported_ms, runtime=written.runtime,
        notes=notes, details=details,
    )
    return write_report(report)


@dataclass
class _WrittenVqa:
    actual: torch.Tensor  # the file's answer logits for the check pairs
    runtime: str
    eager_ms: Optional[float]
    exported_ms: Optional[float]
    input_size: Tuple[int, int]
    dynamic_batch: bool


def _write_pipeline_torchscript(pipeline, output: Path, format: str, pairs, latency_runs: int, opset: int,
                                notes: List[str], details: dict) -> _WrittenVqa:
    pipeline.save_torchscript(output)
    loaded = torch.jit.load(str(output))
    with torch.inference_mode():
        actual = torch.stack([loaded.answer_logits(image, question) for image, question in pairs])
    image, question = pairs[0]
    notes.append("input: a uint8 [H, W, 3] RGB image of any size and the question string; output: top-k "
                 "(answer, score); answer_logits(image, question) gives all logits")
    return _WrittenVqa(actual, "TorchScript interpreter", median_ms(lambda: pipeline(image, question, 5), latency_runs),
                       median_ms(lambda: loaded(image, question, 5), latency_runs), tuple(image.shape[:2]), True)


def _write_model_file(pipeline, output: Path, format: str, pairs, latency_runs: int, opset: int,
                      notes: List[str], details: dict) -> _WrittenVqa:
    """The ViLT network alone (ONNX or ExecuTorch), its tokenizer and answers beside it."""
    model_inputs = [_model_inputs(pipeline, image, question, pad_text=format == "executorch")
                    for image, question in pairs]
    if format == "onnx":
        run, runtime = export_vilt_onnx(pipeline.model, output, model_inputs[0], opset, notes=notes)
        details["opset"] = max(opset, 18) if has_data_dependent_exit(pipeline.model) else opset
    else:
        run, runtime, dynamic_size = export_vilt_executorch(pipeline.model, output, model_inputs, notes)
        details["dynamic_size"] = dynamic_size
    actual = torch.cat([run(inputs) for inputs in model_inputs])
    details |= _write_side_files(pipeline, output)
    notes.append("inputs: input_ids, attention_mask [1, text] int64 (BERT WordPiece ids of [CLS] question "
                 "[SEP], see the vocab file), pixel_values [1, 3, H, W] float32 (ViLT preprocessing: shorter "
                 "side 384, longer <= 639, multiples of 32, bicubic, (x / 255 - 0.5) / 0.5), pixel_mask "
                 "[1, H, W] int64; output: logits [1, answers], score = sigmoid(logit)")
    return _WrittenVqa(actual, runtime, median_ms(lambda: pipeline.model(*model_inputs[0]), latency_runs),
                       median_ms(lambda: run(model_inputs[0]), latency_runs), tuple(model_inputs[0][2].shape[-2:]),
                       format == "onnx")  # ExecuTorch specialises the example's batch of 1


def _model_inputs(pipeline, image: torch.Tensor, question: str, pad_text: bool) -> Tuple[torch.Tensor, ...]:
    """The model's four inputs for one (image, question), made by the pipeline's own
    (eager) tokenizer and preprocessing."""
    pixel_values, pixel_mask = pipeline.image_preprocess(image)
    input_ids, attention_mask = pipeline.tokenizer.encode_batch([question], pad_text)
    return input_ids, attention_mask, pixel_values, pixel_mask


def _write_side_files(pipeline, output: Path) -> dict[str, str]:
    """The vocabulary, the TorchScript tokenizer and the answer names beside ``output``."""
    stem = output.with_suffix("")
    vocab = stem.with_name(stem.name + ".vocab.txt")
    answers = stem.with_name(stem.name + ".answers.txt")
    tokenizer = stem.with_name(stem.name + ".tokenizer.pt")
    write_text_atomic(vocab, "".join(token + "\n" for token in pipeline.tokenizer.id_to_token))
    write_text_atomic(answers, "".join(answer.replace("\n", " ") + "\n" for answer in pipeline.answers))
    pipeline.tokenizer.save_torchscript(tokenizer)
    return {"vocab_file": str(vocab), "answers_file": str(answers), "tokenizer_torchscript": str(tokenizer),
            "tokenizer": f"BERT WordPiece, lowercase={pipeline.tokenizer.lowercase}, "
                         f"max_length={pipeline.tokenizer.max_length} ([CLS] ... [SEP], [PAD] = "
                         f"{pipeline.tokenizer.pad_token_id})"}


_INPUT_NAMES = ["input_ids", "attention_mask", "pixel_values", "pixel_mask"]


def has_data_dependent_exit(model) -> bool:
    """Whether ``model``'s early exit decides from the data (confidence threshold or exit
    predictor): those export with ``torch.cond`` only."""
    return int(getattr(model, "exit_mode", ExitMode.OFF)) in (ExitMode.CONFIDENCE, ExitMode.PREDICTOR)


def mobivqa_settings(model) -> dict[str, Any]:
    """The MobiVQA switches set on a ViLT model, for reports: token pruning (layer, keep
    ratio) and early exit (mode and its parameter), ``None`` where off."""
    pruning = None
    if int(getattr(model, "prune_layer", 0)) > 0:
        pruning = {"after_layer": int(model.prune_layer), "keep_ratio": float(model.prune_keep_ratio)}
    mode = ExitMode(int(getattr(model, "exit_mode", ExitMode.OFF)))
    exit_setting: Optional[dict[str, Any]] = None
    if mode == ExitMode.CONFIDENCE:
        exit_setting = {"mode": mode.label, "threshold": float(model.exit_threshold),
                        "score": "softmax" if model.exit_softmax else "sigmoid", "exit_layers": list(model.exit_layers)}
    elif mode == ExitMode.PREDICTOR:
        exit_setting = {"mode": mode.label, "predictor_layer": int(model.predictor_layer),
                        "exit_layers": list(model.exit_layers)}
    elif mode == ExitMode.FIXED:
        exit_setting = {"mode": mode.label, "layer": int(model.fixed_exit_layer)}
    return {"token_pruning": pruning, "early_exit": exit_setting}


def _image_dims(max_text_len: int, batch: bool):
    """torch.export dynamic shapes of the four inputs: image sides in multiples of 32 (the
    ViLT preprocessing's size divisor) up to 1280, and with ``batch`` the batch and
    question length too."""
    height = 32 * torch.export.Dim("patch_rows", min=1, max=_MAX_PATCH_GRID)
    width = 32 * torch.export.Dim("patch_cols", min=1, max=_MAX_PATCH_GRID)
    if not batch:
        return (None, None, {2: height, 3: width}, {1: height, 2: width})
    size = torch.export.Dim("batch", min=1, max=1024)
    text = torch.export.Dim("text", min=1, max=max_text_len)
    return ({0: size, 1: text}, {0: size, 1: text}, {0: size, 2: height, 3: width}, {0: size, 1: height, 2: width})


def vilt_onnx_runner(path: str | Path, threads: int = 0) -> Callable[[Tuple[torch.Tensor, ...]], torch.Tensor]:
    """Run a ViLT ONNX file in onnxruntime (CPU) on ``(input_ids, attention_mask,
    pixel_values, pixel_mask)``; ``threads`` = intra-op threads (0: onnxruntime's default)."""
    run = backends.onnx_runner(path, threads)
    return lambda inputs: run(*inputs)[0]


def export_vilt_onnx(
    model, output: str | Path, example: Tuple[torch.Tensor, ...], opset: int = 17, threads: int = 0,
    notes: Optional[List[str]] = None,
) -> Tuple[Callable[[Tuple[torch.Tensor, ...]], torch.Tensor], str]:
    """Write a :class:`~mobilevt.models.vilt.ViltForQuestionAnswering` with its current
    MobiVQA settings to ONNX at ``output`` (dynamic batch, question length and image size),
    check it, and return a runner of the file in onnxruntime and the runtime's name.

    The static settings (none, token pruning, fixed exit) use the TorchScript-based
    exporter at ``opset`` (<= 17); the confidence and predictor exits use the dynamo
    exporter (``torch.cond`` -> ``If``) at opset ``max(opset, 18)``.
    """
    onnx = backends.require_onnx()
    output = Path(output)
    model = model.eval()
    if has_data_dependent_exit(model):
        opset = max(opset, 18)
        # a batch of two: torch.export would take a batch of one as a constant
        example = tuple(torch.cat([t, t]) for t in example)
        with atomic_path(output) as tmp:
            program = torch.onnx.export(
                model, example, dynamo=True, opset_version=opset, input_names=_INPUT_NAMES, output_names=["logits"],
                dynamic_shapes=_image_dims(model.arch.max_text_len, batch=True), verbose=False,
            )
            program.save(str(tmp))
            onnx.checker.check_model(onnx.load(str(tmp)))
        if notes is not None:
            notes.append(f"{ExitMode(int(model.exit_mode)).label} early exit exported with torch.cond: ONNX If "
                         f"nodes skip the layers after an exit (opset {opset})")
    else:
        if opset > 17:
            raise ExportError("the ViLT ONNX export uses opset 17 or lower (the TorchScript-based exporter)")
        axes = {
            "input_ids": {0: "batch", 1: "text"}, "attention_mask": {0: "batch", 1: "text"},
            "pixel_values": {0: "batch", 2: "height", 3: "width"}, "pixel_mask": {0: "batch", 1: "height", 2: "width"},
            "logits": {0: "batch"},
        }
        with atomic_path(output) as tmp:
            torch.onnx.export(model, example, str(tmp), dynamo=False, opset_version=opset, input_names=_INPUT_NAMES,
                              output_names=["logits"], dynamic_axes=axes)
            onnx.checker.check_model(onnx.load(str(tmp)))
    return vilt_onnx_runner(output, threads), backends.onnx_runtime_name()


def vilt_executorch_runner(path: str | Path) -> Callable[[Tuple[torch.Tensor, ...]], torch.Tensor]:
    """Run a ViLT ``.pte`` in the ExecuTorch runtime on ``(input_ids, attention_mask,
    pixel_values, pixel_mask)`` (questions padded as at export)."""
    run, _ = backends.executorch_runner(path)
    return lambda inputs: run(*inputs)[0]


def _refuse_data_dependent_exit(model) -> None:
    if has_data_dependent_exit(model):
        mode = ExitMode(int(model.exit_mode)).label
        raise ExportError(
            f"ExecuTorch cannot export the {mode} early exit: it decides from the data whether to run the next "
            "layers (torch.cond), and the XNNPACK delegate does not lower the layers inside torch.cond branches "
            "(they would run on slow portable kernels). Use --format torchscript (every mode) or onnx (torch.cond -> "
            "If), or a fixed exit (--exit-layer N) for ExecuTorch."
        )


def export_vilt_executorch(
    model, output: str | Path, examples: Sequence[Tuple[torch.Tensor, ...]], notes: Optional[List[str]] = None
) -> Tuple[Callable[[Tuple[torch.Tensor, ...]], torch.Tensor], str, bool]:
    """Write a :class:`~mobilevt.models.vilt.ViltForQuestionAnswering` with its current
    MobiVQA settings (token pruning and the fixed exit; not the data-dependent exits) to an
    ExecuTorch ``.pte`` lowered to XNNPACK, with dynamic image size when the runtime takes
    it (else the size of ``examples[0]``), after checking that it runs every example.

    Returns a runner of the written file, the runtime's name and whether the image size is
    dynamic."""
    _refuse_data_dependent_exit(model)
    backends.require_executorch()
    notes = [] if notes is None else notes
    output = Path(output)
    model = model.eval()
    example = examples[0]

    def lower(dynamic_shapes) -> Callable[[Tuple[torch.Tensor, ...]], torch.Tensor]:
        backends.write_xnnpack_program(torch.export.export(model, example, dynamic_shapes=dynamic_shapes), output)
        return vilt_executorch_runner(output)

    sizes = {tuple(inputs[2].shape[-2:]) for inputs in examples}
    try:
        run = lower(_image_dims(model.arch.max_text_len, batch=False))
        for inputs in examples:  # every image size of the check set must run
            run(inputs)
        notes.append(f"dynamic image size (multiples of 32 up to {32 * _MAX_PATCH_GRID}); questions padded to "
                     f"{example[0].shape[1]} tokens")
        return run, "ExecuTorch runtime (XNNPACK delegate)", True
    except Exception as exc:  # the runtime or the lowering refused the dynamic shapes
        if len(sizes) > 1:
            raise ExportError(
                f"the ExecuTorch export with dynamic image size failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}) and the check photos have several sizes"
            ) from exc
        notes.append("dynamic image size failed in ExecuTorch: exported for the check photos' size only")
        return lower(None), "ExecuTorch runtime (XNNPACK delegate)", False

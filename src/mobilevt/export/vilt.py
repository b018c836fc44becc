"""Export of the ViLT VQA pipeline (``mobilevt export vilt_b32_vqa``).

* ``torchscript``: the whole :class:`~mobilevt.tasks.vqa.VqaPipeline` in one file: a uint8
  ``[H, W, 3]`` image and a question string in, top-k ``(answer, score)`` out
  (``answer_logits(image, question)`` gives the logits).
* ``onnx`` / ``executorch``: the model alone, ``(input_ids, attention_mask, pixel_values,
  pixel_mask) -> logits``, with dynamic image height and width (multiples of 32) and
  question length (ONNX; ExecuTorch takes questions padded to ``max_text_len``). Written
  beside it: ``<name>.vocab.txt`` (the BERT vocabulary, for a WordPiece tokenizer in the
  app; :class:`mobilevt.data.tokenizer.WordPieceTokenizer` is the reference
  implementation, ``<name>.tokenizer.pt`` is that tokenizer as TorchScript, and
  ``<name>.tokenizer.json`` / ``<name>.tokenizer_config.json`` are it for Hugging Face's
  JavaScript tokenizers, which the web page ``examples/web/vqa.html`` loads),
  ``<name>.preprocessor_config.json`` (the image size rule and normalisation, in the keys of
  transformers' ``ViltImageProcessor``: the page resizes to it) and ``<name>.answers.txt``
  (the answer of each logit, one per line).

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
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.tokenizer import tokenizer_json
from ..fileio import write_text_atomic
from ..models.mobivqa import ExitMode
from ..tasks.vqa import VqaPipeline
from .errors import ExportError
from .family import ExportOptions, FamilyAdapter
from .formats import Dim, ExportFormat, Graph, WriteOptions, Written, get_format
from .image import compare_with_fp32
from .quantize import DYNAMIC_INT8
from .report import ExportReport, check_inputs, file_size, median_ms, topk_agreement, write_report
from .rewrite import additive_mask_attention, linear_patch_embeddings

MAX_CHECK_IMAGES = 8
CHECK_QUESTIONS = (
    "What is in the picture?",
    "How many animals are there?",
    "What color is it?",
    "Is this photo taken outdoors?",
    "What is the main object doing?",
)
_MAX_PATCH_GRID = 40  # dynamic image sides up to 40 * 32 = 1280 pixels


def export_vqa_pipeline(
    pipeline: nn.Module,
    output: Path,
    export_format: ExportFormat,
    options: ExportOptions,
    questions: Sequence[str] = CHECK_QUESTIONS,
) -> ExportReport:
    """Export a :class:`~mobilevt.tasks.vqa.VqaPipeline` (see the module docstring) and
    verify the written file on photos from ``check_images`` (default: the two sample photos
    shipped in scikit-learn), each asked one of ``questions``."""
    if not isinstance(pipeline, VqaPipeline):
        raise ExportError(
            "a ViLT model also needs its question tokenizer: export the pipeline, "
            "export_model(mobilevt.create_vqa_pipeline(weights=...), ...)"
        )
    if not questions:
        raise ExportError("export_vqa_pipeline needs at least one check question")
    _refuse_data_dependent_exit(pipeline.model, export_format)  # before any work
    _refuse_unsupported_int8(options, export_format)
    options.stage("reading the check photos and running the eager pipeline on them")
    pipeline = copy.deepcopy(pipeline).eval()
    photos, source = check_inputs(options.check_images, options.max_check_images or MAX_CHECK_IMAGES)
    images = [photo.permute(1, 2, 0).contiguous() for photo in photos]  # uint8 [H, W, 3], as apps pass them
    pairs = [(image, questions[i % len(questions)]) for i, image in enumerate(images)]
    with torch.inference_mode():
        expected = torch.stack([pipeline.answer_logits(image, question) for image, question in pairs])
    notes: list[str] = []
    details: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "questions": list(questions),
        # how an app scores the logits (the web page reads it)
        "answer_scores": "softmax" if pipeline.answer_softmax else "sigmoid",
        "scores": "softmax(logits): the model was trained with cross-entropy over its answers"
        if pipeline.answer_softmax
        else "sigmoid(logits): ViLT's VQA head is trained with binary cross-entropy",
        "mobivqa": mobivqa_settings(pipeline.model),
    }
    options.stage(
        f"writing the {export_format.name} file, then running it on the {len(pairs)} check photos and "
        "timing it" + (" (lowering to XNNPACK takes a minute or more)" if "max_batch" in export_format.options else "")
    )
    whole = export_format.keeps_scripted_methods
    write = _write_pipeline if whole else _write_model_file
    actual, eager_ms, exported_ms, input_size, dynamic, runtime = write(
        pipeline, output, export_format, pairs, options, notes, details
    )
    top1, top5 = topk_agreement(actual, expected)
    report = ExportReport(
        format=export_format.name,
        path=str(output),
        file_bytes=file_size(output),
        input_size=input_size,
        dynamic_batch=dynamic,
        include_preprocessing=whole,
        check_images=len(pairs),
        check_source=source,
        max_abs_diff=float((actual.float() - expected.float()).abs().max()),
        top1_agreement=top1,
        top5_agreement=top5,
        agreement_of="top-1 answer",
        eager_latency_ms=eager_ms,
        exported_latency_ms=exported_ms,
        runtime=runtime,
        notes=notes,
        details=details,
    )
    return write_report(report)


def _write_pipeline(
    pipeline, output: Path, export_format: ExportFormat, pairs, options: ExportOptions, notes: list[str], details: dict
):
    """The whole pipeline (string and photo in, answers out) in one scripted file."""
    written = export_format.write(Graph(pipeline, (), (), ()), output, WriteOptions())
    loaded = torch.jit.load(str(output))
    with torch.inference_mode():
        actual = torch.stack([loaded.answer_logits(image, question) for image, question in pairs])
    image, question = pairs[0]
    notes.extend(written.notes)
    notes.append(
        "input: a uint8 [H, W, 3] RGB image of any size and the question string; output: top-k "
        "(answer, score); answer_logits(image, question) gives all logits"
    )
    runs = options.latency_runs
    return (
        actual,
        median_ms(lambda: pipeline(image, question, 5), runs),
        median_ms(lambda: loaded(image, question, 5), runs),
        tuple(image.shape[:2]),
        True,
        written.runtime,
    )


def _write_model_file(
    pipeline, output: Path, export_format: ExportFormat, pairs, options: ExportOptions, notes: list[str], details: dict
):
    """The ViLT network alone (ONNX or ExecuTorch), its tokenizer and answers beside it."""
    pad_text = export_format.plans_fixed_shapes  # questions padded to max_text_len
    model_inputs = [_model_inputs(pipeline, image, question, pad_text) for image, question in pairs]
    quantize = DYNAMIC_INT8 if options.quantize else None
    if export_format.plans_fixed_shapes:
        written, dynamic_size = _write_executorch(
            pipeline.model, output, model_inputs, notes, export_format.name, options.stage, quantize
        )
        details["dynamic_size"] = dynamic_size
        dynamic = False  # ExecuTorch specialises the example's batch of 1
    else:
        written = _write_onnx(pipeline.model, output, model_inputs[0], options.opset, notes, quantize, options.stage)
        details["opset"] = max(options.opset, 18) if has_data_dependent_exit(pipeline.model) else options.opset
        dynamic = True
    if quantize is not None:
        options.stage("timing the int8 file against the fp32 one")
        details["quantization"] = {"method": _INT8_METHODS[export_format.name]} | compare_with_fp32(
            written, model_inputs[0], options.latency_runs
        )
    runtime = written.runtime

    def run(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return written.run(*inputs)[0]

    actual = torch.cat([run(inputs) for inputs in model_inputs])
    details |= _write_side_files(pipeline, output)
    rule = pipeline.image_preprocess.size_rule()
    notes.append(
        "inputs: input_ids, attention_mask [1, text] int64 (BERT WordPiece ids of [CLS] question "
        f"[SEP], see the vocab file), pixel_values [1, 3, H, W] float32 (ViLT preprocessing: shorter "
        f"side {rule.shorter_side}, longer <= {rule.longer_side_max}, multiples of {rule.size_divisor}, "
        f"bicubic, (x / 255 - mean) / std with mean {list(rule.mean)}, std {list(rule.std)}: see the "
        "preprocessor_config.json), pixel_mask [1, H, W] int64; output: logits [1, answers], scores = "
        + ("softmax(logits)" if pipeline.answer_softmax else "sigmoid(logit)")
    )
    runs = options.latency_runs
    return (
        actual,
        median_ms(lambda: pipeline.model(*model_inputs[0]), runs),
        median_ms(lambda: run(model_inputs[0]), runs),
        tuple(model_inputs[0][2].shape[-2:]),
        dynamic,
        runtime,
    )


_INT8_METHODS = {
    "onnx": "dynamic int8 (onnxruntime quantize_dynamic): per-channel int8 weights of the linears, "
    "activations quantized per call",
    "executorch": "dynamic int8 (PT2E, XNNPACK quantizer): per-channel int8 weights of the linears, "
    "activations quantized per call (XNNPACK's QD8 GEMMs)",
}


def _refuse_unsupported_int8(options: ExportOptions, export_format: ExportFormat) -> None:
    if options.quantize is None:
        return
    if options.quantize != "int8":
        raise ExportError(f"unknown quantization {options.quantize!r}; ViLT takes int8")
    if options.calibration is not None or "max_calibration_images" in options.changed():
        raise ExportError(
            "ViLT's int8 is dynamic (each activation quantized from its own range): it takes no --calibration"
        )


def _model_inputs(pipeline, image: torch.Tensor, question: str, pad_text: bool) -> tuple[torch.Tensor, ...]:
    """The model's four inputs for one (image, question), made by the pipeline's own
    (eager) tokenizer and preprocessing."""
    pixel_values, pixel_mask = pipeline.image_preprocess(image)
    input_ids, attention_mask = pipeline.tokenizer.encode_batch([question], pad_text)
    return input_ids, attention_mask, pixel_values, pixel_mask


def _write_side_files(pipeline, output: Path) -> dict[str, str]:
    """The vocabulary, the tokenizer (TorchScript, and Hugging Face's ``tokenizer.json`` for
    JavaScript) and the answer names beside ``output``."""
    stem = output.with_suffix("")
    vocab = stem.with_name(stem.name + ".vocab.txt")
    answers = stem.with_name(stem.name + ".answers.txt")
    tokenizer = stem.with_name(stem.name + ".tokenizer.pt")
    hf_tokenizer = stem.with_name(stem.name + ".tokenizer.json")
    hf_config = stem.with_name(stem.name + ".tokenizer_config.json")
    image_config = stem.with_name(stem.name + ".preprocessor_config.json")
    write_text_atomic(vocab, "".join(token + "\n" for token in pipeline.tokenizer.id_to_token))
    document, config = tokenizer_json(pipeline.tokenizer)
    write_text_atomic(hf_tokenizer, json.dumps(document, ensure_ascii=False) + "\n")
    write_text_atomic(hf_config, json.dumps(config, indent=2) + "\n")
    image_rule = pipeline.image_preprocess.size_rule().preprocessor_config()
    write_text_atomic(image_config, json.dumps(image_rule, indent=2) + "\n")
    write_text_atomic(answers, "".join(answer.replace("\n", " ") + "\n" for answer in pipeline.answers))
    pipeline.tokenizer.save_torchscript(tokenizer)
    return {
        "vocab_file": str(vocab),
        "answers_file": str(answers),
        "tokenizer_torchscript": str(tokenizer),
        "tokenizer_json": str(hf_tokenizer),  # for @huggingface/tokenizers in web pages
        "tokenizer_config": str(hf_config),
        "preprocessor_config": str(image_config),  # the image size rule, for pages that resize themselves
        "tokenizer": f"BERT WordPiece, lowercase={pipeline.tokenizer.lowercase}, "
        f"max_length={pipeline.tokenizer.max_length} ([CLS] ... [SEP], [PAD] = "
        f"{pipeline.tokenizer.pad_token_id})",
    }


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
    exit_setting: dict[str, Any] | None = None
    if mode == ExitMode.CONFIDENCE:
        exit_setting = {
            "mode": mode.label,
            "threshold": float(model.exit_threshold),
            "score": "softmax" if model.exit_softmax else "sigmoid",
            "exit_layers": list(model.exit_layers),
        }
    elif mode == ExitMode.PREDICTOR:
        exit_setting = {
            "mode": mode.label,
            "predictor_layer": int(model.predictor_layer),
            "risk": float(model.predictor_risk),
            "exit_layers": list(model.exit_layers),
        }
    elif mode == ExitMode.FIXED:
        exit_setting = {"mode": mode.label, "layer": int(model.fixed_exit_layer)}
    return {"token_pruning": pruning, "early_exit": exit_setting}


def _graph(model, example: tuple[torch.Tensor, ...], batch: bool) -> Graph:
    """The ViLT network with its four inputs: image sides in multiples of 32 (the ViLT
    preprocessing's size divisor) up to 1280, and with ``batch`` the batch and question
    length too."""
    height = Dim("height", min=32, max=32 * _MAX_PATCH_GRID, multiple_of=32)
    width = Dim("width", min=32, max=32 * _MAX_PATCH_GRID, multiple_of=32)
    if not batch:
        dynamic: tuple[dict[int, Dim], ...] = ({}, {}, {2: height, 3: width}, {1: height, 2: width})
        return Graph(model, example, tuple(_INPUT_NAMES), ("logits",), dynamic)
    size, text = Dim("batch", min=1, max=1024), Dim("text", min=1, max=model.arch.max_text_len)
    dynamic = ({0: size, 1: text}, {0: size, 1: text}, {0: size, 2: height, 3: width}, {0: size, 1: height, 2: width})
    return Graph(model, example, tuple(_INPUT_NAMES), ("logits",), dynamic, ({0: size},))


def vilt_onnx_runner(path: str | Path, threads: int = 0) -> Callable[[tuple[torch.Tensor, ...]], torch.Tensor]:
    """Run a ViLT ONNX file in onnxruntime (CPU) on ``(input_ids, attention_mask,
    pixel_values, pixel_mask)``; ``threads`` = intra-op threads (0: as many as torch uses)."""
    run = get_format("onnx").runner(Path(path), threads)
    return lambda inputs: run(*inputs)[0]


def export_vilt_onnx(
    model,
    output: str | Path,
    example: tuple[torch.Tensor, ...],
    opset: int = 17,
    threads: int = 0,
    notes: list[str] | None = None,
    int8: bool = False,
) -> tuple[Callable[[tuple[torch.Tensor, ...]], torch.Tensor], str]:
    """Write a :class:`~mobilevt.models.vilt.ViltForQuestionAnswering` with its current
    MobiVQA settings to ONNX at ``output`` (dynamic batch, question length and image size),
    check it, and return a runner of the file in onnxruntime and the runtime's name. With
    ``int8``, its matrix products are quantized dynamically (onnxruntime ``quantize_dynamic``).

    The static settings (none, token pruning, fixed exit) use the TorchScript-based
    exporter at ``opset`` (<= 17); the confidence and predictor exits use the dynamo
    exporter (``torch.cond`` -> ``If``) at opset ``max(opset, 18)``.
    """
    written = _write_onnx(model, Path(output), example, opset, notes, DYNAMIC_INT8 if int8 else None)
    return vilt_onnx_runner(output, threads), written.runtime


def _write_onnx(
    model,
    output: Path,
    example: tuple[torch.Tensor, ...],
    opset: int,
    notes: list[str] | None,
    quantize: str | None = None,
    stage: Callable[[str], None] = lambda text: None,
) -> Written:
    # the mask added to the scores: SDPA's boolean one exports as Where(IsNaN(Softmax)) per
    # layer, 12% of the int8 ViLT-B/32's time in onnxruntime (docs/performance.md)
    model = additive_mask_attention(model.eval())
    if quantize is not None:
        model = linear_patch_embeddings(model)
    if has_data_dependent_exit(model):
        opset = max(opset, 18)
        # a batch of two: torch.export would take a batch of one as a constant
        example = tuple(torch.cat([t, t]) for t in example)
        if notes is not None:
            notes.append(
                f"{ExitMode(int(model.exit_mode)).label} early exit exported with torch.cond: ONNX If "
                f"nodes skip the layers after an exit (opset {opset})"
            )
    elif opset > 17:
        raise ExportError("the ViLT ONNX export uses opset 17 or lower (the TorchScript-based exporter)")
    options = WriteOptions(opset=opset, quantize=quantize, stage=stage)
    written = get_format("onnx").write(_graph(model, example, batch=True), output, options)
    if notes is not None:
        notes.extend(written.notes)
    return written


def vilt_executorch_runner(path: str | Path) -> Callable[[tuple[torch.Tensor, ...]], torch.Tensor]:
    """Run a ViLT ``.pte`` in the ExecuTorch runtime on ``(input_ids, attention_mask,
    pixel_values, pixel_mask)`` (questions padded as at export)."""
    run = get_format("executorch").runner(Path(path))
    return lambda inputs: run(*inputs)[0]


def _refuse_data_dependent_exit(model, export_format: ExportFormat) -> None:
    if has_data_dependent_exit(model) and not export_format.runs_data_dependent_branches:
        mode = ExitMode(int(model.exit_mode)).label
        raise ExportError(
            f"ExecuTorch cannot export the {mode} early exit: it decides from the data whether to run the next "
            "layers (torch.cond), and the XNNPACK delegate does not lower the layers inside torch.cond branches "
            "(they would run on slow portable kernels). Use --format torchscript (every mode) or onnx (torch.cond -> "
            "If), or a fixed exit (--exit-layer N) for ExecuTorch."
        )


def export_vilt_executorch(
    model,
    output: str | Path,
    examples: Sequence[tuple[torch.Tensor, ...]],
    notes: list[str] | None = None,
    format_name: str = "executorch",
    stage: Callable[[str], None] = lambda text: None,
    int8: bool = False,
) -> tuple[Callable[[tuple[torch.Tensor, ...]], torch.Tensor], str, bool]:
    """Write a :class:`~mobilevt.models.vilt.ViltForQuestionAnswering` with its current
    MobiVQA settings (token pruning and the fixed exit; not the data-dependent exits) to an
    ExecuTorch ``.pte`` lowered to XNNPACK, with dynamic image size when the runtime takes
    it (else the size of ``examples[0]``), after checking that it runs every example.

    With ``int8``, the linears are quantized dynamically (XNNPACK's QD8 GEMMs: int8 weights,
    activations quantized per call). Returns a runner of the written file, the runtime's name
    and whether the image size is dynamic."""
    written, dynamic_size = _write_executorch(
        model, Path(output), examples, notes, format_name, stage, DYNAMIC_INT8 if int8 else None, baseline=False
    )
    return vilt_executorch_runner(output), written.runtime, dynamic_size


def _write_executorch(
    model,
    output: Path,
    examples: Sequence[tuple[torch.Tensor, ...]],
    notes: list[str] | None,
    format_name: str,
    stage: Callable[[str], None],
    quantize: str | None,
    baseline: bool = True,
) -> tuple[Written, bool]:
    export_format = get_format(format_name)
    _refuse_data_dependent_exit(model, export_format)
    export_format.require()
    notes = [] if notes is None else notes
    example = examples[0]
    # attention with an added mask instead of SDPA's boolean one, and LayerNorm as matrix
    # products (export/rewrite.py): XNNPACK then runs every layer whole
    options = WriteOptions(probes=list(examples), stage=stage, quantize=quantize, int8_baseline=baseline)
    model = linear_patch_embeddings(model.eval()) if quantize is not None else model.eval()
    written = export_format.write(_graph(model, example, batch=False), output, options)
    failure = written.details.pop("dynamic_failure", None)
    # what XNNPACK does not run, and how the file is quantized
    notes.extend(note for note in written.notes if "portable kernels" in note or note.startswith("int8"))
    sizes = {tuple(inputs[2].shape[-2:]) for inputs in examples}
    if failure is not None and len(sizes) > 1:
        raise ExportError(
            f"the ExecuTorch export with dynamic image size failed ({failure}) and the check photos have several sizes"
        )
    if failure is None:
        notes.append(
            f"dynamic image size (multiples of 32 up to {32 * _MAX_PATCH_GRID}); questions padded to "
            f"{example[0].shape[1]} tokens"
        )
    else:
        notes.append("dynamic image size failed in ExecuTorch: exported for the check photos' size only")
    return written, failure is None


VQA_PIPELINE = FamilyAdapter(
    "ViLT VQA pipelines",
    "ViLT VQA exports",
    frozenset({"opset", "quantize"}),
    "TorchScript holds the whole pipeline, ONNX and ExecuTorch take any image size",
    export_vqa_pipeline,
    formats=("torchscript", "onnx", "executorch"),
)

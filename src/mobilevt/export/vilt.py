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
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch

from ..fileio import atomic_path, write_text_atomic
from .core import _EXTRAS, ExportError, ExportReport, _agreement, _check_inputs, _median_ms, _size, _write_report

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
) -> ExportReport:
    """Export a :class:`~mobilevt.tasks.vqa.VqaPipeline` (see the module docstring) and
    verify the written file on photos from ``check_images`` (default: photos shipped in
    scikit-learn / scikit-image), each asked one of ``questions``."""
    if format not in VQA_FORMATS:
        raise ExportError(f"ViLT VQA exports to {', '.join(VQA_FORMATS)}, not {format!r}")
    if not questions:
        raise ExportError("export_vqa_pipeline needs at least one check question")
    output = Path(output)
    pipeline = copy.deepcopy(pipeline).eval()
    photos, source = _check_inputs(check_images, max_check_images)
    images = [photo.permute(1, 2, 0).contiguous() for photo in photos]  # uint8 [H, W, 3], as apps pass them
    pairs = [(image, questions[i % len(questions)]) for i, image in enumerate(images)]
    with torch.inference_mode():
        expected = torch.stack([pipeline.answer_logits(image, question) for image, question in pairs])
    notes: List[str] = []
    details: dict[str, Any] = {
        "threads": torch.get_num_threads(), "questions": list(questions),
        "scores": "sigmoid(logits): ViLT's VQA head is trained with binary cross-entropy",
    }

    if format == "torchscript":
        pipeline.save_torchscript(output)
        loaded = torch.jit.load(str(output))
        runtime = "TorchScript interpreter"
        with torch.inference_mode():
            actual = torch.stack([loaded.answer_logits(image, question) for image, question in pairs])
        image, question = pairs[0]
        eager_ms = _median_ms(lambda: pipeline(image, question, 5), latency_runs)
        exported_ms = _median_ms(lambda: loaded(image, question, 5), latency_runs)
        notes.append("input: a uint8 [H, W, 3] RGB image of any size and the question string; output: top-k "
                     "(answer, score); answer_logits(image, question) gives all logits")
        input_size = tuple(image.shape[:2])
        dynamic = True
    else:
        model_inputs = [_model_inputs(pipeline, image, question, pad_text=format == "executorch")
                        for image, question in pairs]
        if format == "onnx":
            run, runtime = _export_onnx(pipeline.model, output, model_inputs[0], opset)
            details["opset"] = opset
        else:
            run, runtime, dynamic_size = _export_executorch(pipeline.model, output, model_inputs, notes)
            details["dynamic_size"] = dynamic_size
        actual = torch.cat([run(inputs) for inputs in model_inputs])
        eager_ms = _median_ms(lambda: pipeline.model(*model_inputs[0]), latency_runs)
        exported_ms = _median_ms(lambda: run(model_inputs[0]), latency_runs)
        details |= _write_side_files(pipeline, output)
        notes.append("inputs: input_ids, attention_mask [1, text] int64 (BERT WordPiece ids of [CLS] question "
                     "[SEP], see the vocab file), pixel_values [1, 3, H, W] float32 (ViLT preprocessing: shorter "
                     "side 384, longer <= 639, multiples of 32, bicubic, (x / 255 - 0.5) / 0.5), pixel_mask "
                     "[1, H, W] int64; output: logits [1, answers], score = sigmoid(logit)")
        input_size = tuple(model_inputs[0][2].shape[-2:])
        dynamic = format == "onnx"  # ExecuTorch specialises the example's batch of 1

    top1, top5 = _agreement(actual, expected)
    report = ExportReport(
        format=format, path=str(output), file_bytes=_size(output), input_size=input_size, dynamic_batch=dynamic,
        include_preprocessing=format == "torchscript", check_images=len(pairs), check_source=source,
        max_abs_diff=float((actual.float() - expected.float()).abs().max()), top1_agreement=top1,
        top5_agreement=top5, eager_latency_ms=eager_ms, exported_latency_ms=exported_ms, runtime=runtime,
        notes=notes, details=details,
    )
    return _write_report(report)


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


def _export_onnx(model, output: Path, example: Tuple[torch.Tensor, ...], opset: int):
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError(f"the onnx export needs {exc.name}: {_EXTRAS['onnx']}") from None
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
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # fair timing beside eager
    session = ort.InferenceSession(str(output), options, providers=["CPUExecutionProvider"])

    def run(inputs: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        feeds = {name: tensor.numpy() for name, tensor in zip(_INPUT_NAMES, inputs)}
        return torch.from_numpy(session.run(None, feeds)[0])

    return run, f"onnxruntime {ort.__version__} (CPUExecutionProvider)"


def _export_executorch(model, output: Path, examples: Sequence[Tuple[torch.Tensor, ...]], notes: List[str]):
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        from executorch.runtime import Runtime
    except ImportError as exc:
        raise ExportError(f"the executorch export needs {exc.name}: {_EXTRAS['executorch']}") from None
    example = examples[0]
    height = 32 * torch.export.Dim("patch_rows", min=1, max=_MAX_PATCH_GRID)
    width = 32 * torch.export.Dim("patch_cols", min=1, max=_MAX_PATCH_GRID)
    dynamic = (None, None, {2: height, 3: width}, {1: height, 2: width})

    def lower(dynamic_shapes) -> Callable[[Tuple[torch.Tensor, ...]], torch.Tensor]:
        program = torch.export.export(model, example, dynamic_shapes=dynamic_shapes)
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
        with atomic_path(output) as tmp:
            tmp.write_bytes(lowered.buffer)
        method = Runtime.get().load_program(str(output)).load_method("forward")
        return lambda inputs: method.execute([t.contiguous() for t in inputs])[0]

    sizes = {tuple(inputs[2].shape[-2:]) for inputs in examples}
    try:
        run = lower(dynamic)
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

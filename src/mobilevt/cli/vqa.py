"""``mobilevt vqa IMAGE "QUESTION"``: answer a question about an image with ViLT."""

from __future__ import annotations

import json

import torch

from mobilevt.data.images import load_image

from ..errors import InvalidInputError
from ..factory import is_random_weights
from ..registry import ModelName
from .common import warn_random_weights
from .values import existing_file, fraction, non_negative_int, positive_int, probability


def configure_vqa_parser(p) -> None:
    p.description = (
        "Top-k answers with their scores (sigmoid of ViLT's logits: each estimates that answer's VQA "
        "accuracy; they do not sum to 1; a model trained with cross-entropy over its answers, such as "
        "mobilevt's easy-VQA ViLTs, records it in its weights file and is scored with a softmax)."
    )
    p.add_argument("image", type=existing_file, help="image file (JPEG, PNG, WebP ...)")
    p.add_argument("question", help="the question, in quotes")
    p.add_argument(
        "--weights",
        default="DEFAULT",
        help="Hugging Face ViLT VQA model folder (config.json, model.safetensors, vocab.txt), Hub id or "
        "hf-hub:<repo> (default: dandelin/vilt-b32-finetuned-vqa), a mobilevt .safetensors file; "
        "'none' = random weights (needs --vocab)",
    )
    p.add_argument("--vocab", type=existing_file, help="the BERT vocab.txt (default: the one beside the weights)")
    p.add_argument(
        "--pipeline",
        type=existing_file,
        metavar="FILE",
        help="a TorchScript pipeline from `mobilevt export vilt_b32_vqa --format torchscript` (instead of --weights)",
    )
    p.add_argument("--topk", type=positive_int, default=5, help="answers to print (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_mobivqa_arguments(p)
    p.set_defaults(func=run_vqa)


def add_mobivqa_arguments(p) -> None:
    """The MobiVQA switches of a ViLT model (``set_token_pruning`` / ``set_early_exit``);
    exit heads come with the weights (a file from mobilevt.save_weights of a model with
    add_early_exits)."""
    group = p.add_argument_group("MobiVQA (ViLT): image-token pruning and early exit")
    group.add_argument(
        "--prune-layer",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="keep only the image tokens the question attends to most after layer N (0 = off)",
    )
    group.add_argument(
        "--keep-ratio",
        type=fraction,
        default=0.5,
        metavar="R",
        help="with --prune-layer: the fraction of image patches kept (default 0.5)",
    )
    exits = group.add_mutually_exclusive_group()
    exits.add_argument(
        "--exit-layer",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="answer with the exit head after layer N (a fixed early exit)",
    )
    exits.add_argument(
        "--exit-threshold",
        type=probability,
        metavar="T",
        help="each question stops at its first exit head whose top answer scores >= T",
    )
    exits.add_argument(
        "--exit-predictor", action="store_true", help="the exit predictor picks each question's exit layer"
    )
    group.add_argument(
        "--exit-score",
        choices=("softmax", "sigmoid"),
        default="softmax",
        help="with --exit-threshold: the score of the top answer (sigmoid for heads trained with "
        "binary cross-entropy, such as VQAv2 ViLT's; default softmax)",
    )


def mobivqa_requested(args) -> bool:
    return bool(args.prune_layer or args.exit_layer or args.exit_threshold is not None or args.exit_predictor)


def apply_mobivqa_arguments(model, args) -> None:
    """Switch the MobiVQA settings of ``args`` on ``model`` (eager or TorchScript)."""
    if args.prune_layer:
        model.set_token_pruning(args.prune_layer, args.keep_ratio)
    if args.exit_layer or args.exit_threshold is not None or args.exit_predictor:
        model.set_early_exit(args.exit_threshold, args.exit_predictor, args.exit_layer, args.exit_score == "softmax")


def run_vqa(args) -> int:

    from mobilevt.tasks.vqa import load_vqa_pipeline

    image = load_image(args.image)  # uint8 [3, H, W]; a clear ImageDecodeError if unreadable
    try:
        pipeline = load_vqa_pipeline(args.pipeline) if args.pipeline else _pipeline_from_args(args, "vilt_b32_vqa")
    except FileNotFoundError as exc:  # a missing pipeline file: a user error
        raise InvalidInputError(str(exc)) from None
    _apply_to_pipeline(pipeline, args)
    with torch.inference_mode():
        answers = pipeline(image, args.question, args.topk)
    if args.json:
        print(
            json.dumps(
                {
                    "image": args.image,
                    "question": args.question,
                    "answers": [{"answer": answer, "score": score} for answer, score in answers],
                },
                indent=2,
            )
        )
        return 0
    print(f"{args.image}: {args.question}")
    for answer, score in answers:
        print(f"  {score:6.3f}  {answer}")
    return 0


def pipeline_for_export(args):
    """The VQA pipeline that ``mobilevt export vilt_b32_vqa`` writes, with the MobiVQA flags set."""
    pipeline = _pipeline_from_args(args, ModelName.parse(args.model).base)
    _apply_to_pipeline(pipeline, args)
    return pipeline


def _pipeline_from_args(args, name: str):
    """The VQA pipeline of ``--weights`` (``none``: random weights, which need ``--vocab``)."""
    from mobilevt.tasks.vqa import create_vqa_pipeline

    weights = args.weights
    if is_random_weights(weights):
        warn_random_weights(name, "answers")
        weights = None
    try:
        return create_vqa_pipeline(weights=weights, vocab_file=args.vocab, model_name=name)
    except FileNotFoundError as exc:  # a missing vocab.txt: a user error
        raise InvalidInputError(str(exc)) from None


def _apply_to_pipeline(pipeline, args) -> None:

    try:
        apply_mobivqa_arguments(pipeline.model, args)
    except torch.jit.Error as exc:  # a TorchScript pipeline's ValueError, with the script's traceback
        lines = [line.strip() for line in str(exc).splitlines() if "Error:" in line]
        raise InvalidInputError(lines[-1].split("Error:", 1)[1].strip() if lines else str(exc)) from None

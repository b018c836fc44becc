"""Visual question answering: the end-to-end ViLT pipeline and the VQA accuracy metric.

:class:`VqaPipeline` is one ``torch.jit.script``-able module, (uint8 image, question) ->
top-k (answer, score): the WordPiece tokenizer (:mod:`mobilevt.data.tokenizer`), ViLT's image
preprocessing (:mod:`mobilevt.data.vilt_preprocess`) and the model, so a phone app ships one
TorchScript file and needs no Python. Scores are ``sigmoid(logits)``: ViLT's VQA head is
trained with binary cross-entropy against soft VQA scores (each answer's
``min(1, humans / 3)``), so each score estimates that answer's VQA accuracy on its own and
the scores do not sum to 1 (transformers' examples read them the same way). A model trained
with cross-entropy over its answers (``model.answer_softmax``, set by
:func:`mobilevt.training.vqa.train_vqa` and saved with the weights) is scored with a softmax.

:func:`vqa_accuracy` and :func:`evaluate_vqa`, the official VQA metric, live in
:mod:`mobilevt.tasks.vqa_metric` and are re-exported here.
"""

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.tokenizer import WordPieceTokenizer, create_tokenizer
from ..data.vilt_preprocess import ViltImagePreprocess
from ..errors import InvalidInputError
from ..factory import create_model
from ..model_kind import ModelKind
from ..registry import get_model_entry
from ..weights.entries import Weights
from ..weights.loading import HF_PREFIX, WeightsNotFoundError, hub_file
from .vqa_metric import VqaEvaluation, evaluate_vqa, normalize_answer, vqa_accuracy

__all__ = [
    "VqaEvaluation",
    "VqaPipeline",
    "create_vqa_pipeline",
    "evaluate_vqa",
    "load_vqa_pipeline",
    "normalize_answer",
    "vqa_accuracy",
]


class VqaPipeline(nn.Module):
    """Tokenizer + image preprocessing + ViLT + answer names, scriptable as one module.

    ``forward(image, question, top_k=5)`` takes one uint8 RGB image (``[H, W, 3]`` or
    ``[3, H, W]``, any size) and a question string and returns the ``top_k`` best
    ``(answer, score)`` pairs, best first, with ``score = sigmoid(logit)`` (or the softmax
    of a model trained with it: see the module docstring). ``answer_logits`` gives all
    logits; ``answer_batch`` answers several (image, question) pairs in one padded batch.

    Args:
        model: a :class:`mobilevt.models.vilt.ViltForQuestionAnswering` (or any module with
            its ``forward(input_ids, attention_mask, pixel_values, pixel_mask)``).
        tokenizer: the model's WordPiece tokenizer; its ``max_length`` may not exceed the
            model's text length.
        image_preprocess: default ``ViltImagePreprocess(model.image_size_rule)``.
        answers: the name of each logit; default ``model.answers`` (the checkpoint's
            ``id2label``), or the logit indices as strings when the checkpoint named none.
    """

    kind = ModelKind.VQA  # what export, the CLI and training dispatch on

    answers: list[str]  # class-level, and no `from __future__ import annotations`: TorchScript reads it

    def __init__(
        self,
        model: nn.Module,
        tokenizer: WordPieceTokenizer,
        image_preprocess: ViltImagePreprocess | None = None,
        answers: Sequence[str] | None = None,
    ):
        super().__init__()
        max_text_len = getattr(getattr(model, "arch", None), "max_text_len", None)
        if max_text_len is not None and tokenizer.max_length > max_text_len:
            raise InvalidInputError(
                f"the tokenizer makes up to {tokenizer.max_length} tokens but the model takes at most {max_text_len}: "
                f"create it with max_length={max_text_len}"
            )
        num_answers = int(model.num_answers)
        names = list(answers) if answers is not None else list(getattr(model, "answers", []))
        if not names:
            names = [str(index) for index in range(num_answers)]
        if len(names) != num_answers:
            raise InvalidInputError(f"{len(names)} answer names given for a model with {num_answers} answers")
        self.model = model.eval()
        self.tokenizer = tokenizer
        if image_preprocess is None:
            image_preprocess = ViltImagePreprocess(getattr(model, "image_size_rule", None))
        self.image_preprocess = image_preprocess
        self.answers = [str(name) for name in names]
        self.answer_softmax = bool(getattr(model, "answer_softmax", False))

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        if self.answer_softmax:
            return logits.softmax(dim=-1)
        return torch.sigmoid(logits)

    @torch.jit.export
    def answer_logits(self, image: torch.Tensor, question: str) -> torch.Tensor:
        """The model's logits ``[num_answers]`` for one image and question."""
        pixel_values, pixel_mask = self.image_preprocess(image)
        ids = self.tokenizer.encode(question)
        input_ids = torch.tensor([ids], dtype=torch.long, device=pixel_values.device)
        attention_mask = torch.ones_like(input_ids)
        return self.model(input_ids, attention_mask, pixel_values, pixel_mask)[0]

    def forward(self, image: torch.Tensor, question: str, top_k: int = 5) -> list[tuple[str, float]]:
        scores = self._scores(self.answer_logits(image, question))
        return self._top_answers(scores, top_k)

    @torch.jit.export
    def answer_batch(
        self, images: list[torch.Tensor], questions: list[str], top_k: int = 5
    ) -> list[list[tuple[str, float]]]:
        """Top-k answers of each (``images[i]``, ``questions[i]``) pair, run as one batch
        (images zero-padded with a pixel mask, questions padded with [PAD])."""
        if len(images) != len(questions):
            raise InvalidInputError(
                "answer_batch needs one question per image, got "
                + str(len(images))
                + " images and "
                + str(len(questions))
                + " questions"
            )
        pixel_values, pixel_mask = self.image_preprocess.pad_batch(images)
        input_ids, attention_mask = self.tokenizer.encode_batch(questions, False)
        device = pixel_values.device
        logits = self.model(input_ids.to(device), attention_mask.to(device), pixel_values, pixel_mask)
        scores = self._scores(logits)
        results: list[list[tuple[str, float]]] = []
        for row in range(scores.shape[0]):
            results.append(self._top_answers(scores[row], top_k))
        return results

    def _top_answers(self, scores: torch.Tensor, top_k: int) -> list[tuple[str, float]]:
        if top_k < 1:
            raise InvalidInputError("top_k must be at least 1, got " + str(top_k))
        best = torch.topk(scores, min(top_k, scores.shape[0]))
        values: list[float] = best.values.tolist()
        indices: list[int] = best.indices.tolist()
        return [(self.answers[index], value) for index, value in zip(indices, values)]

    def save_torchscript(self, path: str | os.PathLike) -> Path:
        """Script the whole pipeline and save it atomically to ``path``; load it with
        :func:`load_vqa_pipeline` or ``torch.jit.load`` (no mobilevt needed there)."""
        from ..export.formats.torchscript import save_torchscript

        save_torchscript(self, path)
        return Path(path)


def load_vqa_pipeline(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """A pipeline saved with :meth:`VqaPipeline.save_torchscript` (``torch.jit.load``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"VQA pipeline file not found: {path}; write one with `mobilevt export vilt_b32_vqa "
            "--format torchscript -o FILE.pt`"
        )
    with warnings.catch_warnings():  # TorchScript is the pipeline's file format: its deprecation is noise here
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


# ---------------------------------------------------------------------------------------
# Building a pipeline from weights


def create_vqa_pipeline(
    weights: Any = "DEFAULT",
    vocab_file: str | os.PathLike | None = None,
    model_name: str = "vilt_b32_vqa",
    **model_kwargs: Any,
) -> VqaPipeline:
    """The end-to-end VQA pipeline for ViLT weights.

    Args:
        weights: what ``create_model(model_name, weights=...)`` takes: an Hugging
            Face model folder (``config.json``, ``model.safetensors``, ``vocab.txt``), a
            weights file inside such a folder, a Hub id / ``hf-hub:`` id, ``"DEFAULT"``
            (dandelin/vilt-b32-finetuned-vqa) or ``None`` (random weights: needs ``vocab_file``).
        vocab_file: the BERT ``vocab.txt``; default: the one in the weights' folder or Hub
            repository.
    """

    vocab_path, lowercase = _find_vocab(weights, vocab_file, model_name)
    model = create_model(model_name, weights=weights, **model_kwargs).eval()
    tokenizer = create_tokenizer(vocab_path, max_length=model.arch.max_text_len, lowercase=lowercase)
    if len(tokenizer.id_to_token) > model.arch.vocab_size:
        raise InvalidInputError(
            f"{vocab_path} has {len(tokenizer.id_to_token)} tokens but the model embeds only {model.arch.vocab_size}: "
            "it is not this model's vocabulary"
        )
    return VqaPipeline(model, tokenizer)


def _find_vocab(weights: Any, vocab_file: str | os.PathLike | None, model_name: str) -> tuple[Path, bool]:
    """``vocab.txt`` for ``weights`` and whether it is lowercased (``tokenizer_config.json``)."""

    if vocab_file is not None:
        path = Path(vocab_file)
        path = path / "vocab.txt" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}; pass the vocab.txt of the model's tokenizer")
        return path, _lowercase(path.parent)
    if weights is None:
        raise InvalidInputError(
            "random ViLT weights (--weights none) come without a vocabulary: pass vocab_file=FILE, the "
            "vocab.txt of bert-base-uncased or of any Hugging Face ViLT model folder (30,522 tokens)"
        )
    if isinstance(weights, str) and "." not in weights and weights != "DEFAULT":
        entry = get_model_entry(model_name)
        tags = {w.tag: w for w in entry.weights}
        if weights in tags:
            weights = tags[weights]
    if isinstance(weights, str) and weights == "DEFAULT":
        weights = get_model_entry(model_name).default_weights
    source = weights.source if isinstance(weights, Weights) else os.fspath(weights)
    local = Path(source).expanduser()
    if not source.startswith(HF_PREFIX) and local.exists():
        folder = local if local.is_dir() else local.parent
        path = folder / "vocab.txt"
        if not path.is_file():
            raise FileNotFoundError(
                f"no vocab.txt in {folder}: the question tokenizer needs the model's BERT vocabulary; copy the "
                "vocab.txt of the Hugging Face model folder there or pass vocab_file=FILE"
            )
        return path, _lowercase(folder)
    repo = source[len(HF_PREFIX) :] if source.startswith(HF_PREFIX) else source
    return _download_vocab(repo)


def _lowercase(folder: Path) -> bool:
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            return bool(json.loads(config.read_text(encoding="utf-8")).get("do_lower_case", True))
        except (ValueError, OSError):
            pass
    return True  # ViLT's vocabulary is bert-base-uncased


def _download_vocab(repo: str) -> tuple[Path, bool]:

    repo_id = repo.partition("@")[0]
    try:
        path = hub_file(repo, "vocab.txt")
    except Exception as err:  # offline, not found, auth ...
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsNotFoundError(
            f"could not get vocab.txt of {repo_id} from the Hugging Face Hub ({type(err).__name__}: {reason}); "
            f"if this machine is offline, download config.json, model.safetensors and vocab.txt from "
            f"https://huggingface.co/{repo_id} on a connected machine into one "
            "folder and pass that folder as weights, or pass vocab_file=FILE"
        ) from err
    return path, _lowercase(path.parent)

"""Visual question answering: the end-to-end ViLT pipeline and the VQA accuracy metric.

:class:`VqaPipeline` is one ``torch.jit.script``-able module, (uint8 image, question) ->
top-k (answer, score): the WordPiece tokenizer (:mod:`mobilevt.data.tokenizer`), ViLT's image
preprocessing (:mod:`mobilevt.data.vilt_preprocess`) and the model, so a phone app ships one
TorchScript file and needs no Python. Scores are ``sigmoid(logits)``: ViLT's VQA head is
trained with binary cross-entropy against soft VQA scores (each answer's
``min(1, humans / 3)``), so each score estimates that answer's VQA accuracy on its own and
the scores do not sum to 1 (transformers' examples read them the same way).

:func:`vqa_accuracy` and :func:`evaluate_vqa` implement the official VQA metric (the
GT-Vision-Lab/VQA evaluation script, reimplemented): an answer's accuracy is
``min(1, matching humans / 3)`` averaged over the 10 leave-one-out subsets of the 10 human
answers, after the script's answer normalisation.
"""

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..data.tokenizer import WordPieceTokenizer, create_tokenizer
from ..data.vilt_preprocess import ViltImagePreprocess
from ..fileio import atomic_path

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
    ``(answer, score)`` pairs, best first, with ``score = sigmoid(logit)`` (see the module
    docstring). ``answer_logits`` gives all logits; ``answer_batch`` answers several
    (image, question) pairs in one padded batch.

    Args:
        model: a :class:`mobilevt.models.vilt.ViltForQuestionAnswering` (or any module with
            its ``forward(input_ids, attention_mask, pixel_values, pixel_mask)``).
        tokenizer: the model's WordPiece tokenizer; its ``max_length`` may not exceed the
            model's text length.
        image_preprocess: default ``ViltImagePreprocess(model.image_size_rule)``.
        answers: the name of each logit; default ``model.answers`` (the checkpoint's
            ``id2label``), or the logit indices as strings when the checkpoint named none.
    """

    answers: List[str]  # class-level, and no `from __future__ import annotations`: TorchScript reads it

    def __init__(
        self,
        model: nn.Module,
        tokenizer: WordPieceTokenizer,
        image_preprocess: Optional[ViltImagePreprocess] = None,
        answers: Optional[Sequence[str]] = None,
    ):
        super().__init__()
        max_text_len = getattr(getattr(model, "arch", None), "max_text_len", None)
        if max_text_len is not None and tokenizer.max_length > max_text_len:
            raise ValueError(
                f"the tokenizer makes up to {tokenizer.max_length} tokens but the model takes at most {max_text_len}: "
                f"create it with max_length={max_text_len}"
            )
        num_answers = int(getattr(model, "num_answers"))
        names = list(answers) if answers is not None else list(getattr(model, "answers", []))
        if not names:
            names = [str(index) for index in range(num_answers)]
        if len(names) != num_answers:
            raise ValueError(f"{len(names)} answer names given for a model with {num_answers} answers")
        self.model = model.eval()
        self.tokenizer = tokenizer
        if image_preprocess is None:
            image_preprocess = ViltImagePreprocess(getattr(model, "image_size_rule", None))
        self.image_preprocess = image_preprocess
        self.answers = [str(name) for name in names]

    @torch.jit.export
    def answer_logits(self, image: torch.Tensor, question: str) -> torch.Tensor:
        """The model's logits ``[num_answers]`` for one image and question."""
        pixel_values, pixel_mask = self.image_preprocess(image)
        ids = self.tokenizer.encode(question)
        input_ids = torch.tensor([ids], dtype=torch.long, device=pixel_values.device)
        attention_mask = torch.ones_like(input_ids)
        return self.model(input_ids, attention_mask, pixel_values, pixel_mask)[0]

    def forward(self, image: torch.Tensor, question: str, top_k: int = 5) -> List[Tuple[str, float]]:
        scores = torch.sigmoid(self.answer_logits(image, question))
        return self._top_answers(scores, top_k)

    @torch.jit.export
    def answer_batch(
        self, images: List[torch.Tensor], questions: List[str], top_k: int = 5
    ) -> List[List[Tuple[str, float]]]:
        """Top-k answers of each (``images[i]``, ``questions[i]``) pair, run as one batch
        (images zero-padded with a pixel mask, questions padded with [PAD])."""
        if len(images) != len(questions):
            raise ValueError(
                "answer_batch needs one question per image, got " + str(len(images)) + " images and "
                + str(len(questions)) + " questions"
            )
        pixel_values, pixel_mask = self.image_preprocess.pad_batch(images)
        input_ids, attention_mask = self.tokenizer.encode_batch(questions, False)
        device = pixel_values.device
        logits = self.model(input_ids.to(device), attention_mask.to(device), pixel_values, pixel_mask)
        scores = torch.sigmoid(logits)
        results: List[List[Tuple[str, float]]] = []
        for row in range(scores.shape[0]):
            results.append(self._top_answers(scores[row], top_k))
        return results

    def _top_answers(self, scores: torch.Tensor, top_k: int) -> List[Tuple[str, float]]:
        if top_k < 1:
            raise ValueError("top_k must be at least 1, got " + str(top_k))
        best = torch.topk(scores, min(top_k, scores.shape[0]))
        values: List[float] = best.values.tolist()
        indices: List[int] = best.indices.tolist()
        return [(self.answers[index], value) for index, value in zip(indices, values)]

    def save_torchscript(self, path: str | os.PathLike) -> Path:
        """Script the whole pipeline and save it atomically to ``path``; load it with
        :func:`load_vqa_pipeline` or ``torch.jit.load`` (no mobilevt needed there)."""
        scripted = torch.jit.script(self.eval())
        with atomic_path(path) as tmp:
            torch.jit.save(scripted, str(tmp))
        return Path(path)


def load_vqa_pipeline(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """A pipeline saved with :meth:`VqaPipeline.save_torchscript` (``torch.jit.load``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VQA pipeline file not found: {path}; write one with `mobilevt export vilt_b32_vqa "
                                "--format torchscript -o FILE.pt`")
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
        weights: what ``mobilevt.create_model(model_name, weights=...)`` takes: an Hugging
            Face model folder (``config.json``, ``model.safetensors``, ``vocab.txt``), a
            weights file inside such a folder, a Hub id / ``hf-hub:`` id, ``"DEFAULT"``
            (dandelin/vilt-b32-finetuned-vqa) or ``None`` (random weights: needs ``vocab_file``).
        vocab_file: the BERT ``vocab.txt``; default: the one in the weights' folder or Hub
            repository.
    """
    import mobilevt

    vocab_path, lowercase = _find_vocab(weights, vocab_file, model_name)
    model = mobilevt.create_model(model_name, weights=weights, **model_kwargs).eval()
    tokenizer = create_tokenizer(vocab_path, max_length=model.arch.max_text_len, lowercase=lowercase)
    if len(tokenizer.id_to_token) > model.arch.vocab_size:
        raise ValueError(
            f"{vocab_path} has {len(tokenizer.id_to_token)} tokens but the model embeds only {model.arch.vocab_size}: "
            "it is not this model's vocabulary"
        )
    return VqaPipeline(model, tokenizer)


def _find_vocab(weights: Any, vocab_file: str | os.PathLike | None, model_name: str) -> Tuple[Path, bool]:
    """``vocab.txt`` for ``weights`` and whether it is lowercased (``tokenizer_config.json``)."""
    from ..registry import get_model_entry
    from ..weights.entries import Weights
    from ..weights.loading import HF_PREFIX

    if vocab_file is not None:
        path = Path(vocab_file)
        path = path / "vocab.txt" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}; pass the vocab.txt of the model's tokenizer")
        return path, _lowercase(path.parent)
    if weights is None:
        raise ValueError(
            "random ViLT weights (--weights none) come without a vocabulary: pass vocab_file= (--vocab FILE), the "
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
                "vocab.txt of the Hugging Face model folder there or pass vocab_file= (--vocab FILE)"
            )
        return path, _lowercase(folder)
    repo = source[len(HF_PREFIX):] if source.startswith(HF_PREFIX) else source
    return _download_vocab(repo)


def _lowercase(folder: Path) -> bool:
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            return bool(json.loads(config.read_text(encoding="utf-8")).get("do_lower_case", True))
        except (ValueError, OSError):
            pass
    return True  # ViLT's vocabulary is bert-base-uncased


def _download_vocab(repo: str) -> Tuple[Path, bool]:
    from ..weights.loading import WeightsNotFoundError, hub_file

    repo_id = repo.partition("@")[0]
    try:
        path = hub_file(repo, "vocab.txt")
    except Exception as err:  # offline, not found, auth ...

        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsNotFoundError(
            f"could not get vocab.txt of {repo_id} from the Hugging Face Hub ({type(err).__name__}: {reason}); "
            f"if this machine is offline, download config.json, model.safetensors and vocab.txt from "
            f"https://huggingface.co/{repo_id} on a connected machine into one "
            "folder and pass that folder as weights, or pass vocab_file= (--vocab FILE)"
        ) from err
    return path, _lowercase(path.parent)


# ---------------------------------------------------------------------------------------
# The official VQA accuracy metric

# The evaluation script's tables (GT-Vision-Lab/VQA, vqaEval.py): spelled-out digits,
# articles, and contractions written without their apostrophe.
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
# Apostrophes and colons are kept; periods are handled separately (decimal points survive).
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
                "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The script's pattern "(?!<=\d)(\.)(?!\d)" has a mistyped look-behind that is a look-ahead
# which never fails at a period, so it removes every period not followed by a digit.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")


def _strip_punctuation(text: str) -> str:
    """The script's ``processPunctuation``: a punctuation mark next to a space (or any mark
    in a text holding a digit,digit comma) is removed, otherwise it becomes a space; then
    periods not followed by a digit are removed."""
    out = text
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in _PUNCTUATION:
        # the test reads the original text, the replacement the running one, as the script does
        if mark + " " in text or " " + mark in text or has_digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def _digits_articles_contractions(text: str) -> str:
    """The script's ``processDigitArticle``: lowercase, number words to digits, articles
    dropped, apostrophe-less contractions restored, single spaces."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES]
    return " ".join(words)


def _clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(answer: str) -> str:
    """A predicted answer as the official evaluation compares it: newlines and tabs to
    spaces, trimmed, punctuation handled, lowercased, number words to digits, articles
    removed, contractions fixed (``"Two"`` -> ``"2"``, ``"a dog."`` -> ``"dog"``,
    ``"dont"`` -> ``"don't"``, ``"yes!"`` -> ``"yes"``)."""
    return _digits_articles_contractions(_strip_punctuation(_clean_whitespace(answer)))


def vqa_accuracy(predicted: str, human_answers: Sequence[str]) -> float:
    """The official VQA accuracy of ``predicted`` against the human answers of one question
    (10 in VQAv1/v2), in [0, 1].

    For each human answer left out in turn, the prediction scores ``min(1, matches / 3)``
    among the remaining ones; the result is the mean over the leave-one-out subsets. So
    with 10 humans, ``m`` matching answers give ``(10 - m) / 10 * min(1, m / 3) + m / 10 *
    min(1, (m - 1) / 3)``: 0.3 for one, 0.6 for two, 0.9 for three, 1.0 from four on.

    Normalisation follows the script: the prediction is always normalised
    (:func:`normalize_answer`); the human answers are used as written when they all agree,
    and otherwise only their punctuation is processed (the dataset's answers were
    normalised when it was collected).
    """
    if isinstance(human_answers, str):
        raise TypeError("human_answers must be a list of the humans' answer strings, not one string")
    if len(human_answers) == 0:
        raise ValueError("vqa_accuracy needs at least one human answer")
    prediction = normalize_answer(predicted)
    humans = [_clean_whitespace(answer) for answer in human_answers]
    if len(set(humans)) > 1:
        humans = [_strip_punctuation(answer) for answer in humans]
    matches = [answer == prediction for answer in humans]
    total = sum(matches)
    # leaving out human i removes its own match, if any, from the count
    per_subset = [min(1.0, (total - int(match)) / 3.0) for match in matches]
    return sum(per_subset) / len(per_subset)


@dataclass
class VqaEvaluation:
    """Official VQA accuracy (fractions in [0, 1]; the script prints 100x these)."""

    accuracy: float
    per_answer_type: Dict[str, float]
    per_question_type: Dict[str, float]
    num_questions: int
    per_question: Dict[int, float] = field(default_factory=dict, repr=False)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "accuracy": self.accuracy, "per_answer_type": self.per_answer_type,
            "per_question_type": self.per_question_type, "num_questions": self.num_questions,
        }


def evaluate_vqa(
    predictions: Mapping[int, str] | Sequence[Mapping[str, Any]] | str | os.PathLike,
    annotations_file: str | os.PathLike | Mapping[str, Any],
    require_all: bool = True,
) -> VqaEvaluation:
    """VQA accuracy of ``predictions`` on a VQAv2-format annotations file.

    Args:
        predictions: ``{question_id: answer}``, the official results list
            ``[{"question_id": ..., "answer": ...}]``, or a JSON file holding either.
        annotations_file: a VQAv2 annotations JSON (``{"annotations": [{"question_id",
            "answers": [{"answer": ...} x 10], "answer_type", "question_type"}, ...]}``), or
            that object already loaded.
        require_all: every annotated question must have a prediction (as the official
            script requires); ``False`` evaluates the predicted questions only.
    """
    predicted = _load_predictions(predictions)
    annotations = _load_annotations(annotations_file)
    unknown = sorted(set(predicted) - set(annotations))
    if unknown:
        raise ValueError(
            f"{len(unknown)} predicted question ids are not in the annotations (first: {unknown[:5]}); "
            "are the predictions for another split?"
        )
    missing = [qid for qid in annotations if qid not in predicted]
    if missing and require_all:
        raise ValueError(
            f"{len(missing)} of {len(annotations)} annotated questions have no prediction (first: {missing[:5]}); "
            "predict them all or pass require_all=False to evaluate a subset"
        )
    per_question: Dict[int, float] = {}
    by_answer_type: Dict[str, List[float]] = defaultdict(list)
    by_question_type: Dict[str, List[float]] = defaultdict(list)
    for qid, answer in predicted.items():
        record = annotations[qid]
        score = vqa_accuracy(answer, [a["answer"] for a in record["answers"]])
        per_question[qid] = score
        by_answer_type[str(record.get("answer_type", "unknown"))].append(score)
        by_question_type[str(record.get("question_type", "unknown"))].append(score)
    if not per_question:
        raise ValueError("no predictions to evaluate")
    return VqaEvaluation(
        accuracy=sum(per_question.values()) / len(per_question),
        per_answer_type={key: sum(v) / len(v) for key, v in sorted(by_answer_type.items())},
        per_question_type={key: sum(v) / len(v) for key, v in sorted(by_question_type.items())},
        num_questions=len(per_question),
        per_question=per_question,
    )


def _read_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a JSON file ({exc})") from None


def _load_predictions(predictions: Any) -> Dict[int, str]:
    if isinstance(predictions, (str, os.PathLike)):
        predictions = _read_json(predictions, "predictions")
    if isinstance(predictions, Mapping):
        return {int(qid): str(answer) for qid, answer in predictions.items()}
    result: Dict[int, str] = {}
    for item in predictions:
        if not isinstance(item, Mapping) or "question_id" not in item or "answer" not in item:
            raise ValueError(
                'predictions must be {question_id: answer} or a list of {"question_id": ..., "answer": ...}, got '
                f"an item {item!r}"
            )
        result[int(item["question_id"])] = str(item["answer"])
    return result


def _load_annotations(annotations: Any) -> Dict[int, Mapping[str, Any]]:
    source = "annotations"
    if isinstance(annotations, (str, os.PathLike)):
        source = str(annotations)
        annotations = _read_json(annotations, "annotations")
    records = annotations.get("annotations") if isinstance(annotations, Mapping) else None
    if not isinstance(records, list):
        raise ValueError(
            f'{source}: expected a VQAv2 annotations JSON with an "annotations" list (e.g. '
            "v2_mscoco_val2014_annotations.json), not the questions file or results"
        )
    by_id: Dict[int, Mapping[str, Any]] = {}
    for record in records:
        if "question_id" not in record or not record.get("answers"):
            raise ValueError(f'{source}: an annotation without "question_id" or "answers": {str(record)[:200]}')
        by_id[int(record["question_id"])] = record
    return by_id

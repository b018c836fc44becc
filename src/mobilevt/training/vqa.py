"""Training a small ViLT on easy-VQA, then its MobiVQA exit heads and exit predictor.

easy-VQA (``pip install easy-vqa``) ships 4,000 training and 1,000 test 64x64 images of one
coloured shape each, ~38.6k / ~9.7k questions about them and 13 one-word answers: a data
set on which a small ViLT learns to answer well in minutes on a CPU.

Steps (``studies/bench_mobivqa.py`` runs them all):

1. :func:`load_easy_vqa`: images as normalised tensors, questions tokenized with
   mobilevt's :class:`~mobilevt.data.tokenizer.WordPieceTokenizer` over a WordPiece
   vocabulary trained on the training questions (``tokenizers``' trainer: no download).
2. :func:`train_vqa`: the whole model, cross-entropy over the answers, AdamW with warmup
   and cosine decay.
3. :func:`train_exit_heads`: the backbone frozen, every exit head learns to answer from
   its layer's states (cross-entropy); then the exit predictor learns to pick, per
   question, the earliest exit whose head answers correctly (the full model when none
   does), as MobiVQA trains it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.tokenizer import WordPieceTokenizer, create_tokenizer
from ..errors import InvalidInputError, MissingDependencyError
from ..fileio import write_text_atomic
from ..models.mobivqa import MobiVqaVilt, first_exit_within_risk, later_choices_probability
from .trainer import parameter_groups, warmup_cosine

__all__ = [
    "VqaSplit",
    "load_easy_vqa",
    "build_wordpiece_vocab",
    "train_vqa",
    "train_exit_heads",
    "calibrate_exit_predictor",
    "earliest_agreeing_exit",
    "exit_oracle",
    "full_model_answers",
    "hold_out",
    "evaluate_on_split",
    "exit_states",
    "shift_and_flip",
    "easy_vqa_answer_groups",
]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class VqaSplit:
    """One split of a VQA data set held in memory: ``images`` ``[num_images, 3, H, W]``
    (normalised), per question the image index, token ids ``[Q, T]`` and mask, and the
    answer index."""

    images: torch.Tensor
    image_index: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, rows: torch.Tensor) -> VqaSplit:
        """The questions ``rows`` (the images are shared, not copied)."""
        return VqaSplit(
            self.images, self.image_index[rows], self.input_ids[rows], self.attention_mask[rows], self.labels[rows]
        )

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask, pixel_values, labels)`` of questions ``rows``,
        the text trimmed to the longest question of the batch."""
        mask = self.attention_mask[rows]
        length = int(mask.sum(dim=1).max())
        return self.input_ids[rows, :length], mask[:, :length], self.images[self.image_index[rows]], self.labels[rows]


def _require_easy_vqa():
    try:
        import easy_vqa
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            'easy-VQA training needs the easy-vqa data package: pip install "mobilevt[easyvqa]"'
        ) from error
    return easy_vqa


def build_wordpiece_vocab(texts: Sequence[str], path: str | Path, vocab_size: int = 200) -> Path:
    """Train a lowercase BERT WordPiece vocabulary on ``texts`` (``tokenizers``' trainer)
    and write it as ``vocab.txt`` at ``path`` (atomically)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer)
    tokens = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    return write_text_atomic(path, "\n".join(tokens) + "\n")


def _load_images(paths: dict, size: int) -> tuple[torch.Tensor, dict]:
    """Images ``[N, 3, size, size]`` normalised with ViLT's mean/std 0.5, and image id -> row."""
    import numpy as np
    from PIL import Image

    ids = sorted(paths)
    pixels = np.empty((len(ids), size, size, 3), dtype=np.uint8)
    for row, image_id in enumerate(ids):
        with Image.open(paths[image_id]) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.BICUBIC)
            pixels[row] = np.asarray(image)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(torch.float32).div(255.0).sub(0.5).div(0.5)
    return images.contiguous(), {image_id: row for row, image_id in enumerate(ids)}


def load_easy_vqa(
    vocab_path: str | Path, image_size: int = 64, max_length: int = 16
) -> tuple[VqaSplit, VqaSplit, list[str], WordPieceTokenizer]:
    """``(train, test, answers, tokenizer)`` for easy-VQA. The vocabulary is trained on
    the training questions and written to ``vocab_path`` unless it exists already."""
    easy_vqa = _require_easy_vqa()
    answers = list(easy_vqa.get_answers())
    answer_index = {answer: i for i, answer in enumerate(answers)}
    train_questions, train_answers, train_ids = easy_vqa.get_train_questions()
    vocab_path = Path(vocab_path)
    if not vocab_path.exists():
        build_wordpiece_vocab(train_questions, vocab_path)
    tokenizer = create_tokenizer(vocab_path, max_length=max_length)
    splits = []
    for questions, labels, image_ids, paths in (
        (train_questions, train_answers, train_ids, easy_vqa.get_train_image_paths()),
        (*easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths()),
    ):
        images, row_of = _load_images(paths, image_size)
        input_ids, attention_mask = tokenizer.encode_batch(list(questions))
        splits.append(
            VqaSplit(
                images=images,
                image_index=torch.tensor([row_of[i] for i in image_ids], dtype=torch.long),
                input_ids=input_ids,
                attention_mask=attention_mask,
                labels=torch.tensor([answer_index[a] for a in labels], dtype=torch.long),
            )
        )
    return splits[0], splits[1], answers, tokenizer


def _batches(count: int, batch_size: int, shuffle: bool, seed: int):
    order = list(range(count))
    if shuffle:
        random.Random(seed).shuffle(order)
    for start in range(0, count, batch_size):
        yield torch.tensor(order[start : start + batch_size], dtype=torch.long)


def shift_and_flip(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of ``images`` ``[N, C, H, W]`` with each image flipped left-right with
    probability 1/2 and shifted by a random whole number of pixels in ``[-max_shift,
    max_shift]`` along each axis; the uncovered border takes the image's top-left pixel
    (easy-VQA's plain background) rather than wrapping the shape around."""
    out = torch.empty_like(images)
    count, _, height, width = images.shape
    flips = torch.rand(count, generator=generator) < 0.5
    shifts = torch.randint(-max_shift, max_shift + 1, (count, 2), generator=generator).tolist()
    for i in range(count):
        image = images[i].flip(-1) if bool(flips[i]) else images[i]
        dy, dx = shifts[i]
        out[i] = images[i, :, :1, :1]  # the background colour
        out[i, :, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = image[
            :, max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
        ]
    return out


def train_vqa(
    model: MobiVqaVilt,
    train: VqaSplit,
    epochs: float = 2.0,
    batch_size: int = 64,
    lr: float = 5e-4,
    weight_decay: float = 0.01,
    warmup_fraction: float = 0.05,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    augment: bool = False,
    max_shift: int = 8,
    on_epoch_end: Callable[[int], None] | None = None,
) -> list[float]:
    """Train the whole model with cross-entropy over the answers (AdamW, linear warmup
    then cosine decay; ``epochs`` may be fractional). Returns the loss per logged step. The
    model's answers are then scored with a softmax (``model.answer_softmax``).

    ``augment``: each image of a batch is flipped left-right with probability 1/2 and
    shifted by up to ``max_shift`` pixels each way (:func:`shift_and_flip`): answers about
    colour and shape do not change, and a transformer trained from scratch on 4,000 images
    needs the extra views to learn shapes (easy-VQA questions never name a position).

    ``on_epoch_end(epochs_done)`` is called after each whole epoch but the last (e.g. to save
    the model, so that a long run cut short keeps what it learned)."""
    if epochs <= 0 or batch_size <= 0 or lr <= 0:
        raise InvalidInputError(f"epochs, batch_size and lr must be positive, got {epochs}, {batch_size}, {lr}")
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total_steps = max(1, int(epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    model.answer_softmax = True  # trained with cross-entropy over the answers: scored with a softmax
    losses: list[float] = []
    step = 0
    epoch = 0
    while step < total_steps:
        for rows in _batches(len(train), batch_size, shuffle=True, seed=seed + epoch):
            if step >= total_steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(
                    step, total_steps, max(1, int(warmup_fraction * total_steps)), lr, lr * 0.01
                )
            input_ids, attention_mask, pixel_values, labels = train.batch(rows)
            if augment:
                pixel_values = shift_and_flip(pixel_values, max_shift, generator)
            loss = F.cross_entropy(model(input_ids, attention_mask, pixel_values), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            if step % 50 == 0 or step == total_steps:
                losses.append(loss.item())
                if log is not None:
                    log(f"step {step}/{total_steps} loss {losses[-1]:.4f}")
        epoch += 1
        if on_epoch_end is not None and step < total_steps:
            on_epoch_end(epoch)
            model.train()
    model.eval()
    return losses


def exit_states(
    model: MobiVqaVilt, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The encoder states after each exit layer (a list aligned with
    ``model.exit_layers``), the states after ``model.predictor_layer`` and the key
    mask, with all optimisations off (no pruning)."""
    hidden, key_mask = model.embed(input_ids, attention_mask, pixel_values)
    states: list[torch.Tensor] = []
    predictor_states = hidden
    for number in range(1, model.exit_layers[-1] + 1):
        hidden = model.encoder.forward_layers(hidden, key_mask, number - 1, number)
        if number == model.predictor_layer:
            predictor_states = hidden
        if number in model.exit_layers:
            states.append(hidden)
    return states, predictor_states, key_mask


def train_exit_heads(
    model: MobiVqaVilt,
    train: VqaSplit,
    epochs: float = 1.0,
    batch_size: int = 128,
    lr: float = 1e-3,
    predictor_epochs: float = 1.0,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
) -> None:
    """Train the exit heads, then the exit predictor, with the backbone frozen (only
    ``model.exit_heads`` and ``model.exit_predictor`` change). Each head minimises the
    cross-entropy of its answers; the predictor's target is the earliest exit whose answer
    equals the full model's (:func:`earliest_agreeing_exit`), or "full model" (the last
    choice) when none does: it learns where stopping costs nothing, whatever the label.
    Calibrate its decision afterwards on held-out questions
    (:func:`calibrate_exit_predictor`)."""
    if not model.exit_layers:
        raise InvalidInputError("the model has no exit heads: call model.add_early_exits([...]) first")
    trainable = set(id(p) for p in model.exit_heads.parameters()) | set(
        id(p) for p in model.exit_predictor.parameters()
    )
    frozen = [p for p in model.parameters() if id(p) not in trainable]
    previous = [p.requires_grad for p in frozen]
    for param in frozen:
        param.requires_grad_(False)
    model.eval()  # the backbone's dropout stays off: its states are fixed inputs here
    try:
        for stage, parameters, stage_epochs in (
            ("exit heads", list(model.exit_heads.parameters()), epochs),
            ("exit predictor", list(model.exit_predictor.parameters()), predictor_epochs),
        ):
            steps_per_epoch = math.ceil(len(train) / batch_size)
            total_steps = max(1, int(stage_epochs * steps_per_epoch))
            optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
            step = 0
            epoch = 0
            while step < total_steps:
                for rows in _batches(len(train), batch_size, shuffle=True, seed=seed + 1000 + epoch):
                    if step >= total_steps:
                        break
                    for group in optimizer.param_groups:
                        group["lr"] = warmup_cosine(step, total_steps, 1, lr, lr * 0.01)
                    input_ids, attention_mask, pixel_values, labels = train.batch(rows)
                    with torch.no_grad():
                        states, predictor_states, key_mask = exit_states(model, input_ids, attention_mask, pixel_values)
                    if stage == "exit heads":
                        loss = sum(
                            F.cross_entropy(head(state), labels) for head, state in zip(model.exit_heads, states)
                        )
                    else:
                        with torch.no_grad():
                            full = full_model_answers(model, states[-1], key_mask)
                            target = earliest_agreeing_exit(model, states, full)
                        choice_logits = model.exit_predictor[0](predictor_states, key_mask, input_ids.shape[1])
                        loss = F.cross_entropy(choice_logits, target)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    if log is not None and (step % 50 == 0 or step == total_steps):
                        log(f"{stage}: step {step}/{total_steps} loss {loss.item():.4f}")
                epoch += 1
    finally:
        for param, flag in zip(frozen, previous):
            param.requires_grad_(flag)
        model.eval()


@torch.no_grad()
def full_model_answers(model: MobiVqaVilt, last_exit_states: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """The full model's top answer ``[batch]``, from the states after the last exit layer
    (:func:`exit_states`): the remaining layers, then the model's own head."""
    hidden = model.encoder.forward_layers(last_exit_states, key_mask, model.exit_layers[-1], model.num_layers)
    return model.answer_logits(hidden).argmax(dim=1)


@torch.no_grad()
def earliest_agreeing_exit(model: MobiVqaVilt, states: list[torch.Tensor], answers: torch.Tensor) -> torch.Tensor:
    """Per question the index of the first exit head whose top answer equals ``answers``
    (the full model's: the exit predictor's target; the labels: the earliest correct exit),
    else ``len(exit_layers)`` (run the full model)."""
    target = torch.full_like(answers, len(model.exit_layers))
    for index in reversed(range(len(states))):
        agrees = model.exit_heads[index](states[index]).argmax(dim=1) == answers
        target = torch.where(agrees, torch.full_like(target, index), target)
    return target


def hold_out(split: VqaSplit, fraction: float = 0.1, seed: int = 0) -> tuple[VqaSplit, VqaSplit]:
    """``(rest, held_out)``: the questions of a random ``fraction`` of the images held out
    (for calibrating the exit predictor on questions it was not trained on)."""
    if not 0.0 < fraction < 1.0:
        raise InvalidInputError(f"fraction must be between 0 and 1, got {fraction}")
    images = int(split.image_index.max()) + 1
    chosen = torch.randperm(images, generator=torch.Generator().manual_seed(seed))[: max(1, round(fraction * images))]
    held = torch.zeros(images, dtype=torch.bool)
    held[chosen] = True
    mask = held[split.image_index]
    return split.subset(torch.nonzero(~mask).reshape(-1)), split.subset(torch.nonzero(mask).reshape(-1))


@torch.no_grad()
def _exit_table(model: MobiVqaVilt, split: VqaSplit, batch_size: int) -> dict[str, torch.Tensor]:
    """Per question (all optimisations off): the predictor's choice probabilities, each
    exit's answer and the full model's answer, and the label."""
    probabilities, exit_answers, full, labels = [], [], [], []
    for rows in _batches(len(split), batch_size, shuffle=False, seed=0):
        input_ids, attention_mask, pixel_values, batch_labels = split.batch(rows)
        states, predictor_states, key_mask = exit_states(model, input_ids, attention_mask, pixel_values)
        choice_logits = model.exit_predictor[0](predictor_states, key_mask, input_ids.shape[1])
        probabilities.append(choice_logits.softmax(dim=1))
        heads = zip(model.exit_heads, states)
        exit_answers.append(torch.stack([head(state).argmax(dim=1) for head, state in heads], dim=1))
        full.append(full_model_answers(model, states[-1], key_mask))
        labels.append(batch_labels)
    full_answers = torch.cat(full)
    return {
        "probabilities": torch.cat(probabilities),
        "answers": torch.cat([torch.cat(exit_answers), full_answers[:, None]], dim=1),  # [Q, exits + 1]
        "labels": torch.cat(labels),
    }


def _layers_of(model: MobiVqaVilt) -> torch.Tensor:
    return torch.tensor(model.exit_layers + [model.num_layers], dtype=torch.float64)


@torch.no_grad()
def calibrate_exit_predictor(
    model: MobiVqaVilt, held_out: VqaSplit, min_agreement: float = 0.99, batch_size: int = 256
) -> dict:
    """Set ``model.predictor_risk`` to the highest risk (fewest layers) up to which the
    predictor's exits give the full model's answer on at least ``min_agreement`` of the
    ``held_out`` questions (not the test split: :func:`hold_out`); every lower risk agrees
    as much, so the choice is no lucky spot. Returns that risk, the agreement, the accuracy
    and the mean number of layers on ``held_out``. ``mobilevt.save_weights`` stores the
    risk with the exits."""
    if not model.exit_layers:
        raise InvalidInputError("the model has no exit heads: call model.add_early_exits([...]) first")
    if not 0.0 <= min_agreement <= 1.0:
        raise InvalidInputError(f"min_agreement must be in [0, 1], got {min_agreement}")
    if len(held_out) == 0:
        raise InvalidInputError("the held-out split has no questions: hold out a larger fraction of the images")
    table = _exit_table(model.eval(), held_out, batch_size)
    later = later_choices_probability(table["probabilities"])
    layers = _layers_of(model)
    # the decisions change only where the risk passes one of these values (sorted)
    values = torch.unique(later[:, :-1])
    chosen = _decide(table, later, layers, 0.0)  # risk 0: every question runs the full model
    for index in range(values.numel()):  # a higher risk exits earlier: keep the last that agrees enough
        # halfway to the next value: the same decisions on these questions, with the widest
        # margin for the rounding of another batch size or runtime
        value = values[index]
        upper = values[index + 1] if index + 1 < values.numel() else torch.clamp(value, min=1.0)
        middle = (value + upper) / 2  # float32: rounds to a value the rule compares exactly
        risk = float(middle if middle > value else torch.nextafter(value, value + 1))
        result = _decide(table, later, layers, risk)
        if result["agreement"] < min_agreement:
            break
        chosen = result
    model.predictor_risk = chosen["risk"]
    return chosen


def _decide(table: dict, later: torch.Tensor, layers: torch.Tensor, risk: float) -> dict:
    """The exit predictor's decision at ``risk`` (as the model takes it) on a table."""
    choice = first_exit_within_risk(later, risk)
    answers = table["answers"].gather(1, choice[:, None])[:, 0]
    return {
        "risk": float(risk),
        "agreement": float((answers == table["answers"][:, -1]).double().mean()),
        "accuracy": float((answers == table["labels"]).double().mean()),
        "mean_layers": float(layers[choice].mean()),
    }


@torch.no_grad()
def exit_oracle(model: MobiVqaVilt, split: VqaSplit, batch_size: int = 256) -> dict:
    """What a perfect exit decision would give on ``split``: every question stops at its
    earliest exit that gives the full model's answer (``agreeing``: the full model's
    accuracy at the fewest layers) or, more optimistic, its earliest correct exit
    (``correct``: the full model where none is). Accuracy and mean layers of each."""
    table = _exit_table(model.eval(), split, batch_size)
    layers = _layers_of(model)
    oracle = {}
    for name, reference in (("agreeing", table["answers"][:, -1]), ("correct", table["labels"])):
        matches = table["answers"] == reference[:, None]
        matches[:, -1] = True  # the full model is the fallback
        choice = matches.int().argmax(dim=1)  # the first True
        answers = table["answers"].gather(1, choice[:, None])[:, 0]
        oracle[name] = {
            "accuracy": float((answers == table["labels"]).double().mean()),
            "mean_layers": float(layers[choice].mean()),
        }
    return oracle


@torch.no_grad()
def evaluate_on_split(
    model: nn.Module,
    split: VqaSplit,
    batch_size: int = 256,
    limit: int | None = None,
    answer_groups: dict[str, Sequence[int]] | None = None,
) -> dict:
    """Accuracy (top answer) of ``model`` on ``split`` (the first ``limit`` questions),
    and, for a :class:`MobiVqaVilt`, the mean number of layers run. With
    ``answer_groups`` (name -> answer indices, e.g. easy-VQA's colours, shapes, yes/no:
    :func:`easy_vqa_answer_groups`), also ``by_group``: the accuracy on the questions whose
    true answer is in each group."""
    count = len(split) if limit is None else min(limit, len(split))
    correct = 0
    layers_run = 0.0
    names = list(answer_groups or {})
    # answer index -> group; sized for the groups too (a group may name answers absent from the split)
    largest = max([int(split.labels.max())] + [int(i) for name in names for i in answer_groups[name]])
    group_of = torch.full((largest + 1,), -1, dtype=torch.long)
    for index, name in enumerate(names):
        group_of[torch.as_tensor(list(answer_groups[name]), dtype=torch.long)] = index
    group_correct = torch.zeros(len(names) + 1, dtype=torch.long)
    group_count = torch.zeros(len(names) + 1, dtype=torch.long)
    for rows in _batches(count, batch_size, shuffle=False, seed=0):
        input_ids, attention_mask, pixel_values, labels = split.batch(rows)
        if isinstance(model, MobiVqaVilt):
            logits, exit_layer = model.forward_with_exit(input_ids, attention_mask, pixel_values)
            layers_run += float(exit_layer.to(torch.float64).sum())
        else:
            logits = model(input_ids, attention_mask, pixel_values)
        right = logits.argmax(dim=1) == labels
        correct += int(right.sum())
        groups = group_of[labels]  # -1 (no group) lands in the last slot
        group_count += torch.bincount(groups % (len(names) + 1), minlength=len(names) + 1)
        group_correct += torch.bincount(groups[right] % (len(names) + 1), minlength=len(names) + 1)
    result = {"accuracy": correct / count, "mean_layers": layers_run / count, "questions": count}
    if names:
        result["by_group"] = {
            name: (int(group_correct[i]) / int(group_count[i]) if group_count[i] > 0 else float("nan"))
            for i, name in enumerate(names)
        }
    return result


def easy_vqa_answer_groups(answers: Sequence[str]) -> dict[str, list[int]]:
    """easy-VQA's answers by question kind: ``shape`` (circle, rectangle, triangle),
    ``yes/no`` and ``colour`` (the rest)."""
    shapes, yes_no = {"circle", "rectangle", "triangle"}, {"yes", "no"}
    return {
        "shape": [i for i, a in enumerate(answers) if a in shapes],
        "yes/no": [i for i, a in enumerate(answers) if a in yes_no],
        "colour": [i for i, a in enumerate(answers) if a not in shapes | yes_no],
    }

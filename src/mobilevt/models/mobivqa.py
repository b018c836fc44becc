"""MobiVQA optimisations (Cao et al., MobiSys 2022), switched at run time by plain typed
attributes set through :meth:`MobiVqaVilt.set_early_exit` and
:meth:`~MobiVqaVilt.set_token_pruning` (TorchScript methods as well); with
both off, ``forward`` runs exactly the code above (bit-identical logits):

- early exit: :meth:`~MobiVqaVilt.add_early_exits` adds answer heads after
  chosen layers and MobiVQA's exit predictor (an MLP on the mean question and image
  states after an early layer that picks the exit layer up front). Modes: confidence
  threshold (each image stops at its first confident exit; a batch stops computing when
  all have exited, so every image gets its batch-1 answer), predictor, or a fixed exit.
- question-guided image-token pruning: after a chosen layer, keep the image patches the
  question attends to most (that layer's text-to-image attention, averaged over heads and
  real question tokens: MobiVQA's and PuMer's rule), ``ceil(ratio * valid patches)`` of
  them, and run the later layers on fewer tokens.

Runtimes: TorchScript runs every mode. ``torch.export`` (and what is lowered from it)
takes pruning and the fixed exit, whose control flow is fixed by the settings at export
time; the confidence and predictor exits decide from the data whether to run the next
layers, which under ``torch.export`` becomes a ``torch.cond`` after each exit layer
(``ONNX`` ``If``; see :mod:`mobilevt.export.vilt` for what each format takes).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from ..model_kind import ModelKind
from ..registry import ModelEntry, register_model
from ..weights.entries import PreprocessConfig, Weights
from ..weights.vilt_layouts import VILT_CHECKPOINTS
from .vilt import ARCH_FIELDS, ViltArch, ViltForQuestionAnswering, VqaHead


class ExitMode(IntEnum):
    """How :class:`MobiVqaVilt` decides where an image leaves the encoder."""

    OFF = 0  # run every layer
    CONFIDENCE = 1  # the first exit head whose top answer score reaches the threshold
    PREDICTOR = 2  # the exit layer MobiVQA's predictor picks after an early layer
    FIXED = 3  # one chosen exit layer for every image

    @property
    def label(self) -> str:
        """The mode's name in reports and on the command line."""
        return {0: "off", 1: "confidence-threshold", 2: "exit-predictor", 3: "fixed"}[int(self)]


class ExitHead(nn.Module):
    """An intermediate answer head: final-norm + pooler (tanh) + :class:`VqaHead` on the
    text [CLS] state after an encoder layer (MobiVQA's early-exit classifier)."""

    def __init__(self, dim: int, num_answers: int, norm_eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.pooler = nn.Linear(dim, dim)
        self.head = VqaHead(dim, num_answers)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.pooler(self.norm(hidden[:, 0]))))


class ExitPredictor(nn.Module):
    """MobiVQA's exit predictor: an MLP on the mean-pooled question tokens and the
    mean-pooled image tokens after an early layer; output ``i`` scores "exit at the
    ``i``-th exit layer", the last output "run the whole model"."""

    def __init__(self, dim: int, num_choices: int, hidden_dim: int = 128):
        super().__init__()
        self.fc1 = nn.Linear(2 * dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, num_choices)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor, num_text: int) -> torch.Tensor:
        """Choice logits ``[batch, num_choices]`` from ``hidden`` ``[batch, tokens, dim]``
        (text tokens first) and its key mask ``[batch, 1, 1, tokens]``."""
        valid = key_mask[:, 0, 0, :].to(hidden.dtype)[..., None]  # [B, N, 1]
        text_sum = (hidden[:, :num_text] * valid[:, :num_text]).sum(dim=1)
        text_mean = text_sum / valid[:, :num_text].sum(dim=1).clamp(min=1.0)
        image_sum = (hidden[:, num_text:] * valid[:, num_text:]).sum(dim=1)
        image_mean = image_sum / valid[:, num_text:].sum(dim=1).clamp(min=1.0)
        return self.fc2(self.act(self.fc1(torch.cat([text_mean, image_mean], dim=1))))


def later_choices_probability(probabilities: torch.Tensor) -> torch.Tensor:
    """``[batch, choices]``: for each choice of the exit predictor the summed probability
    of the choices after it (0 for the last), summed from the end so that it is exactly 0
    where those are 0."""
    from_end = probabilities.flip(dims=[1]).cumsum(dim=1).flip(dims=[1])
    return torch.cat([from_end[:, 1:], torch.zeros_like(from_end[:, :1])], dim=1)


def first_exit_within_risk(later: torch.Tensor, risk: float) -> torch.Tensor:
    """``[batch]``: the first choice whose later-choices probability (``later``, from
    :func:`later_choices_probability`) is below ``risk``; the last choice (the full model)
    when none is."""
    within = later[:, :-1] < risk
    always = torch.ones_like(within[:, :1])
    return torch.cat([within, always], dim=1).to(torch.long).argmax(dim=1)  # argmax: the first maximum


def text_to_image_attention(attention: torch.Tensor, key_mask: torch.Tensor, num_text: int) -> torch.Tensor:
    """``[batch, image_tokens]``: the attention probabilities ``[batch, heads, N, N]`` from
    the valid text tokens (queries ``< num_text``) to each image token (keys
    ``>= num_text``), averaged over heads and valid text tokens (MobiVQA's and PuMer's
    question-guided importance score)."""
    text_valid = key_mask[:, 0, 0, :num_text].to(attention.dtype)  # [B, T]
    per_query = attention[:, :, :num_text, num_text:].mean(dim=1)  # [B, T, I]
    summed = (per_query * text_valid[..., None]).sum(dim=1)
    return summed / text_valid.sum(dim=1, keepdim=True).clamp(min=1.0)


def keep_ratio_millionths(keep_ratio: float) -> int:
    """``keep_ratio`` in millionths, rounded, in ``1 .. 10**6``: token pruning's exact
    integer form of the ratio."""
    return min(1000000, max(1, int(round(keep_ratio * 1000000.0))))


def prune_image_tokens(
    hidden: torch.Tensor, key_mask: torch.Tensor, attention: torch.Tensor, num_text: int, keep_ratio: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the text tokens, the image [CLS] and the ``ceil(keep_ratio * valid patches)``
    image patches with the highest text-to-image attention; drop the other patches.

    ``hidden`` ``[B, N, d]`` is laid out text, image [CLS], patches; ``key_mask``
    ``[B, 1, 1, N]`` marks valid tokens (padded patches are never kept as valid);
    ``attention`` ``[B, heads, N, N]`` are the probabilities of the layer that produced
    ``hidden``. The output has a fixed ``ceil(keep_ratio * patches)`` patches per image
    (shapes do not depend on the data, so the pruned model exports); an image with
    fewer valid patches keeps its ``ceil(keep_ratio * valid)`` best ones valid and the
    rest of its slots masked out. Kept patches are ordered by decreasing score.

    ``keep_ratio`` counts in millionths (rounded, at least one): the ceilings are exact
    integer arithmetic, ``(count * millionths + 999999) // 1000000``, so that the number of
    kept patches stays a symbolic function of the image size in ``torch.export`` and ONNX
    (a Python ``math.ceil`` would fix it to the example's size).

    Returns the pruned ``hidden``, its key mask and the kept patch indices ``[B, k]``
    (0 = the first patch, i.e. token ``num_text + 1``).
    """
    num_patches = hidden.shape[1] - num_text - 1
    millionths = keep_ratio_millionths(keep_ratio)
    keep = (num_patches * millionths + 999999) // 1000000  # in 1..num_patches: 1 <= millionths <= 10**6
    scores = text_to_image_attention(attention, key_mask, num_text)[:, 1:]  # patches only
    patch_valid = key_mask[:, 0, 0, num_text + 1 :]
    scores = scores.masked_fill(patch_valid.logical_not(), float("-inf"))
    kept = scores.topk(keep, dim=1).indices  # [B, k], best first
    gathered = hidden[:, num_text + 1 :].gather(1, kept[..., None].expand(-1, -1, hidden.shape[2]))
    # per image: ceil(ratio * its valid patches) of the k slots stay valid, i.e. the ranks r
    # with r * 10**6 < valid * millionths (a comparison: a division of these large integers
    # is done in float32 by some exporters, which rounds 36999999 up to 37000000)
    valid_count = patch_valid.sum(dim=1).to(torch.long)
    rank = torch.arange(keep, device=hidden.device).to(torch.long)
    kept_valid = (rank[None, :] * 1000000 < valid_count[:, None] * millionths) & patch_valid.gather(1, kept)
    new_hidden = torch.cat([hidden[:, : num_text + 1], gathered], dim=1)
    new_mask = torch.cat([key_mask[:, 0, 0, : num_text + 1], kept_valid], dim=1)
    return new_hidden, new_mask[:, None, None, :], kept


class MobiVqaVilt(ViltForQuestionAnswering):
    """ViLT for VQA with MobiVQA's early exit and question-guided token pruning, all off
    until switched on (then ``forward`` runs :meth:`encode_with_exit` after the embeddings)."""

    def __init__(self, *args: Any, **kwargs: Any):
        """Arguments as :class:`ViltForQuestionAnswering` (arch, num_answers, answers,
        drop_rate, attn_drop_rate)."""
        super().__init__(*args, **kwargs)
        # Exit heads and the predictor exist once add_early_exits() is called; a
        # ModuleList (empty or one predictor) keeps checkpoints without them loadable.
        self.exit_layers = []  # typed for TorchScript below the class
        self.exit_heads = nn.ModuleList()
        self.exit_predictor = nn.ModuleList()
        self.predictor_layer: int = 0
        # the exit predictor's decision: exit where the predicted chance that a deeper exit is
        # needed is below it (calibrated on held-out questions by calibrate_exit_predictor)
        self.predictor_risk: float = 0.5
        self.exit_mode: int = ExitMode.OFF.value  # an ExitMode value (an int for TorchScript)
        self.exit_threshold: float = 1.0
        self.exit_softmax: bool = True
        self.fixed_exit_layer: int = 0
        self.prune_layer: int = 0
        self.prune_keep_ratio: float = 1.0

    def encode_and_answer(self, hidden: torch.Tensor, key_mask: torch.Tensor, num_text: int) -> torch.Tensor:
        """:meth:`ViltForQuestionAnswering.encode_and_answer` with the MobiVQA
        optimisations that are switched on (``forward`` calls it after the embeddings)."""
        if self.exit_mode != ExitMode.OFF.value or self.prune_layer > 0:
            return self.encode_with_exit(hidden, key_mask, num_text)[0]
        return self.answer_logits(self.encoder(hidden, key_mask, num_outputs=1))

    @torch.jit.ignore
    def add_early_exits(
        self, exit_layers: Sequence[int], predictor_layer: int = 2, predictor_hidden: int = 128
    ) -> None:
        """Add an answer head after each of ``exit_layers`` (layer numbers, 1 = after the
        first layer, each below ``num_layers``) and an exit predictor reading the states
        after layer ``predictor_layer`` (at most the first exit layer). The heads start as
        copies of the final norm, pooler and answer head; train them (and the predictor)
        with the backbone frozen, e.g. with :func:`mobilevt.training.vqa.train_exit_heads`."""
        layers = sorted(set(int(layer) for layer in exit_layers))
        if not layers or layers[0] < 1 or layers[-1] >= self.num_layers:
            raise InvalidInputError(
                f"exit_layers must be layer numbers in 1..{self.num_layers - 1} (the last layer is the model's own "
                f"head), got {list(exit_layers)}"
            )
        if not 1 <= predictor_layer <= layers[0]:
            raise InvalidInputError(
                f"predictor_layer must be in 1..{layers[0]} (at most the first exit layer), got {predictor_layer}"
            )
        dim = self.arch.hidden_size
        device = self.pooler.weight.device
        heads = []
        for _ in layers:
            head = ExitHead(dim, self.num_answers, self.arch.layer_norm_eps).to(device)
            head.norm.load_state_dict(self.norm.state_dict())
            head.pooler.load_state_dict(self.pooler.state_dict())
            head.head.load_state_dict(self.head.state_dict())
            heads.append(head)
        self.exit_layers = layers
        self.exit_heads = nn.ModuleList(heads)
        self.exit_predictor = nn.ModuleList([ExitPredictor(dim, len(layers) + 1, predictor_hidden).to(device)])
        self.predictor_layer = int(predictor_layer)

    @torch.jit.export
    def set_early_exit(
        self, threshold: float | None = None, predictor: bool = False, layer: int = 0, softmax: bool = True
    ) -> None:
        """Choose the early-exit mode (at most one; all off by default):

        - ``threshold``: confidence exit. Each image stops at the first exit layer whose
          top answer score (``softmax`` probability, or sigmoid for BCE-trained heads
          such as VQAv2 ViLT's with ``softmax=False``) is ``>= threshold``; the batch stops
          computing when every image has exited (per-image results equal batch-1 results).
        - ``predictor=True``: the exit predictor picks each image's exit layer after
          ``predictor_layer``; layers run up to the deepest pick of the batch.
        - ``layer``: a fixed exit after that exit layer (static: exports with torch.export).
        """
        chosen = int(threshold is not None) + int(predictor) + int(layer > 0)
        if chosen > 1:
            raise InvalidInputError(
                "choose one early-exit mode: a confidence threshold, the exit predictor, or a fixed layer"
            )
        if chosen == 1 and len(self.exit_layers) == 0:
            raise InvalidInputError(
                "this model has no exit heads: call model.add_early_exits([...]) (and train them) first"
            )
        if layer > 0 and layer not in self.exit_layers:
            raise InvalidInputError(
                "fixed exit layer " + str(layer) + " has no exit head; exit layers are " + str(self.exit_layers)
            )
        self.exit_softmax = softmax
        self.fixed_exit_layer = layer
        if threshold is not None:
            self.exit_mode = ExitMode.CONFIDENCE.value
            self.exit_threshold = threshold
        elif predictor:
            self.exit_mode = ExitMode.PREDICTOR.value
        elif layer > 0:
            self.exit_mode = ExitMode.FIXED.value
        else:
            self.exit_mode = ExitMode.OFF.value

    @torch.jit.export
    def set_token_pruning(self, layer: int = 0, keep_ratio: float = 1.0) -> None:
        """Question-guided image-token pruning: after layer number ``layer`` keep the
        ``ceil(keep_ratio * valid patches)`` image patches (and the image [CLS]) that the
        question's tokens attend to most in that layer (``keep_ratio`` to the nearest
        millionth, the ceiling exact); ``layer=0`` turns it off."""
        if layer < 0 or layer >= len(self.encoder.layers):
            raise InvalidInputError(
                "pruning layer must be in 1.." + str(len(self.encoder.layers) - 1) + " (0 = off), got " + str(layer)
            )
        if layer > 0 and not (keep_ratio > 0.0 and keep_ratio <= 1.0):
            raise InvalidInputError("keep_ratio must be in (0, 1], got " + str(keep_ratio))
        self.prune_layer = layer
        self.prune_keep_ratio = keep_ratio

    def _exit_scores(self, logits: torch.Tensor) -> torch.Tensor:
        if self.exit_softmax:
            return logits.softmax(dim=-1).amax(dim=-1)
        return logits.sigmoid().amax(dim=-1)

    @torch.jit.export
    def forward_with_exit(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer logits ``[batch, num_answers]`` with the switched-on optimisations, and
        the number of layers each image went through before its answer ``[batch]``."""
        if pixel_values is None:
            raise InvalidInputError(
                "ViLT needs pixel_values: [batch, 3, height, width] images, e.g. from ViltProcessor"
            )
        hidden, key_mask = self.embed(input_ids, attention_mask, pixel_values, pixel_mask, token_type_ids)
        return self.encode_with_exit(hidden, key_mask, input_ids.shape[1])

    def encode_with_exit(
        self, hidden: torch.Tensor, key_mask: torch.Tensor, num_text: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward_with_exit` after the embeddings."""
        data_dependent = self.exit_mode == ExitMode.CONFIDENCE.value or self.exit_mode == ExitMode.PREDICTOR.value
        if data_dependent and not torch.jit.is_scripting():
            if _is_exporting():  # data-dependent exits: torch.cond instead of Python control flow
                return self._encode_with_exit_cond(hidden, key_mask, num_text)
        batch = hidden.shape[0]
        num_layers = len(self.encoder.layers)
        mode = self.exit_mode
        logits = torch.zeros(batch, self.num_answers, dtype=hidden.dtype, device=hidden.device)
        exited = torch.zeros(batch, dtype=torch.bool, device=hidden.device)
        exit_layer = torch.full((batch,), num_layers, dtype=torch.long, device=hidden.device)
        picked = torch.full((batch,), num_layers, dtype=torch.long, device=hidden.device)
        done, stopped = 0, False
        for stop in self._stops():
            hidden, key_mask = self._run_layers(hidden, key_mask, done, stop, num_text)
            done = stop
            if mode == ExitMode.PREDICTOR.value and stop == self.predictor_layer:
                picked = self._predicted_exit_layers(hidden, key_mask, num_text)
            for exit_index, head in enumerate(self.exit_heads):
                if mode != ExitMode.OFF.value and self.exit_layers[exit_index] == stop:
                    if mode == ExitMode.FIXED.value:
                        if stop == self.fixed_exit_layer:
                            logits = head(hidden)
                            exit_layer = torch.full_like(exit_layer, stop)
                            stopped = True  # static: exportable
                    else:
                        if mode == ExitMode.CONFIDENCE.value:
                            head_logits = head(hidden)
                            take = (self._exit_scores(head_logits) >= self.exit_threshold) & exited.logical_not()
                        else:
                            take = picked == stop
                            head_logits = head(hidden) if bool(take.any()) else logits
                        logits = torch.where(take[:, None], head_logits, logits)
                        exit_layer = torch.where(take, torch.full_like(exit_layer, stop), exit_layer)
                        exited = exited | take
                        stopped = bool(exited.all())
            if stopped:
                break
        if not stopped:  # the last layer ran: images that did not exit take the final answer
            final = self.answer_logits(hidden)
            logits = (
                final
                if mode == ExitMode.OFF.value or mode == ExitMode.FIXED.value
                else torch.where(exited[:, None], logits, final)
            )
        return logits, exit_layer

    def _stops(self) -> list[int]:
        """The layer numbers after which :meth:`encode_with_exit` looks at the exits (the
        predictor's layer, the exit layers, the last layer), in order."""
        stops: list[int] = [len(self.encoder.layers)]
        if self.exit_mode != ExitMode.OFF.value:
            stops = self.exit_layers + stops
        if self.exit_mode == ExitMode.PREDICTOR.value and self.predictor_layer not in self.exit_layers:
            stops = [self.predictor_layer] + stops  # add_early_exits keeps it at most the first exit
        return stops

    def _predicted_exit_layers(self, hidden: torch.Tensor, key_mask: torch.Tensor, num_text: int) -> torch.Tensor:
        """The exit layer the predictor picks for each image ``[batch]``: the first exit at
        which the predicted probability that a deeper one is needed (the later choices'
        probabilities summed) is below ``predictor_risk``, else the full model. A lower
        risk runs deeper and agrees more with the full model; 0 never exits early."""
        choice = torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)
        for predictor in self.exit_predictor:  # one, when exits were added
            probabilities = predictor(hidden, key_mask, num_text).softmax(dim=1)
            choice = first_exit_within_risk(later_choices_probability(probabilities), self.predictor_risk)
        table = torch.tensor(self.exit_layers + [len(self.encoder.layers)], dtype=torch.long, device=hidden.device)
        return table[choice]

    def _run_layers(
        self, hidden: torch.Tensor, key_mask: torch.Tensor, start: int, end: int, num_text: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layers number ``start + 1`` .. ``end`` as :meth:`encode_with_exit` runs them
        (pruning after ``prune_layer``, the last layer for the text [CLS] only)."""
        num_layers = len(self.encoder.layers)
        for index, layer in enumerate(self.encoder.layers):
            number = index + 1
            if number > start and number <= end:
                if number == self.prune_layer:
                    hidden, attention = layer.forward_with_attention(hidden, key_mask)
                    hidden, key_mask, _ = prune_image_tokens(
                        hidden, key_mask, attention, num_text, self.prune_keep_ratio
                    )
                elif number == num_layers:
                    hidden = layer.forward_queries(hidden, 1, key_mask)
                else:
                    hidden = layer(hidden, key_mask)
        return hidden, key_mask

    @torch.jit.unused
    def _encode_with_exit_cond(
        self, hidden: torch.Tensor, key_mask: torch.Tensor, num_text: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward_with_exit` of the confidence and predictor exits for
        ``torch.export``: after each exit layer a ``torch.cond`` on "every image of the
        batch has its answer" either returns or runs on to the next exit, so the exported
        program skips the later layers as eager does (ONNX ``If``, ExecuTorch ``cond``).
        The exit heads run at every reached exit layer (eager skips a predictor-mode head
        no image picked: same answers)."""
        batch = hidden.shape[0]
        num_layers = len(self.encoder.layers)
        exits = list(self.exit_layers)
        logits = torch.zeros(batch, self.num_answers, dtype=hidden.dtype, device=hidden.device)
        exited = torch.zeros(batch, dtype=torch.bool, device=hidden.device)
        exit_layer = torch.full((batch,), num_layers, dtype=torch.long, device=hidden.device)
        picked = torch.full((batch,), num_layers, dtype=torch.long, device=hidden.device)
        start = 0
        if self.exit_mode == ExitMode.PREDICTOR.value:
            hidden, key_mask = self._run_layers(hidden, key_mask, 0, self.predictor_layer, num_text)
            picked = self._predicted_exit_layers(hidden, key_mask, num_text)
            start = self.predictor_layer
        hidden, key_mask = self._run_layers(hidden, key_mask, start, exits[0], num_text)

        def after_exit(index: int, hidden, key_mask, logits, exited, exit_layer, picked):
            number = exits[index]
            head_logits = self.exit_heads[index](hidden)
            if self.exit_mode == ExitMode.CONFIDENCE.value:
                take = (self._exit_scores(head_logits) >= self.exit_threshold) & exited.logical_not()
            else:
                take = picked == number
            logits = torch.where(take[:, None], head_logits, logits)
            exit_layer = torch.where(take, torch.full_like(exit_layer, number), exit_layer)
            exited = exited | take

            def stop(hidden, key_mask, logits, exited, exit_layer, picked):
                return logits.clone(), exit_layer.clone()

            def go_on(hidden, key_mask, logits, exited, exit_layer, picked):
                end = exits[index + 1] if index + 1 < len(exits) else num_layers
                hidden, key_mask = self._run_layers(hidden, key_mask, number, end, num_text)
                if index + 1 < len(exits):
                    return after_exit(index + 1, hidden, key_mask, logits, exited, exit_layer, picked)
                final = self.answer_logits(hidden)
                return torch.where(exited[:, None], logits, final), exit_layer.clone()

            return torch.cond(exited.all(), stop, go_on, (hidden, key_mask, logits, exited, exit_layer, picked))

        return after_exit(0, hidden, key_mask, logits, exited, exit_layer, picked)


def _is_exporting() -> bool:
    return torch.compiler.is_exporting()


# TorchScript cannot infer the element type of an empty list attribute, and with
# ``from __future__ import annotations`` a class-body annotation would be a string it does
# not parse: give it the type object.
MobiVqaVilt.__annotations__["exit_layers"] = list[int]


# ---------------------------------------------------------------------------------------
# The registered VQA model: ViLT-B/32 with MobiVQA's optimisations available (and off)


def build_vilt_b32_vqa(
    num_answers: int = 3129,
    answers: Sequence[str] = (),
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    exit_layers: Sequence[int] = (),
    predictor_layer: int = 2,
    predictor_hidden: int = 128,
    predictor_risk: float = 0.5,
    **arch_fields,
) -> ViltForQuestionAnswering:
    """ViLT-B/32 with the VQAv2 head; ``arch_fields`` override :class:`ViltArch` fields
    (``hidden_size=``, ``num_layers=`` ...). ``exit_layers`` adds MobiVQA's exit heads
    (:meth:`MobiVqaVilt.add_early_exits`), whose predictor decides with ``predictor_risk``."""
    unknown = sorted(set(arch_fields) - ARCH_FIELDS)
    if unknown:
        raise InvalidInputError(
            f"unknown ViLT option(s) {', '.join(unknown)}; architecture fields are {', '.join(sorted(ARCH_FIELDS))}, "
            "other options num_answers, answers, drop_rate, attn_drop_rate, exit_layers, predictor_layer, "
            "predictor_hidden, predictor_risk"
        )
    model = MobiVqaVilt(
        ViltArch(**arch_fields),
        num_answers=num_answers,
        answers=answers,
        drop_rate=drop_rate,
        attn_drop_rate=attn_drop_rate,
    )
    if exit_layers:
        model.add_early_exits(exit_layers, predictor_layer, predictor_hidden)
        model.predictor_risk = float(predictor_risk)
    return model


# A square 384x384 input (shorter side 384, center crop) for profiling and fixed-size
# export; the exact ViLT sizing is ``model.image_size_rule``.
VILT_SQUARE_PREPROCESS = PreprocessConfig(
    input_size=(384, 384), resize_size=384, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
)

VILT_B32_VQA_WEIGHTS = Weights(
    model="vilt_b32_vqa",
    tag="hf_vqav2",
    source="hf-hub:dandelin/vilt-b32-finetuned-vqa",
    layout="hf",
    preprocess=VILT_SQUARE_PREPROCESS,
    num_classes=3129,
    dataset="VQAv2",
    score=71.26,
    metric="VQA score % (test-dev)",
    paper_source="ViLT (arXiv:2102.03334) Table 2: 71.26 VQA score on VQAv2 test-dev",
)

register_model(
    ModelEntry(
        name="vilt_b32_vqa",
        builder=build_vilt_b32_vqa,
        family="vilt",
        default_preprocess=VILT_SQUARE_PREPROCESS,
        weights=(VILT_B32_VQA_WEIGHTS,),
        kind=ModelKind.VQA,
        checkpoints=VILT_CHECKPOINTS,
    )
)

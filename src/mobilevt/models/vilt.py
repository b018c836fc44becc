"""ViLT (Vision-and-Language Transformer) for visual question answering.

ViLT-B/32 (Kim et al., arXiv:2102.03334) embeds the question with BERT-style text
embeddings and the image with a ViT-B/32 patch projection, and runs one pre-norm ViT
encoder over both token sets; the pooled text [CLS] token feeds the VQAv2 answer
classifier (3129 answers).

Differences from the reference implementations, none of which changes the logits:

- every image patch is kept, in row-major order. ViLT samples patches at random
  (``torch.multinomial``); with all patches kept the sample is only a permutation of the
  image tokens, which attention over the keys and the text-[CLS] pooler do not see.
  Keeping them in order makes the model deterministic and exportable;
- padded patches (``pixel_mask``) stay in the sequence, masked out as attention keys,
  instead of being gathered away: shapes then depend only on the input size;
- the position embeddings are interpolated to each image's valid patch grid with
  tensor index math (the weights of ``F.interpolate(..., "bilinear", align_corners=True)``)
  rather than a Python loop over data-dependent sizes, so that ``torch.jit.script``,
  ``torch.export`` (dynamic height and width) and ONNX export all work.

Only the text [CLS] output is pooled, so the last layer computes keys and values of all
tokens but queries, attention output and MLP for that one token (same logits, ~7% fewer
MACs for ViLT-B/32 at 384x384). The encoder is a plain loop over layers
(:meth:`ViltEncoder.forward_layers`), and each layer can return its attention
probabilities, so that intermediate answer heads or question-guided image-token pruning
can run between layers.

MobiVQA's early exit and token pruning (Cao et al., MobiSys 2022) live beside this
model, in :mod:`mobilevt.models.mobivqa`; the registered ``vilt_b32_vqa`` is built with
them available (and off).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ..data.vilt_preprocess import VILT_IMAGE_SIZE_RULE
from ..errors import InvalidInputError
from ..layers.vit import PreNormEncoderLayer
from ..model_kind import ModelKind


@dataclass(frozen=True)
class ViltArch:
    """Architecture of a ViLT model (the fields of transformers' ``ViltConfig`` that
    shape the network)."""

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    patch_size: int = 32
    # Pre-training image size: the position embeddings cover its patch grid (384 / 32 = 12).
    image_size: int = 384
    in_chans: int = 3
    vocab_size: int = 30522
    max_text_len: int = 40
    type_vocab_size: int = 2  # BERT segment ids
    modality_vocab_size: int = 2  # 0 = text, 1 = image (NLVR2 models have a third)
    qkv_bias: bool = True
    # transformers' ViltConfig uses 1e-12 everywhere; dandelin/ViLT trained its ViT
    # norms with 1e-6 (timm's ViT) and the BERT text norm with 1e-12.
    layer_norm_eps: float = 1e-12
    text_layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads != 0:
            raise InvalidInputError(f"hidden_size {self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.image_size % self.patch_size != 0:
            raise InvalidInputError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for name in ("hidden_size", "num_layers", "mlp_dim", "patch_size", "vocab_size", "max_text_len"):
            if getattr(self, name) <= 0:
                raise InvalidInputError(f"ViltArch.{name} must be positive, got {getattr(self, name)}")

    @property
    def position_grid(self) -> int:
        return self.image_size // self.patch_size


ARCH_FIELDS = frozenset(f.name for f in fields(ViltArch))


def _align_corners_weights(valid: torch.Tensor, out_size: int, in_size: int) -> torch.Tensor:
    """``[batch, out_size, in_size]`` interpolation matrices: row ``i`` of image ``b``
    holds the weights with which ``F.interpolate(mode="bilinear", align_corners=True)``
    resizing ``in_size`` samples to ``valid[b]`` samples mixes the inputs for output
    ``i``; rows ``i >= valid[b]`` are zero (the padding).

    The arithmetic follows PyTorch's kernel in float32: ``scale = (in - 1) / (out - 1)``,
    ``src = scale * i``, ``i0 = floor(src)``, ``i1 = min(i0 + 1, in - 1)``.
    """
    positions = torch.arange(out_size, device=valid.device).to(torch.float32)
    valid_f = valid.to(torch.float32)
    numerator = torch.full_like(valid_f, float(in_size - 1))
    scale = numerator / (valid_f - 1.0).clamp(min=1.0)  # a division, as the kernel does
    source = positions[None, :] * scale[:, None]
    index0 = source.floor().clamp(max=float(in_size - 1))
    frac = (source - index0).clamp(0.0, 1.0)
    index1 = (index0 + 1.0).clamp(max=float(in_size - 1))
    inputs = torch.arange(in_size, device=valid.device).to(torch.float32)
    weights = (inputs == index0[..., None]).to(torch.float32) * (1.0 - frac)[..., None]
    weights = weights + (inputs == index1[..., None]).to(torch.float32) * frac[..., None]
    inside = (positions[None, :] < valid_f[:, None]).to(torch.float32)
    return weights * inside[..., None]


class ViltTextEmbeddings(nn.Module):
    """BERT embeddings: word + segment + position, then LayerNorm."""

    def __init__(self, arch: ViltArch, drop: float = 0.0):
        super().__init__()
        self.max_text_len = arch.max_text_len
        self.word_embeddings = nn.Embedding(arch.vocab_size, arch.hidden_size)
        self.position_embeddings = nn.Embedding(arch.max_text_len, arch.hidden_size)
        self.token_type_embeddings = nn.Embedding(arch.type_vocab_size, arch.hidden_size)
        self.norm = nn.LayerNorm(arch.hidden_size, eps=arch.text_layer_norm_eps)
        self.drop = nn.Dropout(drop)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        if not torch.jit.is_tracing() and seq_len > self.max_text_len:
            raise InvalidInputError(
                "the question has "
                + str(seq_len)
                + " tokens, this ViLT takes at most "
                + str(self.max_text_len)
                + ": tokenize with truncation=True, max_length="
                + str(self.max_text_len)
            )
        x = self.word_embeddings(input_ids)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings.weight[:seq_len]
        return self.drop(self.norm(x))


class ViltImageEmbeddings(nn.Module):
    """Patch projection, image [CLS] token and position embeddings interpolated to each
    image's valid (unpadded) patch grid."""

    def __init__(self, arch: ViltArch, drop: float = 0.0):
        super().__init__()
        self.in_chans = arch.in_chans
        self.patch_size = arch.patch_size
        self.position_grid = arch.position_grid
        self.patch_embed = nn.Conv2d(arch.in_chans, arch.hidden_size, arch.patch_size, stride=arch.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, arch.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + arch.position_grid**2, arch.hidden_size))
        self.drop = nn.Dropout(drop)

    def patch_mask(self, pixel_mask: torch.Tensor | None, batch: int, grid_h: int, grid_w: int) -> torch.Tensor:
        """``[batch, grid_h, grid_w]`` int64, 1 for patches of real pixels: the pixel
        mask sampled at the patch grid with nearest interpolation (as ViLT does)."""
        if pixel_mask is None:
            return torch.ones(batch, grid_h, grid_w, dtype=torch.long, device=self.cls_token.device)
        sampled = F.interpolate(pixel_mask[:, None].to(torch.float32), size=(grid_h, grid_w), mode="nearest")
        return sampled[:, 0].to(torch.long)

    def interpolated_pos_embed(
        self, valid_rows: torch.Tensor, valid_cols: torch.Tensor, grid_h: int, grid_w: int
    ) -> torch.Tensor:
        """``[batch, grid_h * grid_w, dim]``: the pre-training position grid resized
        (bilinear, align_corners=True) to ``valid_rows[b] x valid_cols[b]`` patches and
        zero-padded to ``grid_h x grid_w``."""
        grid = self.position_grid
        dim = self.pos_embed.shape[-1]
        batch = valid_rows.shape[0]
        dtype = self.pos_embed.dtype
        rows_weights = _align_corners_weights(valid_rows, grid_h, grid).to(dtype)  # [B, gh, G]
        cols_weights = _align_corners_weights(valid_cols, grid_w, grid).to(dtype)  # [B, gw, G]
        table = self.pos_embed[0, 1:].reshape(grid, grid * dim)  # [y, (x, dim)]
        by_rows = (rows_weights @ table).reshape(batch, grid_h, grid, dim)  # [B, gh, x, dim]
        resized = cols_weights[:, None] @ by_rows  # [B, gh, gw, dim]
        return resized.reshape(batch, grid_h * grid_w, dim)

    def forward(
        self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image tokens ``[batch, 1 + patches, dim]`` ([CLS] first, patches row-major)
        and their validity ``[batch, 1 + patches]`` (bool)."""
        if not torch.jit.is_tracing() and (pixel_values.dim() != 4 or pixel_values.shape[1] != self.in_chans):
            raise InvalidInputError(
                "pixel_values must be [batch, "
                + str(self.in_chans)
                + ", height, width], got shape "
                + str(list(pixel_values.shape))
            )
        patches = self.patch_embed(pixel_values)
        batch, dim, grid_h, grid_w = patches.shape
        valid = self.patch_mask(pixel_mask, batch, grid_h, grid_w)
        valid_rows = valid[:, :, 0].sum(dim=1)
        valid_cols = valid[:, 0, :].sum(dim=1)
        pos = self.interpolated_pos_embed(valid_rows, valid_cols, grid_h, grid_w)
        patches = patches.flatten(2).transpose(1, 2) + pos
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(batch, -1, -1)
        tokens = self.drop(torch.cat([cls, patches], dim=1))
        cls_valid = torch.ones(batch, 1, dtype=torch.bool, device=valid.device)
        return tokens, torch.cat([cls_valid, valid.flatten(1) != 0], dim=1)


class ViltEncoder(nn.Module):
    """The multimodal encoder: pre-norm ViT layers over text and image tokens."""

    def __init__(self, arch: ViltArch, drop: float = 0.0, attn_drop: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            PreNormEncoderLayer(
                arch.hidden_size,
                arch.num_heads,
                arch.mlp_dim,
                qkv_bias=arch.qkv_bias,
                norm_eps=arch.layer_norm_eps,
                drop=drop,
                attn_drop=attn_drop,
            )
            for _ in range(arch.num_layers)
        )

    def forward_layers(
        self, hidden: torch.Tensor, attn_mask: torch.Tensor | None, start: int, end: int
    ) -> torch.Tensor:
        """Run layers ``start`` .. ``end - 1`` on ``hidden`` ``[batch, tokens, dim]``."""
        for index, layer in enumerate(self.layers):
            if index >= start and index < end:
                hidden = layer(hidden, attn_mask)
        return hidden

    def forward(
        self, hidden: torch.Tensor, attn_mask: torch.Tensor | None = None, num_outputs: int = -1
    ) -> torch.Tensor:
        """All layers. With ``num_outputs > 0`` the last layer computes only the first
        ``num_outputs`` tokens (the pooled text [CLS]: ~7% of ViLT-B/32's MACs saved)."""
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            if index == last and num_outputs > 0:
                hidden = layer.forward_queries(hidden, num_outputs, attn_mask)
            else:
                hidden = layer(hidden, attn_mask)
        return hidden


class VqaHead(nn.Module):
    """Linear(d, 2d) -> LayerNorm -> GELU -> Linear(2d, answers) on the pooled [CLS]."""

    def __init__(self, dim: int, num_answers: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * 2)
        self.norm = nn.LayerNorm(dim * 2)  # eps 1e-5: nn.LayerNorm's default in both references
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * 2, num_answers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(pooled))))


class ViltForQuestionAnswering(nn.Module):
    """ViLT with the VQA answer classifier.

    ``forward(input_ids, attention_mask, pixel_values, pixel_mask)`` takes the tensors of
    transformers' ``ViltProcessor`` (names and shapes as in ``ViltForQuestionAnswering``)
    and returns the answer logits ``[batch, num_answers]``; ``model.answers[i]`` is the
    answer of logit ``i`` when the checkpoint named them (empty otherwise).

    Args:
        arch: architecture (ViLT-B/32 by default).
        num_answers: classifier outputs (3129 for VQAv2).
        answers: the answer vocabulary, ``num_answers`` strings, or empty if unknown.
        drop_rate: dropout on embeddings and residual branches (fine-tuning; ViLT used 0.1).
        attn_drop_rate: attention-probability dropout.
    """

    kind = ModelKind.VQA  # what export, the CLI and training dispatch on

    def __init__(
        self,
        arch: ViltArch = ViltArch(),
        num_answers: int = 3129,
        answers: Sequence[str] = (),
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
    ):
        super().__init__()
        if num_answers <= 0:
            raise InvalidInputError(f"num_answers must be positive, got {num_answers}")
        if answers and len(answers) != num_answers:
            raise InvalidInputError(f"{len(answers)} answers given for a classifier of {num_answers} outputs")
        self.arch = arch
        self.num_answers = num_answers
        self.answers: list[str] = [str(a) for a in answers]
        self.image_size_rule = VILT_IMAGE_SIZE_RULE
        # how the answers are scored: sigmoid for ViLT's VQA head (binary cross-entropy against
        # soft scores), softmax for a model trained with cross-entropy over the answers
        self.answer_softmax: bool = False
        self.text_embeddings = ViltTextEmbeddings(arch, drop_rate)
        self.image_embeddings = ViltImageEmbeddings(arch, drop_rate)
        self.modality_embeddings = nn.Embedding(arch.modality_vocab_size, arch.hidden_size)
        self.encoder = ViltEncoder(arch, drop_rate, attn_drop_rate)
        self.norm = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)
        self.pooler = nn.Linear(arch.hidden_size, arch.hidden_size)
        self.head = VqaHead(arch.hidden_size, num_answers)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """ViLT's initialisation: normal(0.02) weights and embeddings, zero biases,
        truncated normal(0.02) position embeddings and [CLS] token."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.image_embeddings.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.image_embeddings.cls_token, std=0.02)

    @property
    def num_layers(self) -> int:
        return len(self.encoder.layers)

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder input ``[batch, text + 1 + patches, dim]`` (text tokens, image
        [CLS], patches row-major) and its key mask ``[batch, 1, 1, tokens]`` (bool, True
        where a token may be attended to)."""
        if not torch.jit.is_tracing() and input_ids.shape[0] != pixel_values.shape[0]:
            raise InvalidInputError(
                "input_ids and pixel_values must have the same batch size, got "
                + str(input_ids.shape[0])
                + " and "
                + str(pixel_values.shape[0])
            )
        text = self.text_embeddings(input_ids, token_type_ids) + self.modality_embeddings.weight[0]
        image, image_valid = self.image_embeddings(pixel_values, pixel_mask)
        image = image + self.modality_embeddings.weight[1]
        if attention_mask is None:
            text_valid = torch.ones(input_ids.shape, dtype=torch.bool, device=input_ids.device)
        else:
            text_valid = attention_mask != 0
        key_mask = torch.cat([text_valid, image_valid], dim=1)
        return torch.cat([text, image], dim=1), key_mask[:, None, None, :]

    def answer_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Answer logits from encoder output ``hidden`` (its first token, the text [CLS],
        is pooled); the final norm is per token, so it is applied to that token only."""
        pooled = torch.tanh(self.pooler(self.norm(hidden[:, 0])))
        return self.head(pooled)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Answer logits ``[batch, num_answers]``.

        Args:
            input_ids: ``[batch, text]`` token ids (BERT uncased vocabulary).
            attention_mask: ``[batch, text]``, 1 for real tokens, 0 for padding.
            pixel_values: ``[batch, 3, height, width]`` normalised images.
            pixel_mask: ``[batch, height, width]``, 1 on real pixels, 0 on padding.
            token_type_ids: ``[batch, text]`` BERT segment ids (zeros when omitted).
        """
        if pixel_values is None:
            raise InvalidInputError(
                "ViLT needs pixel_values: [batch, 3, height, width] images, e.g. from ViltProcessor"
            )
        hidden, key_mask = self.embed(input_ids, attention_mask, pixel_values, pixel_mask, token_type_ids)
        return self.encode_and_answer(hidden, key_mask, input_ids.shape[1])

    def encode_and_answer(self, hidden: torch.Tensor, key_mask: torch.Tensor, num_text: int) -> torch.Tensor:
        """The paper's pass after the embeddings: encode, pool the text [CLS], classify.
        ``num_text`` is the number of text tokens at the front of ``hidden`` (MobiVQA's
        token pruning, which overrides this method, needs it)."""
        hidden = self.encoder(hidden, key_mask, num_outputs=1)  # only the text [CLS] is pooled
        return self.answer_logits(hidden)

    def example_inputs(
        self, batch_size: int = 1, image_size: tuple[int, int] = (384, 384), text_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask, pixel_values, pixel_mask)`` of the given sizes
        (a full-length question by default): for export, profiling and benchmarks."""
        length = self.arch.max_text_len if text_length is None else text_length
        device = self.pooler.weight.device
        height, width = image_size
        return (
            torch.zeros(batch_size, length, dtype=torch.long, device=device),
            torch.ones(batch_size, length, dtype=torch.long, device=device),
            torch.zeros(batch_size, self.arch.in_chans, height, width, device=device),
            torch.ones(batch_size, height, width, dtype=torch.long, device=device),
        )

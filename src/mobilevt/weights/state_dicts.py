"""State-dict helpers every checkpoint family shares: unwrapping training checkpoints,
the mismatch error and its message."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import MobilevtError

# Wrappers that training scripts put around a state dict, and key prefixes that
# DistributedDataParallel / torch.compile add.
_WRAPPER_KEYS = ("model_state_dict", "state_dict", "model", "module")
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointMismatchError(MobilevtError, RuntimeError):
    """The checkpoint does not fit the model; the message names the keys, and
    ``missing`` / ``unexpected`` / ``mis_shaped`` list them all."""

    def __init__(
        self,
        message: str,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mis_shaped: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.mis_shaped = mis_shaped or []


# mobilevt transformer-layer module -> transformers' name for it (ViT-style layers, used by
# MobileViT v1 and ViLT)
HF_TRANSFORMER_LAYER_KEYS = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}


def unwrap_state_dict(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """Take the tensor dict out of a training checkpoint and strip DDP/compile prefixes."""
    state = checkpoint
    for _ in range(2):  # e.g. {"state_dict": {"module.x": ...}}
        tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
        if tensors and len(tensors) >= len(state) // 2:
            break
        for key in _WRAPPER_KEYS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
        else:
            break
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    if not out:
        raise CheckpointMismatchError(
            "the checkpoint holds no tensors; top-level entries: " + ", ".join(map(str, list(checkpoint)[:10]))
        )
    return out


def format_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def mismatch_lines(
    model_name: str,
    layout: str,
    missing: list[str],
    unexpected: list[str],
    mis_shaped: list[str],
    fix: str | None = None,
) -> list[str]:
    """The lines of a "checkpoint does not fit" message (any family): the fix, when one is
    known, on the first line, then the keys."""
    lines = [f"checkpoint ({layout} layout) does not fit model {model_name!r}" + (f"; {fix}." if fix else ":")]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {format_keys(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {format_keys(unexpected)}")
    if mis_shaped:
        lines.append(f"  mis-shaped ({len(mis_shaped)}): {format_keys(mis_shaped, 6)}")
    return lines

"""Argparse value types: every numeric or path option is checked when the command line is
parsed, so a bad value is one line naming the option and what it allows, never a traceback
from deep inside a run. Kept free of torch so that ``mobilevt --help`` starts fast."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Callable


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (batch sizes, counts, sizes)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (worker processes, warm-up rounds; 0 = none)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def int_range(low: int, high: int) -> Callable[[str], int]:
    """A whole number in [low, high] (an ONNX opset, a layer index)."""

    def parse(text: str) -> int:
        value = _integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    parse.__name__ = f"int_{low}_to_{high}"
    return parse


def fraction(text: str) -> float:
    """A ratio in (0, 1] (the share of image tokens kept)."""
    value = _number(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {value:g}")
    return value


def probability(text: str) -> float:
    """A score threshold in [0, 1]."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}")
    return value


def existing_file(text: str) -> str:
    """A path to a file that exists."""
    if not os.path.isfile(os.path.expanduser(text)):
        what = "a folder, not a file" if os.path.isdir(os.path.expanduser(text)) else "no such file"
        raise argparse.ArgumentTypeError(f"{text!r}: {what}")
    return os.path.expanduser(text)


def existing_dir(text: str) -> str:
    """A path to a folder that exists."""
    if not os.path.isdir(os.path.expanduser(text)):
        what = "a file, not a folder" if os.path.isfile(os.path.expanduser(text)) else "no such folder"
        raise argparse.ArgumentTypeError(f"{text!r}: {what}")
    return os.path.expanduser(text)


def existing_path(text: str) -> str:
    """A file or folder that exists (a dataset given either way)."""
    if not os.path.exists(os.path.expanduser(text)):
        raise argparse.ArgumentTypeError(f"{text!r}: no such file or folder")
    return os.path.expanduser(text)


def writable_target(text: str) -> str:
    """A file to write: a name, in a folder that exists or can be made (not an existing folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file name, got an empty string")
    # a Core ML .mlpackage is a folder that an export replaces whole
    if os.path.isdir(os.path.expanduser(text)) and not text.rstrip("/").endswith(".mlpackage"):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder: give a file name")
    return os.path.expanduser(text)


def folder_target(text: str) -> str:
    """A folder to write into: not an existing file."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder name, got an empty string")
    if os.path.isfile(os.path.expanduser(text)):
        raise argparse.ArgumentTypeError(f"{text!r} is a file: give a folder")
    return os.path.expanduser(text)


def comma_list(text: str) -> list[str]:
    """Comma-separated names, at least one."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return parts


def key_value(text: str) -> str:
    """A recipe override, ``KEY=VALUE`` (``epochs=5``, ``optim.lr=1e-3``)."""
    key, equals, _ = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. epochs=5), got {text!r}")
    return text


def json_object(text: str) -> dict:
    """A JSON object given inline, e.g. ``'{"num_hidden_layers": 2}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at character {exc.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object {{...}}, got {text!r}")
    return value


_DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``xpu[:N]`` (checked for existence when used)."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


# the opsets torch's two ONNX exporters write (TorchScript-based up to 20, dynamo from 18)
ONNX_OPSET = int_range(9, 23)

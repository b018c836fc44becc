"""``mobilevt`` command line: ``models``, ``predict``, ``evaluate``, ``export``, ``train``, ``bench``, ``vqa``,
``segment``, ``detect``.

Only the command that runs is imported: ``mobilevt --help``, ``--version`` and a mistyped command
answer without loading torch."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import MobilevtError
from ..version import __version__


@dataclass(frozen=True)
class Command:
    name: str
    module: str  # mobilevt.cli.<module>, imported only when the command runs
    configure: str  # its function that adds the arguments to the subparser
    help: str


COMMANDS = (
    Command("models", "models", "configure_models_parser", "table of every model: params, MACs, accuracy, weights"),
    Command("predict", "classify", "configure_predict_parser", "top-k ImageNet classes of images or folders"),
    Command("evaluate", "classify", "configure_evaluate_parser", "top-1/top-5 on an ImageFolder tree or ILSVRC val"),
    Command(
        "export",
        "export",
        "configure_export_parser",
        "export a model to a deployment format, verified against eager on real photos and timed",
    ),
    Command("train", "train", "configure_train_parser", "train or fine-tune from a YAML recipe (built-in: digits ...)"),
    Command(
        "bench",
        "bench",
        "configure_bench_parser",
        "latency of variants x backends vs timm; ViLT (vilt_b32_vqa) vs transformers, with MobiVQA settings",
    ),
    Command("vqa", "vqa", "configure_vqa_parser", "answer a question about an image (ViLT)"),
    Command("segment", "segment", "configure_segment_parser", "semantic segmentation masks and overlays, or mIoU"),
    Command("detect", "detect", "configure_detect_parser", "object detection drawn on images, or COCO mAP"),
)


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line on stderr (what is wrong, and where the help is), exit status 2."""

    def error(self, message: str):
        message = " ".join(message.split())  # one line, whatever the value held
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# mobilevt's messages name the Python keywords (``weights=PATH``); on the command line the
# user typed flags (``--weights PATH``)
CLI_FLAGS = {
    "weights": "--weights",
    "vocab_file": "--vocab",
    "check_images": "--check-images",
    "calibration": "--calibration",
    "image_size": "--image-size",
    "max_batch": "--max-batch",
}
_KEYWORD = re.compile(r"\b(" + "|".join(CLI_FLAGS) + r")=(\S*)")


def in_cli_words(message: str) -> str:
    """``message`` with each ``keyword=VALUE`` of the Python API as the command line's ``--flag VALUE``."""
    return _KEYWORD.sub(lambda m: f"{CLI_FLAGS[m[1]]} {m[2]}".rstrip(), message)


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser with the arguments of ``commands`` (default: every command); the other
    commands are listed with their help only."""
    parser = OneLineParser(prog="mobilevt", description="MobileViT models for mobile and edge devices")
    parser.add_argument("--version", action="version", version=f"mobilevt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        if commands is None or command.name in commands:
            module = importlib.import_module(f"mobilevt.cli.{command.module}")
            getattr(module, command.configure)(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    requested = [word for word in argv[:1] if word in {c.name for c in COMMANDS}]
    args = build_parser(requested).parse_args(argv)
    try:
        return args.func(args)
    except MobilevtError as exc:
        # A wrong name, path, file or option: one line saying what and how to fix it.
        message = " ".join(in_cli_words(str(exc)).split())
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

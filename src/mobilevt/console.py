"""Where mobilevt's own progress lines go while the libraries it drives are kept quiet.

Inside :func:`native_output_to`, everything written to file descriptor 2 and to
``sys.stderr`` (ExecuTorch's C++ log lines, torch's and other libraries' logging and
warnings, whenever their handlers were made) goes to a log file; mobilevt's progress bar and
stage lines write to :func:`terminal`, the stderr the command started with."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

_terminal: TextIO | None = None


def terminal() -> TextIO:
    """The user's terminal (stderr): inside :func:`native_output_to` the one saved on entry."""
    return _terminal if _terminal is not None else sys.stderr


def _terminal_fd() -> int:
    """The terminal's descriptor: nested, the saved one, not the outer block's log; fd 2 when
    stderr has none (a test's captured stream)."""
    try:
        return terminal().fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return 2


@contextlib.contextmanager
def native_output_to(log_path: Path) -> Iterator[None]:
    """Send what native runtimes and third-party libraries print to ``log_path`` for the
    block; an empty log is removed afterwards."""
    global _terminal
    sys.stderr.flush()
    terminal_fd = os.dup(_terminal_fd())
    saved_terminal, saved_stderr, saved_showwarning = _terminal, sys.stderr, warnings.showwarning
    try:
        with (
            os.fdopen(terminal_fd, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="replace") as term,
            open(log_path, "a", buffering=1, encoding="utf-8", errors="replace") as log,
        ):
            os.dup2(log.fileno(), 2)  # C and C++ writers, and handlers holding the first sys.stderr
            _terminal, sys.stderr = term, log

            def to_log(message, category, filename, lineno, file=None, line=None):  # whoever records warnings
                log.write(warnings.formatwarning(message, category, filename, lineno, line))

            warnings.showwarning = to_log
            try:
                yield
            finally:
                warnings.showwarning = saved_showwarning
                sys.stderr, _terminal = saved_stderr, saved_terminal
                log.flush()
                saved_stderr.flush()  # what handlers holding it wrote goes to the log, not the terminal
                os.dup2(term.fileno(), 2)
    finally:
        if log_path.is_file() and log_path.stat().st_size == 0:  # nothing printed: no empty file left
            log_path.unlink()

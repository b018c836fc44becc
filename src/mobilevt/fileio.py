"""File writing: atomic (readers see the old file or the complete new one, never a part),
and a full disk is one :class:`DiskFullError` naming the path, not a traceback."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import MobilevtError

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# torch's serializer (and other C++ writers) report a full disk without its errno ("enforce
# fail at inline_container.cc ... unexpected pos"): a failed write with less than this left
# on the file system is taken to be a full disk too
_NEARLY_FULL_BYTES = 1 << 20


class DiskFullError(MobilevtError, OSError):
    """A write failed because the file system is full (or the user's quota is spent)."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]"
        return str(self.strerror)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _is_disk_full(exc: BaseException, folder: Path) -> bool:
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    free = _free_bytes(folder)
    return free is not None and free < _NEARLY_FULL_BYTES


def disk_full_error(path: Path, needed: int | None = None, written: int | None = None) -> DiskFullError:
    free = _free_bytes(path.parent)
    facts = []
    if needed is not None:
        facts.append(f"it needs {_megabytes(needed)}")
    elif written:
        facts.append(f"{_megabytes(written)} were written before the disk filled")
    if free is not None:
        facts.append(f"{_megabytes(free)} free in {path.parent}")
    detail = f" ({', '.join(facts)})" if facts else ""
    return DiskFullError(
        errno.ENOSPC, f"no space left on the disk to write {path}{detail}: free some space or write to another disk"
    )


@contextlib.contextmanager
def disk_full_as_error(path: str | os.PathLike, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk while writing ``path`` into a :class:`DiskFullError` (for writes
    that are not atomic, such as appending a log row)."""
    try:
        yield
    except DiskFullError:
        raise
    except BaseException as exc:
        if _is_disk_full(exc, Path(path).parent):
            raise disk_full_error(Path(path), needed) from exc
        raise


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on any
    error it is removed. ``needed``: the bytes to be written, where the caller knows them
    (named in the error when the disk is full)."""
    path = Path(path)
    with disk_full_as_error(path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes 0600 files (and writers may recreate the file): usual permissions
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as exc:
        full = _is_disk_full(exc, path.parent)  # judged before the partial file is removed
        written = _size(tmp)
        if os.path.exists(tmp):
            os.unlink(tmp)
        if full and not isinstance(exc, DiskFullError):
            raise disk_full_error(path, needed, written) from exc
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory output (e.g. a Core ML ``.mlpackage``):
    the yielded path does not exist yet; once written it replaces ``path``."""
    path = Path(path)
    with disk_full_as_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    target = staging / path.name
    old = staging / ".previous"
    try:
        with disk_full_as_error(path):
            yield target
            if path.exists():
                os.replace(path, old)
            os.replace(target, path)
    except BaseException:
        if old.exists() and not path.exists():  # the earlier output back in place
            os.replace(old, path)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: setting it briefly again would race other threads


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)

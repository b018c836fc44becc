"""A full disk is one line naming the path (exit status 1 on the command line), and
nothing partial is left behind: by injected faults, and on a real 4 MB tmpfs."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mobilevt import fileio
from mobilevt.fileio import DiskFullError, atomic_path, disk_full_as_error


def test_enospc_while_writing_is_a_disk_full_error_and_the_partial_file_is_gone(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(DiskFullError, match=r"no space left on the disk to write .*model\.onnx \(it needs 2\.0 MB"):
        with atomic_path(target, needed=2_000_000) as tmp:
            tmp.write_bytes(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_quota_error_counts_too(tmp_path):
    with pytest.raises(DiskFullError):
        with disk_full_as_error(tmp_path / "steps.csv"):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")


def test_a_writer_that_loses_the_errno_is_judged_by_the_space_left(tmp_path, monkeypatch):
    """torch's serializer reports a full disk as RuntimeError('... unexpected pos ...')."""
    failure = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 319808 vs 319704")
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(4 << 20, 4 << 20, 0))
    with pytest.raises(DiskFullError, match="last.pt"):
        with atomic_path(tmp_path / "last.pt"):
            raise failure
    # with room to spare the same error is a bug, and keeps its type
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(1 << 40, 0, 1 << 40))
    with pytest.raises(RuntimeError, match="unexpected pos") as raised:
        with atomic_path(tmp_path / "last.pt"):
            raise failure
    assert not isinstance(raised.value, DiskFullError)
    assert list(tmp_path.iterdir()) == []


def _on_tmpfs(size: str, command: str, folder: Path) -> subprocess.CompletedProcess:
    """``command`` with a fresh tmpfs of ``size`` mounted on ``folder`` (in a private mount
    namespace: nothing to unmount afterwards), then the folder's listing after ``--ls--``."""
    folder.mkdir()
    script = f"mount -t tmpfs -o size={size} tmpfs {folder} || exit 99; {command}; rc=$?; echo --ls--; ls -A {folder}"
    script += "; exit $rc"
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _skip_without_tmpfs(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount a private tmpfs")
    probe = _on_tmpfs("1m", "true", tmp_path / "probe")
    if probe.returncode == 99 or probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (user namespaces or mount refused): {probe.stderr.strip()[:200]}")


def test_export_onto_a_full_tmpfs_is_one_line_and_leaves_nothing(tmp_path):
    _skip_without_tmpfs(tmp_path)
    disk = tmp_path / "disk"
    command = f"{sys.executable} -m mobilevt export mobilevit_xxs --weights none --format onnx -o {disk}/s.onnx"
    result = _on_tmpfs("4m", command, disk)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no space left on the disk to write {disk}/s.onnx"), last
    assert result.stdout.split("--ls--")[1].split() == []


def test_training_onto_a_full_tmpfs_names_the_last_good_checkpoint(tmp_path):
    """24 MB holds one last.pt (16 MB) but not a second one beside it (the atomic write): the
    save at step 4 fails, and the message points at the checkpoint of step 2."""
    _skip_without_tmpfs(tmp_path)
    disk = tmp_path / "disk"
    overrides = (
        "epochs=2 save_every_steps=2 data.workers=0 sampler.image_size=32 sampler.min_size=32 "
        f"sampler.max_size=48 sampler.num_scales=2 output_dir={disk}/run"
    )
    result = _on_tmpfs("24m", f"{sys.executable} -m mobilevt train --config digits {overrides}", disk)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    error, hint = result.stderr.strip().splitlines()[-2:]
    assert error.startswith(f"error: no space left on the disk to write {disk}/run/last.pt"), error
    assert hint.startswith(f"stopped; last good checkpoint {disk}/run/last.pt (epoch 0, step 2); resume with: "), hint
    assert hint.endswith("--resume")
    listing = result.stdout.split("--ls--")[1].split()
    assert listing == ["run"]

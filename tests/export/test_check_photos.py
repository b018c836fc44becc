"""Every export is checked on real photos with its own extra installed and nothing else: the
six check photos ship inside the package (not in scikit-learn or scikit-image)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from mobilevt.export.report import packaged_photos

# an interpreter in which the packages that used to provide the photos cannot be imported
_WITHOUT_SAMPLE_PACKAGES = """
import sys
sys.modules.update(sklearn=None, skimage=None)  # as if not installed: import fails, find_spec is None
from mobilevt.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_shipped_photos_are_six_real_rgb_photos():
    photos = packaged_photos()
    assert len(photos) == 6
    for photo in photos:
        assert photo.dtype.is_floating_point is False and photo.shape[0] == 3
        assert 200 <= max(photo.shape[1:]) <= 384 and photo.float().std() > 10  # a photo, not a flat card


def test_export_needs_neither_scikit_learn_nor_scikit_image(tmp_path):
    out = tmp_path / "xxs.onnx"
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SAMPLE_PACKAGES, "export", "mobilevit_xxs", "--weights", "none"]
        + ["--format", "onnx", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "on 6 photos" in result.stdout and out.is_file(), result.stdout


@pytest.mark.slow
def test_the_wheel_carries_the_photos_and_their_licence(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip()[-200:]}")
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("mobilevt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    photos = {n for n in names if n.startswith("mobilevt/data/check_photos/") and n.endswith(".jpg")}
    assert len(photos) == 6 and "mobilevt/data/check_photos/LICENSE.md" in names

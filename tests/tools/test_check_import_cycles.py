"""tools/check_import_cycles.py: mobilevt has no import cycle, and the checker finds one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "tools" / "check_import_cycles.py"


def _check(package: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECKER), str(package)], capture_output=True, text=True, timeout=120)


def test_mobilevt_has_no_import_cycle():
    result = _check(ROOT / "src" / "mobilevt")
    assert result.returncode == 0, result.stdout
    assert " 0 cycles" in result.stdout


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_cycle_through_a_function_level_import_and_a_reexport_is_found(tmp_path):
    package = tmp_path / "pkg"
    _write(package / "__init__.py", "from .low import helper\n")
    _write(package / "sub" / "__init__.py", "from .high import build\n")
    _write(package / "low.py", "def helper():\n    from .sub import build  # lazy, still a cycle\n    return build\n")
    _write(package / "sub" / "high.py", "from .. import helper\n\ndef build():\n    return helper\n")
    _write(package / "free.py", "from . import low\n")
    result = _check(package)
    assert result.returncode == 1
    assert "import cycle: pkg.low <-> pkg.sub.high" in result.stdout
    assert "free" not in result.stdout

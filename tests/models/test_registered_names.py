"""Every registered model name is written out in the source, so that grep finds where
it is defined."""

from __future__ import annotations

from pathlib import Path

import mobilevt

MODELS = Path(__file__).resolve().parents[2] / "src" / "mobilevt" / "models"


def test_every_registered_name_is_written_out_in_the_model_files():
    source = "".join(path.read_text() for path in MODELS.glob("*.py"))
    names = mobilevt.list_models()
    missing = [name for name in names if f'"{name}"' not in source]
    assert not missing, f"names built at run time, not written out: {missing}"

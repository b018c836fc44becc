"""Logit parity with timm's MobileViT for every variant, loading a checkpoint saved the
way timm saves it (``save_for_hf``: model.safetensors + pytorch_model.bin + config.json)."""

from __future__ import annotations

import pytest
import torch
from conftest import PARITY_ATOL, max_abs, randomize_

import mobilevt

timm = pytest.importorskip("timm")
from timm.models._hub import save_for_hf  # noqa: E402

# timm has MobileViT v1 and v2 (MobileViTv3 is tested against its authors' code in test_mobilevitv3.py)
VARIANTS = [
    n
    for n in mobilevt.list_models(kind="image-classification")
    if mobilevt.get_model_entry(n).family in ("mobilevit", "mobilevitv2")
]


@pytest.mark.parametrize("name", VARIANTS)
def test_logits_match_timm(name, tmp_path):
    reference = randomize_(timm.create_model(name), seed=hash(name) % 1000)
    save_for_hf(reference, str(tmp_path), safe_serialization="both")
    model = mobilevt.create_model(name, weights=str(tmp_path)).eval()
    assert model.preprocess == mobilevt.get_model_entry(name).get_weights("timm_in1k").preprocess

    generator = torch.Generator().manual_seed(0)
    for height, width in [(256, 256), (224, 320)]:
        x = torch.rand(2, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = reference(x)
            actual = model(x)
        assert expected.abs().max() > 0.05, "reference logits are degenerate; the comparison would be vacuous"
        assert max_abs(actual, expected) <= PARITY_ATOL, (name, height, width)


def test_pickle_checkpoint_from_timm_folder(tmp_path):
    """The same folder's pytorch_model.bin (a pickle) loads to identical weights."""
    reference = randomize_(timm.create_model("mobilevit_xxs"))
    save_for_hf(reference, str(tmp_path), safe_serialization="both")
    from_bin = mobilevt.create_model("mobilevit_xxs", weights=str(tmp_path / "pytorch_model.bin"))
    from_st = mobilevt.create_model("mobilevit_xxs", weights=str(tmp_path / "model.safetensors"))
    for (k, a), (_, b) in zip(from_bin.state_dict().items(), from_st.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("name", ["mobilevit_s", "mobilevitv2_100"])
def test_params_equal_timm(name):
    ours = sum(p.numel() for p in mobilevt.create_model(name).parameters())
    theirs = sum(p.numel() for p in timm.create_model(name).parameters())
    assert ours == theirs

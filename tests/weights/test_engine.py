"""The one checkpoint engine's rules, held for every model family alike: a different
``num_classes`` keeps everything but the class-sized head (one warning); a checkpoint of
another variant is refused naming its keys and the variant that fits; output names come
from the checkpoint, else from the weights' data set."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

import mobilevt
from mobilevt import CheckpointMismatchError
from mobilevt.engine import family_of

TINY_VILT = dict(
    hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, vocab_size=64, max_text_len=8, image_size=64, patch_size=32
)
# (model, its options, a smaller variant of the same family, outputs to fine-tune to)
FAMILIES = [
    ("mobilevit_xs", {}, "mobilevit_xxs", 10),
    ("deeplabv3_mobilevit_xs", {}, "deeplabv3_mobilevit_xxs", 3),
    ("ssdlite_mobilevit_xs", {}, "ssdlite_mobilevit_xxs", 4),
    ("vilt_b32_vqa", TINY_VILT, None, 7),
]
IDS = [name for name, *_ in FAMILIES]


def _randomised(name: str, options: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = mobilevt.create_model(name, **options).eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor))
    return model


def _engine_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("mobilevt")]


@pytest.mark.parametrize("name,options,_,num_classes", FAMILIES, ids=IDS)
def test_other_num_classes_keeps_all_but_the_head_with_one_warning(name, options, _, num_classes, tmp_path, caplog):
    source = _randomised(name, options)
    path = mobilevt.save_weights(source, tmp_path / "model.safetensors")
    with caplog.at_level(logging.WARNING):
        model = mobilevt.create_model(name, weights=path, num_classes=num_classes)
    (warning,) = _engine_warnings(caplog)
    assert "freshly initialised" in warning and str(num_classes) in warning
    head = set(family_of(mobilevt.get_model_entry(name)).head_keys(model))
    assert head, "every family has a class-sized head"
    ours, theirs = model.state_dict(), source.state_dict()
    for key, tensor in ours.items():
        if key in head:
            assert tensor.shape[0] != theirs[key].shape[0], key
        else:
            assert torch.equal(tensor, theirs[key]), key


@pytest.mark.parametrize("name,options,smaller,_", [f for f in FAMILIES if f[2]], ids=[f[0] for f in FAMILIES if f[2]])
def test_another_variant_is_refused_naming_the_one_that_fits(name, options, smaller, _, tmp_path):
    path = mobilevt.save_weights(_randomised(smaller, {}), tmp_path / "smaller.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:
        mobilevt.create_model(name, weights=path)
    first_line, *key_lines = str(err.value).splitlines()
    assert f"the checkpoint matches {smaller!r}: create that model instead" in first_line
    assert key_lines and all(line.startswith("  ") for line in key_lines)  # the keys, after the fix
    assert err.value.missing or err.value.mis_shaped
    model = mobilevt.create_model(name)
    with pytest.raises(CheckpointMismatchError, match=f"matches {smaller!r}"):
        mobilevt.load_weights(model, path)


def test_a_vilt_of_another_size_is_refused_saying_what_to_pass(tmp_path):
    source = _randomised("vilt_b32_vqa", TINY_VILT)
    bare = tmp_path / "bare.safetensors"  # no metadata: the engine cannot rebuild the size
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(bare))
    with pytest.raises(CheckpointMismatchError) as err:
        mobilevt.create_model("vilt_b32_vqa", weights=bare, **{**TINY_VILT, "hidden_size": 64})
    assert "another size" in str(err.value).splitlines()[0] and err.value.mis_shaped


@pytest.mark.parametrize("name,options,_,num_classes", FAMILIES, ids=IDS)
def test_names_come_from_the_checkpoint(name, options, _, num_classes, tmp_path):
    attribute = family_of(mobilevt.get_model_entry(name)).names_attribute
    source = mobilevt.create_model(name, num_classes=num_classes, **options)
    names = [f"thing {i}" for i in range(num_classes)]
    setattr(source, attribute, names)
    path = mobilevt.save_weights(source, tmp_path / "named.safetensors")
    assert getattr(mobilevt.create_model(name, weights=path), attribute) == names
    fresh = mobilevt.create_model(name, num_classes=num_classes, **options)
    assert getattr(mobilevt.load_weights(fresh, path), attribute) == names


@pytest.mark.parametrize(
    "name,num_classes,first_names",
    [
        ("deeplabv3_mobilevit_xxs", 21, ["background", "aeroplane"]),
        ("ssdlite_mobilevit_xxs", 81, ["background", "person"]),
    ],
)
def test_without_names_in_the_checkpoint_the_data_set_names_them(name, num_classes, first_names, tmp_path):
    source = _randomised(name, {})
    assert source.class_names[:2] == first_names  # random weights: the published heads' data set
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(bare))
    published = mobilevt.get_model_entry(name).weights[0]
    assert published.num_classes == num_classes
    model = mobilevt.create_model(name, weights=bare)
    assert model.num_classes == num_classes
    if name.startswith("deeplabv3"):  # PASCAL VOC heads carry VOC's names
        assert model.class_names[:2] == first_names
    other = mobilevt.create_model(name, weights=bare, num_classes=5)
    assert not getattr(other, "class_names", None)  # 21 or 81 names do not name 5 outputs

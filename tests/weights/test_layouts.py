"""ml-cvnets and mmpretrain checkpoint layouts.

No real checkpoint can be downloaded here, so each test builds a state dict in the
publisher's exact key naming from a timm checkpoint with random weights, with a key map
written here independently of mobilevt's (from ml-cvnets' and mmpretrain's model source),
and checks that mobilevt loads it to the same logits as timm. mmpretrain's key list is
also compared with the full list derived from its source (tests/fixtures).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import PARITY_ATOL, max_abs, randomize_

import mobilevt

timm = pytest.importorskip("timm")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _sub_all(key: str, rules: list[tuple[str, str]]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def timm_to_cvnets(state: dict[str, torch.Tensor], depths: dict[int, int], v2: bool) -> dict[str, torch.Tensor]:
    """timm keys -> ml-cvnets keys (cvnets/models/classification/mobilevit*.py)."""
    out = {}
    for key, value in state.items():
        k = re.sub(r"^stages\.(\d+)\.", lambda m: f"layer_{int(m.group(1)) + 1}.", key)
        # a transformer block's final norm sits after its layers in global_rep
        m = re.match(r"^layer_(\d+)\.1\.norm\.(weight|bias)$", k)
        if m:
            k = f"layer_{m.group(1)}.1.global_rep.{depths[int(m.group(1))]}.{m.group(2)}"
        rules = [
            (r"^stem\.", "conv_1."),
            (r"^final_conv\.", "conv_1x1_exp."),
            (r"\.conv1_1x1\.", ".block.exp_1x1."),
            (r"\.conv2_kxk\.", ".block.conv_3x3."),
            (r"\.conv3_1x1\.", ".block.red_1x1."),
            (r"\.conv_kxk\.", ".local_rep.0." if v2 else ".local_rep.conv_3x3."),
            (
                r"\.conv_1x1\.weight$",
                ".local_rep.1.block.conv.weight" if v2 else ".local_rep.conv_1x1.block.conv.weight",
            ),
            (r"\.transformer\.(\d+)\.", r".global_rep.\1."),
            (r"\.conv_fusion\.", ".fusion."),
        ]
        if v2:
            rules += [
                (r"\.norm1\.", ".pre_norm_attn.0."),
                (r"\.attn\.qkv_proj\.", ".pre_norm_attn.1.qkv_proj.block.conv."),
                (r"\.attn\.out_proj\.", ".pre_norm_attn.1.out_proj.block.conv."),
                (r"\.norm2\.", ".pre_norm_ffn.0."),
                (r"\.mlp\.fc1\.", ".pre_norm_ffn.1.block.conv."),
                (r"\.mlp\.fc2\.", ".pre_norm_ffn.3.block.conv."),
                (r"^head\.fc\.", "classifier.1."),
            ]
        else:
            rules += [
                (r"\.norm1\.", ".pre_norm_mha.0."),
                (r"\.attn\.qkv\.", ".pre_norm_mha.1.qkv_proj."),
                (r"\.attn\.proj\.", ".pre_norm_mha.1.out_proj."),
                (r"\.norm2\.", ".pre_norm_ffn.0."),
                (r"\.mlp\.fc1\.", ".pre_norm_ffn.1."),
                (r"\.mlp\.fc2\.", ".pre_norm_ffn.4."),
                (r"^head\.fc\.", "classifier.fc."),
            ]
        k = _sub_all(k, rules)
        # ConvLayer2d wraps conv and norm in `.block`
        k = re.sub(r"\.conv\.(weight)$", r".block.conv.\1", k) if not k.endswith("block.conv.weight") else k
        k = re.sub(r"\.bn\.", ".block.norm.", k)
        out[k] = value
    return out


def timm_to_mmpretrain(state: dict[str, torch.Tensor], depths: dict[int, int]) -> dict[str, torch.Tensor]:
    """timm keys -> mmpretrain ImageClassifier keys (mmpretrain/models/backbones/mobilevit.py)."""
    out = {}
    for key, value in state.items():
        k = key
        m = re.match(r"^stages\.(\d+)\.1\.norm\.(weight|bias)$", k)
        if m:
            k = f"stages.{m.group(1)}.1.global_rep.{depths[int(m.group(1)) + 1]}.{m.group(2)}"
        k = _sub_all(
            k,
            [
                (r"^stem\.", "backbone.stem."),
                (r"^stages\.", "backbone.layers."),
                (r"^final_conv\.", "backbone.conv_1x1_exp."),
                (r"\.conv1_1x1\.", ".conv.0."),
                (r"\.conv2_kxk\.", ".conv.1."),
                (r"\.conv3_1x1\.", ".conv.2."),
                (r"\.conv_kxk\.", ".local_rep.0."),
                (r"\.conv_1x1\.weight$", ".local_rep.1.conv.weight"),
                (r"\.transformer\.(\d+)\.", r".global_rep.\1."),
                (r"\.norm1\.", ".ln1."),
                (r"\.norm2\.", ".ln2."),
                (r"\.mlp\.fc1\.", ".ffn.layers.0.0."),
                (r"\.mlp\.fc2\.", ".ffn.layers.1."),
            ],
        )
        out[k] = value
    return out


def _depths(model) -> dict[int, int]:
    return {i + 1: stage.transformer_depth for i, stage in enumerate(model.arch.stages)}


V1 = ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s"]
CVNETS_KEY_FILES = {
    "mobilevit_xxs": "ref_v1_xx_small.txt",
    "mobilevit_xs": "ref_v1_x_small.txt",
    "mobilevit_s": "ref_v1_small.txt",
    **{f"mobilevitv2_{int(w * 100):03d}": f"ref_v2_{w}.txt" for w in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)},
}


def read_key_list(path: Path) -> dict[str, list[int]]:
    listed = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split(" ", 1)
        listed[key] = [int(s) for s in re.findall(r"\d+", shape)]
    return listed


@pytest.mark.parametrize("name", list(CVNETS_KEY_FILES))
def test_cvnets_keys_and_shapes_match_the_reference_dump(name):
    """mobilevt's own map, run in reverse over its key list, names every key of the
    ml-cvnets model with the right shape, and nothing else."""
    from mobilevt.weights.mobilevit_layouts import source_keys

    model = mobilevt.create_model(name)
    produced = {}
    for key, tensor in model.state_dict().items():
        (source,) = source_keys("cvnets", key, model.arch)
        produced[source] = list(tensor.shape)
    assert produced == read_key_list(FIXTURES / "cvnets_keys" / CVNETS_KEY_FILES[name])


@pytest.mark.parametrize("name", V1 + ["mobilevitv2_050", "mobilevitv2_100"])
def test_cvnets_layout(name, tmp_path):
    reference = randomize_(timm.create_model(name), seed=21)
    arch_model = mobilevt.create_model(name)
    cvnets_state = timm_to_cvnets(reference.state_dict(), _depths(arch_model), v2="v2" in name)
    # keys straight from ml-cvnets' module names
    assert "conv_1.block.conv.weight" in cvnets_state
    assert "layer_1.0.block.exp_1x1.block.norm.running_var" in cvnets_state
    if "v2" in name:
        assert "layer_3.1.global_rep.0.pre_norm_attn.1.qkv_proj.block.conv.weight" in cvnets_state
        assert cvnets_state["layer_3.1.global_rep.0.pre_norm_attn.1.qkv_proj.block.conv.weight"].dim() == 4
        assert "layer_5.1.local_rep.1.block.conv.weight" in cvnets_state
        assert "classifier.1.weight" in cvnets_state
    else:
        assert "layer_3.1.global_rep.0.pre_norm_mha.1.qkv_proj.weight" in cvnets_state
        assert "layer_5.1.global_rep.3.weight" in cvnets_state  # final LayerNorm after 3 layers
        assert "layer_3.1.fusion.block.conv.weight" in cvnets_state
        assert "classifier.fc.weight" in cvnets_state
    assert mobilevt.detect_layout(cvnets_state) == "cvnets"
    reference_keys = read_key_list(FIXTURES / "cvnets_keys" / CVNETS_KEY_FILES[name])
    assert {k: list(v.shape) for k, v in cvnets_state.items()} == reference_keys
    # ml-cvnets publishes bare state dicts as *.pt files
    path = tmp_path / f"{name}.pt"
    torch.save(cvnets_state, path)
    model = mobilevt.create_model(name, weights=str(path)).eval()
    expected_order = "BGR" if "v2" not in name else "RGB"
    assert model.preprocess.channel_order == expected_order
    x = torch.rand(2, 3, 224, 320)
    with torch.no_grad():
        assert max_abs(model(x), reference(x)) <= PARITY_ATOL


@pytest.mark.parametrize("name", V1)
def test_mmpretrain_layout(name, tmp_path):
    reference = randomize_(timm.create_model(name), seed=33)
    mm_state = timm_to_mmpretrain(reference.state_dict(), _depths(mobilevt.create_model(name)))
    if name == "mobilevit_xxs":
        listed = read_key_list(FIXTURES / "mmpretrain_mobilevit_xxs_keys.txt")
        assert set(mm_state) == set(listed)
        assert all(list(mm_state[k].shape) == listed[k] for k in listed)
    # mmpretrain checkpoints wrap the weights: {"meta": ..., "state_dict": ...}
    path = tmp_path / f"{name}.pth"
    torch.save({"meta": {"epoch": 300}, "state_dict": mm_state}, path)
    model = mobilevt.create_model(name, weights=str(path)).eval()
    assert model.preprocess.channel_order == "BGR"
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        assert max_abs(model(x), reference(x)) <= PARITY_ATOL


def test_convert_state_dict_detects_every_layout():
    name = "mobilevit_xxs"
    reference = randomize_(timm.create_model(name), seed=1)
    depths = _depths(mobilevt.create_model(name))
    ours = mobilevt.convert_state_dict(reference.state_dict(), name)
    layouts = {
        "timm": reference.state_dict(),
        "cvnets": timm_to_cvnets(reference.state_dict(), depths, v2=False),
        "mmpretrain": timm_to_mmpretrain(reference.state_dict(), depths),
        "mobilevt": ours,
    }
    for layout, state in layouts.items():
        assert mobilevt.detect_layout(state) == layout
        converted = mobilevt.convert_state_dict(state, name)
        assert converted.keys() == ours.keys()
        assert all(torch.equal(converted[k], ours[k]) for k in ours), layout


def test_unknown_layout_is_named():
    with pytest.raises(mobilevt.CheckpointMismatchError, match="cannot tell which layout"):
        mobilevt.convert_state_dict({"features.0.weight": torch.zeros(1)}, "mobilevit_xxs")

"""MobileViTv3 (micronDLA/MobileViTv3, arXiv:2209.15159): the v1-based XXS/XS/S (and their
L2 forms) and the v2-based 0.5/0.75/1.0.

The reference is the authors' own code, which no package ships: it is ml-cvnets at the
commits their README names with their files put over it. Two files hold what it
produced (see tests/fixtures/README.md):

- ``tests/fixtures/cvnets_keys/ref_v3_*.txt``: the state-dict keys and shapes of their nine
  models, dumped from their model classes;
- ``tests/fixtures/mobilevitv3_reference.safetensors``: their models' logits (and dilated
  stage-5 features) on the deterministic weights of ``authors_checkpoint`` below, written
  by ``tests/fixtures/make_mobilevitv3_reference.py``.

So the parity tests compare with outputs of the authors' code, not of mobilevt.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from conftest import PARITY_ATOL, max_abs, randomize_

import mobilevt

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KEY_DIR = FIXTURES / "cvnets_keys"
REFERENCE = FIXTURES / "mobilevitv3_reference.safetensors"

# mobilevt name -> the authors' model (their key list: tests/fixtures/cvnets_keys/ref_v3_*.txt),
# and its parameter count in their README table (millions, one decimal)
V3 = {
    "mobilevitv3_xxs": ("ref_v3_xx_small", 1.2),
    "mobilevitv3_xs": ("ref_v3_x_small", 2.5),
    "mobilevitv3_s": ("ref_v3_small", 5.8),
    "mobilevitv3_xxs_l2": ("ref_v3_xx_small_l2", 1.1),
    "mobilevitv3_xs_l2": ("ref_v3_x_small_l2", 2.3),
    "mobilevitv3_s_l2": ("ref_v3_small_l2", 5.2),
    "mobilevitv3_050": ("ref_v3_0.5", 1.4),
    "mobilevitv3_075": ("ref_v3_0.75", 3.0),
    "mobilevitv3_100": ("ref_v3_1.0", 5.1),
}


def read_key_list(name: str) -> dict[str, list[int]]:
    """The authors' state-dict keys and shapes for mobilevt model ``name``, in their order."""
    listed = {}
    for line in (KEY_DIR / f"{V3[name][0]}.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            listed[key] = [int(s) for s in re.findall(r"\d+", shape)]
    return listed


def random_weights(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random weights in the authors' key naming (fan-in scaled convs and
    linears, norm scales near 1). BatchNorm statistics come from ``authors_checkpoint``."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in read_key_list(name).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
            continue
        noise = torch.randn(shape, generator=generator)
        if key.endswith(("running_mean", "running_var")):
            value = torch.zeros(shape) if key.endswith("mean") else torch.ones(shape)
        elif key.endswith("bias"):
            value = 0.05 * noise
        elif len(shape) == 1:  # a norm's scale
            value = 1.0 + 0.1 * noise
        else:  # conv / linear weight
            value = noise / math.sqrt(math.prod(shape[1:]))
        state[key] = value
    return state


def authors_checkpoint(name: str, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint the authors' model ran on: ``random_weights`` with the BatchNorm
    statistics that their model measured on a calibration batch (stored in the reference
    file; without measured statistics the signal dies or explodes through the residuals)."""
    state = random_weights(name)
    prefix = f"{name}/bn/"
    for key, value in reference.items():
        if key.startswith(prefix):
            assert key[len(prefix) :] in state, key
            state[key[len(prefix) :]] = value
    return state


def reference_input(name: str, batch: int, height: int, width: int) -> torch.Tensor:
    """Smooth random images (noise upsampled from an 8x coarser grid): unlike pixel noise,
    different images have different content, so their logits differ."""
    generator = torch.Generator().manual_seed(sum(map(ord, name)) + height * 1000 + width)
    coarse = torch.rand(batch, 3, height // 8 + 2, width // 8 + 2, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(REFERENCE))


def load_authors_model(name: str, reference, tmp_path: Path, **kwargs) -> torch.nn.Module:
    # the authors' checkpoint_ema_best.pt files are bare state dicts saved with torch.save
    path = tmp_path / "checkpoint_ema_best.pt"
    torch.save(authors_checkpoint(name, reference), path)
    return mobilevt.create_model(name, weights=str(path), **kwargs).eval()


# ---------------------------------------------------------------------------------------
# Architecture and registry


@pytest.mark.parametrize("name", list(V3))
def test_parameter_count_is_the_authors_and_the_published(name):
    with torch.device("meta"):
        model = mobilevt.create_model(name)
    params = sum(p.numel() for p in model.parameters())
    header = (KEY_DIR / f"{V3[name][0]}.txt").read_text().splitlines()[0]
    assert header.startswith(f"# params={params} ")  # exactly their model's count
    assert abs(params / 1e6 - V3[name][1]) <= 0.05  # their README table, one decimal
    entry = mobilevt.get_model_entry(name)
    assert entry.family == "mobilevitv3" and entry.published_params_m == V3[name][1]


def test_registry_entries_carry_the_authors_figures_and_preprocessing():
    assert mobilevt.list_models("mobilevitv3*") == list(V3)
    xxs, half = mobilevt.get_model_entry("mobilevitv3_xxs"), mobilevt.get_model_entry("mobilevitv3_050")
    assert (xxs.published_top1, xxs.published_macs_g) == (70.98, 0.289)
    assert (half.published_top1, half.published_macs_g) == (72.33, 0.481)
    # v1-based: ml-cvnets v0.1 (OpenCV: BGR, cv2.resize without antialiasing); v2-based: PIL, RGB, bicubic
    assert (xxs.default_preprocess.channel_order, xxs.default_preprocess.antialias) == ("BGR", False)
    assert (half.default_preprocess.channel_order, half.default_preprocess.interpolation) == ("RGB", "bicubic")
    assert xxs.default_preprocess.resize_size == half.default_preprocess.resize_size == 288
    assert xxs.weights == ()  # no direct download links are published (see README)
    arch = mobilevt.create_model("mobilevitv3_s_l2").arch
    assert (arch.version, arch.base_version, arch.final_channels) == (3, 1, 960)
    assert [s.transformer_depth for s in arch.stages] == [0, 0, 2, 2, 3]


# ---------------------------------------------------------------------------------------
# Parity with the authors' code


@pytest.mark.parametrize("name", list(V3))
def test_logits_match_the_authors_code(name, reference, tmp_path):
    model = load_authors_model(name, reference, tmp_path)
    assert model.preprocess == mobilevt.get_model_entry(name).default_preprocess
    sizes = [k.rsplit("/", 1)[1] for k in reference if k.startswith(f"{name}/logits/")]
    assert "97x131" in sizes  # not a multiple of the patch grid: exercises the resizing
    for size in sizes:
        expected = reference[f"{name}/logits/{size}"]
        height, width = map(int, size.split("x"))
        assert (expected[0] - expected[1]).abs().max() > 0.1, "the reference logits do not depend on the input"
        with torch.no_grad():
            actual = model(reference_input(name, 2, height, width))
        assert max_abs(actual, expected) <= PARITY_ATOL, (name, size)


@pytest.mark.parametrize("name", ["mobilevitv3_xxs", "mobilevitv3_050"])
def test_dilated_features_match_the_authors_code(name, reference):
    """At output stride 8 the authors dilate v2-based blocks' depthwise conv but never the
    v1-based ones' (nor v1's): stage 5 of both matches their model."""
    (key,) = [k for k in reference if k.startswith(f"{name}/os8_stage5/")]
    height, width = map(int, key.rsplit("/", 1)[1].split("x"))
    model = mobilevt.create_model(name, output_stride=8).eval()
    mobilevt.load_weights(model, authors_checkpoint(name, reference))
    with torch.no_grad():
        stage5 = model.forward_feature_pyramid(reference_input(name, 1, height, width))[-1]
    assert stage5.shape == reference[key].shape == (1, model.feature_info[-1]["channels"], height // 8, width // 8)
    assert max_abs(stage5, reference[key]) <= PARITY_ATOL


# ---------------------------------------------------------------------------------------
# Checkpoint layout


def to_authors_keys(state: dict[str, torch.Tensor], v2_based: bool, depths: dict[int, int]) -> dict[str, torch.Tensor]:
    """mobilevt keys -> the authors' module names, written from their source (independently
    of mobilevt.weights.mobilevit_layouts):

    - MobileViTv3-v{1,2}/cvnets/models/classification/mobilevit*.py: ``conv_1`` (stem),
      ``layer_1`` .. ``layer_5`` (Sequentials: inverted residuals, then the v3 block at
      index 1 of layers 3-5), ``conv_1x1_exp`` (v1-based only), ``classifier`` =
      Sequential(global_pool, dropout, ``fc``) on v1, Sequential(GlobalPool, LinearLayer)
      (so ``classifier.1``) on v2;
    - ml-cvnets' ConvLayer keeps conv and norm in ``block.conv`` / ``block.norm``, its
      InvertedResidual ``block.exp_1x1`` / ``block.conv_3x3`` / ``block.red_1x1``;
    - MobileViTv3-v1/cvnets/modules/mobilevit_block.py (MobileViTv3Block):
      ``local_rep.conv_3x3`` (depthwise), ``local_rep.conv_1x1``, ``global_rep.<i>``
      TransformerEncoders (``pre_norm_mha`` = [LayerNorm, MHA(qkv_proj, out_proj)],
      ``pre_norm_ffn`` = [LayerNorm, Linear, act, dropout, Linear]) then the final norm at
      ``global_rep.<depth>``, ``conv_proj``, ``fusion`` (the 1x1 on local + global);
    - MobileViTv3-v2/cvnets/modules/mobilevit_block.py (MobileViTBlockv3): ``local_rep``
      an unnamed Sequential (``0`` depthwise, ``1`` the 1x1), ``global_rep.<i>``
      LinearAttnFFNs (``pre_norm_attn`` = [norm, LinearSelfAttention(qkv_proj, out_proj)
      as ConvLayers], ``pre_norm_ffn`` = [norm, ConvLayer with its activation, dropout,
      ConvLayer]), final norm at ``global_rep.<depth>``, ``conv_proj`` (no fusion).
    """
    attention = [
        (r"\.norm1\.", ".pre_norm_attn.0." if v2_based else ".pre_norm_mha.0."),
        (r"\.attn\.qkv\.", ".pre_norm_attn.1.qkv_proj.conv." if v2_based else ".pre_norm_mha.1.qkv_proj."),
        (r"\.attn\.proj\.", ".pre_norm_attn.1.out_proj.conv." if v2_based else ".pre_norm_mha.1.out_proj."),
        (r"\.norm2\.", ".pre_norm_ffn.0."),
        (r"\.mlp\.fc1\.", ".pre_norm_ffn.1.conv." if v2_based else ".pre_norm_ffn.1."),
        (r"\.mlp\.fc2\.", ".pre_norm_ffn.3.conv." if v2_based else ".pre_norm_ffn.4."),
    ]
    rules = [
        (r"^stem\.", "conv_1."),
        (r"^final_conv\.", "conv_1x1_exp."),
        (r"^head\.", "classifier.1." if v2_based else "classifier.fc."),
        (r"^stages\.(\d+)\.", lambda m: f"layer_{int(m.group(1)) + 1}."),
        (r"\.expand\.", ".block.exp_1x1."),
        (r"\.depthwise\.", ".block.conv_3x3."),
        (r"\.project\.", ".block.red_1x1."),
        (r"\.local_kxk\.", ".local_rep.0." if v2_based else ".local_rep.conv_3x3."),
        (r"\.local_1x1\.", ".local_rep.1.conv." if v2_based else ".local_rep.conv_1x1.conv."),
        (r"\.proj\.(conv|bn)\.", r".conv_proj.\1."),
        (r"\.transformer\.(\d+)\.", r".global_rep.\1."),
        *attention,
        (r"\.conv\.(weight|bias)$", r".block.conv.\1"),  # every ConvLayer wraps its conv and norm
        (r"\.bn\.", ".block.norm."),
    ]
    out = {}
    for key, value in state.items():
        m = re.match(r"^stages\.(\d+)\.1\.norm\.(weight|bias)$", key)
        if m:  # the block's final norm follows its transformer layers in global_rep
            stage = int(m.group(1))
            out[f"layer_{stage + 1}.1.global_rep.{depths[stage]}.{m.group(2)}"] = value
            continue
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


@pytest.mark.parametrize("name", list(V3))
def test_authors_key_names_and_shapes(name):
    """mobilevt's keys, renamed by the table above, are exactly their model's state dict."""
    with torch.device("meta"):
        model = mobilevt.create_model(name)
    depths = {i: stage.transformer_depth for i, stage in enumerate(model.arch.stages)}
    theirs = to_authors_keys(model.state_dict(), v2_based=name[-3:].isdigit(), depths=depths)
    assert {k: list(v.shape) for k, v in theirs.items()} == read_key_list(name)


@pytest.mark.parametrize("name", ["mobilevitv3_xxs", "mobilevitv3_050"])
def test_checkpoint_in_the_authors_key_names_loads_back(name, tmp_path):
    source = randomize_(mobilevt.create_model(name), seed=7)
    depths = {i: stage.transformer_depth for i, stage in enumerate(source.arch.stages)}
    theirs = to_authors_keys(source.state_dict(), v2_based=name[-3:].isdigit(), depths=depths)
    assert mobilevt.detect_layout(theirs) == "cvnets"
    path = tmp_path / "checkpoint_ema_best.pt"
    torch.save(theirs, path)
    loaded = mobilevt.create_model(name, weights=str(path)).eval()
    into_existing = mobilevt.load_weights(mobilevt.create_model(name).eval(), str(path))
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = source(x)
        assert torch.equal(loaded(x), expected) and torch.equal(into_existing(x), expected)


def test_wrong_variant_checkpoints_name_the_keys(reference, tmp_path):
    xxs = authors_checkpoint("mobilevitv3_xxs", reference)
    # the L2 form has 2 layer-4 transformer layers, not 4
    with pytest.raises(mobilevt.CheckpointMismatchError) as err:
        mobilevt.load_weights(mobilevt.create_model("mobilevitv3_xxs_l2"), xxs)
    # (its final norm sits at global_rep.2, where the xxs checkpoint has a transformer layer)
    assert err.value.missing == ["layer_4.1.global_rep.2.weight", "layer_4.1.global_rep.2.bias"]
    assert "layer_4.1.global_rep.3.pre_norm_mha.0.weight" in err.value.unexpected
    assert "unexpected keys (26)" in str(err.value) and "matches 'mobilevitv3_xxs'" in str(err.value)
    # a MobileViT v1 checkpoint has the same key names but a full (not depthwise) local conv
    torch.save(
        to_authors_keys(mobilevt.create_model("mobilevit_xxs").state_dict(), False, {2: 2, 3: 4, 4: 3}),
        tmp_path / "v1.pt",
    )
    with pytest.raises(mobilevt.CheckpointMismatchError) as err:
        mobilevt.create_model("mobilevitv3_xxs", weights=str(tmp_path / "v1.pt"))
    assert "stages.2.1.local_kxk.conv.weight [48, 48, 3, 3] vs model [64, 1, 3, 3]" in str(err.value)
    assert "matches 'mobilevit_xxs'" in str(err.value)
    # and the other way round: a v3 checkpoint into the v2 model of the same width
    with pytest.raises(mobilevt.CheckpointMismatchError) as err:
        mobilevt.load_weights(
            mobilevt.create_model("mobilevitv2_050"), authors_checkpoint("mobilevitv3_050", reference)
        )
    assert "stages.2.1.proj.conv.weight [128, 128, 1, 1] vs model [128, 64, 1, 1]" in str(err.value)
    assert "matches 'mobilevitv3_050'" in str(err.value)


# ---------------------------------------------------------------------------------------
# What the core MobileViT API promises holds for v3


@pytest.mark.parametrize("name", ["mobilevitv3_xxs", "mobilevitv3_050"])
def test_any_input_size_and_pooled_features(name):
    model = mobilevt.create_model(name, num_classes=7).eval()
    features = mobilevt.create_model(name, num_classes=0).eval()
    for size in [(97, 131), (64, 64), (33, 47), (130, 100)]:  # none a multiple of 32 but 64x64
        for batch in (1, 3):
            with torch.no_grad():
                out = model(torch.rand(batch, 3, *size))
            assert out.shape == (batch, 7) and torch.isfinite(out).all()
    with torch.no_grad():
        assert features(torch.rand(2, 3, 97, 131)).shape == (2, features.num_features)


@pytest.mark.parametrize(
    "name, channels", [("mobilevitv3_xxs", [16, 24, 64, 80, 128]), ("mobilevitv3_050", [32, 64, 128, 192, 256])]
)
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_feature_pyramid_at_every_output_stride(name, channels, output_stride):
    model = mobilevt.create_model(name, num_classes=0, output_stride=output_stride).eval()
    strides = [min(s, output_stride) for s in (2, 4, 8, 16, 32)]
    assert model.feature_info == [{"channels": c, "stride": s} for c, s in zip(channels, strides)]
    with torch.no_grad():
        features = model.forward_feature_pyramid(torch.rand(2, 3, 256, 320))
    assert [tuple(f.shape) for f in features] == [(2, c, 256 // s, 320 // s) for c, s in zip(channels, strides)]


@pytest.mark.parametrize("name", ["mobilevitv3_xxs", "mobilevitv3_050"])
def test_scripted_equals_eager(name, reference):
    model = mobilevt.create_model(name).eval()
    mobilevt.load_weights(model, authors_checkpoint(name, reference))
    scripted = torch.jit.script(model)
    x = reference_input(name, 2, 97, 131)
    with torch.no_grad():
        assert max_abs(scripted(x), model(x)) <= 1e-5
        for a, b in zip(scripted.forward_feature_pyramid(x), model.forward_feature_pyramid(x)):
            assert max_abs(a, b) <= 1e-5


def test_onnx_export_runs_in_onnxruntime_like_eager(reference, tmp_path, photo_dir):
    ort = pytest.importorskip("onnxruntime")
    from mobilevt.export import export_model

    model = load_authors_model("mobilevitv3_xxs", reference, tmp_path)
    out = tmp_path / "xxs.onnx"
    report = export_model(
        model, out, "onnx", image_size=(96, 128), dynamic_size=True, check_images=photo_dir, latency_runs=1
    )
    assert report.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = reference_input("mobilevitv3_xxs", 2, 97, 131)  # another batch and an odd size
    (logits,) = session.run(None, {"pixel_values": x.numpy()})
    with torch.no_grad():
        assert max_abs(torch.from_numpy(logits), model(x)) <= 1e-4


@pytest.mark.parametrize("name", ["mobilevitv3_xxs", "mobilevitv3_050"])
def test_fuse_keeps_outputs(name, reference):
    model = mobilevt.create_model(name).eval()
    mobilevt.load_weights(model, authors_checkpoint(name, reference))
    x = reference_input(name, 2, 97, 131)
    with torch.no_grad():
        expected = model(x)
        fused = model.fuse()
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        assert max_abs(fused(x), expected) <= 1e-5
        assert max_abs(fused.to(memory_format=torch.channels_last)(x), expected) <= 1e-5


@pytest.mark.parametrize("name", ["mobilevitv3_xxs", "mobilevitv3_050"])
def test_training_step_reaches_every_parameter(name):
    model = mobilevt.create_model(name, num_classes=5, drop_path_rate=0.1).train()
    loss = torch.nn.functional.cross_entropy(model(torch.rand(2, 3, 64, 64)), torch.tensor([1, 3]))
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname


def test_models_command_lists_v3_with_the_published_top1(capsys):
    import json

    from mobilevt.cli.main import main

    assert main(["models", "mobilevitv3_xxs", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["params_m"] == pytest.approx(1.249, abs=1e-3)
    assert row["top1"] == 70.98 and row["published_macs_g"] == 0.289 and row["weights"] == []

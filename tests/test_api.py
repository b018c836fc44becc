"""Public API behaviour: registry, create_model sources, strict loading and clear errors."""

from __future__ import annotations

import functools
import http.server
import os
import threading

import pytest
import torch
from conftest import max_abs, randomize_

import mobilevt
from mobilevt import CheckpointMismatchError, WeightsNotFoundError


def test_list_models_and_pattern():
    names = mobilevt.list_models(kind="image-classification")
    assert names[:3] == ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s"]
    assert len(names) == 19  # 3 v1, 7 v2, 9 v3
    assert mobilevt.list_models("mobilevitv3_*_l2") == ["mobilevitv3_xxs_l2", "mobilevitv3_xs_l2", "mobilevitv3_s_l2"]
    assert mobilevt.list_models("mobilevitv2_1*") == [
        "mobilevitv2_100",
        "mobilevitv2_125",
        "mobilevitv2_150",
        "mobilevitv2_175",
    ]


def test_unknown_model_suggests_close_names():
    with pytest.raises(KeyError) as err:
        mobilevt.create_model("mobilevit_small")
    assert "mobilevit_s" in str(err.value)
    with pytest.raises(ValueError, match="mobilevitv2_100"):
        mobilevt.create_model("mobilevitv2_10")


def test_unknown_weights_tag_lists_known_tags():
    with pytest.raises(ValueError, match="cvnets_in1k"):
        mobilevt.create_model("mobilevit_xxs", weights="imagenet")


@pytest.mark.parametrize(
    "shape, message",
    [((3, 256, 256), "4-D"), ((1, 1, 256, 256), "3 input channels"), ((1, 256, 256, 3), "3 input channels")],
)
def test_bad_input_shapes_raise_clear_errors(shape, message):
    model = mobilevt.create_model("mobilevit_xxs").eval()
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(shape))


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
@pytest.mark.parametrize("size", [(97, 131), (256, 200), (64, 64), (320, 240)])
def test_any_input_size_and_batch(name, size):
    model = mobilevt.create_model(name, num_classes=7).eval()
    for batch in (1, 3):
        with torch.no_grad():
            out = model(torch.rand(batch, 3, *size))
        assert out.shape == (batch, 7)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["mobilevit_xs", "mobilevitv2_075"])
def test_feature_pyramid_strides(name):
    model = mobilevt.create_model(name).eval()
    x = torch.rand(2, 3, 256, 320)
    with torch.no_grad():
        features = model.forward_feature_pyramid(x)
        final = model.forward_features(x)
    assert [f["stride"] for f in model.feature_info] == [2, 4, 8, 16, 32]
    for feat, info in zip(features, model.feature_info):
        assert feat.shape == (2, info["channels"], 256 // info["stride"], 320 // info["stride"])
    assert final.shape == (2, model.num_features, 8, 10)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_dilates_instead_of_striding(output_stride):
    model = mobilevt.create_model("mobilevit_xxs", output_stride=output_stride).eval()
    with torch.no_grad():
        features = model.forward_feature_pyramid(torch.rand(1, 3, 256, 256))
    assert features[-1].shape[-1] == 256 // output_stride
    assert model.feature_info[-1]["stride"] == output_stride


def test_reset_classifier_and_pre_logits():
    model = mobilevt.create_model("mobilevit_xxs").eval()
    model.reset_classifier(10)
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)


def test_dropout_and_drop_path_are_active_in_training_only():
    model = mobilevt.create_model("mobilevit_xxs", drop_rate=0.5, drop_path_rate=0.3)
    randomize_(model)
    x = torch.rand(2, 3, 128, 128)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    b = model(x)
    assert max_abs(a, b) > 1e-4, "training mode should be stochastic"
    a.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert max_abs(model(x), model(x)) == 0.0


# ------------------------------------------------------------------ weights sources


@pytest.fixture(scope="module")
def xxs_reference():
    return randomize_(mobilevt.create_model("mobilevit_xxs"), seed=11)


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_pickle_files_with_training_wrappers(xxs_reference, tmp_path, suffix):
    """A DDP training checkpoint: {'state_dict': {'module.' + key: tensor}, 'epoch': ...}."""
    state = {"module." + k: v for k, v in xxs_reference.state_dict().items()}
    path = tmp_path / f"ckpt{suffix}"
    torch.save({"state_dict": state, "epoch": 3, "best_acc": 0.5}, path)
    model = mobilevt.create_model("mobilevit_xxs", weights=str(path))
    assert _same_weights(model, xxs_reference)


def test_own_safetensors_roundtrip_keeps_metadata(tmp_path):
    model = randomize_(mobilevt.create_model("mobilevitv2_050", num_classes=5))
    model.preprocess = mobilevt.PreprocessConfig((224, 224), 256, "bicubic", channel_order="RGB")
    path = mobilevt.save_weights(model, tmp_path / "ft.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["ft.safetensors"]  # no temp file left behind
    loaded = mobilevt.create_model("mobilevitv2_050", weights=str(path))  # num_classes from the file
    assert loaded.num_classes == 5
    assert loaded.preprocess == model.preprocess
    assert _same_weights(loaded, model)


def test_fine_tune_head_with_other_num_classes(xxs_reference, tmp_path):
    path = mobilevt.save_weights(xxs_reference, tmp_path / "in1k.safetensors")
    model = mobilevt.create_model("mobilevit_xxs", weights=str(path), num_classes=10)
    assert model.head.weight.shape == (10, 320)
    assert torch.equal(model.stem.conv.weight, xxs_reference.stem.conv.weight)


def test_load_weights_into_existing_model(xxs_reference, tmp_path):
    path = mobilevt.save_weights(xxs_reference, tmp_path / "w.safetensors")
    model = mobilevt.load_weights(mobilevt.create_model("mobilevit_xxs"), str(path))
    assert _same_weights(model, xxs_reference)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


def test_url_download_is_cached(xxs_reference, tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    mobilevt.save_weights(xxs_reference, served / "xxs.safetensors")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/xxs.safetensors"
        wrong = mobilevt.Weights("mobilevit_xxs", "test", url, "mobilevt", mobilevt.PreprocessConfig(), sha256="0" * 64)
        with pytest.raises(CheckpointMismatchError, match="corrupt or a different file"):
            mobilevt.create_model("mobilevit_xxs", weights=wrong)
        assert not (tmp_path / "hub" / "checkpoints" / "xxs.safetensors").exists()  # nothing half-trusted kept
        digest = __import__("hashlib").sha256((served / "xxs.safetensors").read_bytes()).hexdigest()
        right = mobilevt.Weights("mobilevit_xxs", "test", url, "mobilevt", mobilevt.PreprocessConfig(), sha256=digest)
        model = mobilevt.create_model("mobilevit_xxs", weights=right)
    finally:
        server.shutdown()
    assert _same_weights(model, xxs_reference)
    assert (tmp_path / "hub" / "checkpoints" / "xxs.safetensors").is_file()
    # offline now: the cached file is used
    again = mobilevt.create_model("mobilevit_xxs", weights=url)
    assert _same_weights(again, xxs_reference)


def test_url_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError) as err:
        mobilevt.create_model("mobilevit_xxs", weights="http://127.0.0.1:9/nothing/mobilevit_xxs.pt")
    message = str(err.value)
    assert "could not download" in message and str(tmp_path / "hub" / "checkpoints" / "mobilevit_xxs.pt") in message


def _fill_hub_cache(cache, repo_id: str, files: dict[str, bytes]) -> None:
    """The on-disk layout huggingface_hub reads in offline mode."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_hf_hub_id_through_huggingface_hub_cache(xxs_reference, tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from timm.models._hub import save_for_hf

    reference = randomize_(timm.create_model("mobilevit_xxs"), seed=5)
    export = tmp_path / "export"
    save_for_hf(reference, str(export), safe_serialization=True)
    cache = tmp_path / "hf-cache"
    _fill_hub_cache(
        cache, "timm/mobilevit_xxs.cvnets_in1k", {"model.safetensors": (export / "model.safetensors").read_bytes()}
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.file_download.constants.HF_HUB_CACHE", str(cache), raising=False)
    model = mobilevt.create_model("mobilevit_xxs", weights="hf-hub:timm/mobilevit_xxs.cvnets_in1k").eval()
    tagged = mobilevt.create_model("mobilevit_xxs.timm_in1k").eval()  # the same checkpoint by tag
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert max_abs(model(x), reference(x)) <= 1e-4
        assert torch.equal(model(x), tagged(x))
    assert tagged.pretrained_weights.tag == "timm_in1k"
    assert tagged.preprocess.channel_order == "RGB"

    with pytest.raises(WeightsNotFoundError) as err:
        mobilevt.create_model("mobilevit_s", weights="hf-hub:apple/mobilevit-small")
    assert "model.safetensors" in str(err.value) and "offline" in str(err.value)


def test_unreachable_hub_fails_at_once_without_retries(tmp_path, monkeypatch, caplog):
    """No network (an endpoint that cannot resolve) and nothing cached: every Hub look-up
    (weights, a ViLT config.json, a vocabulary) fails with the clear message at once, not
    after huggingface_hub's retries with back-off (~25 s)."""
    import huggingface_hub.constants

    from mobilevt.tasks.vqa import create_vqa_pipeline

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://hub.invalid")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    attempts = [
        lambda: mobilevt.create_model("mobilevit_s", weights="hf-hub:apple/mobilevit-small"),
        lambda: mobilevt.create_model("vilt_b32_vqa", weights="hf-hub:dandelin/vilt-b32-finetuned-vqa"),
        lambda: create_vqa_pipeline(weights="hf-hub:dandelin/vilt-b32-finetuned-vqa"),
    ]
    with caplog.at_level("WARNING"):
        for attempt in attempts:
            with pytest.raises(WeightsNotFoundError) as err:
                attempt()
            assert "cannot reach hub.invalid" in str(err.value) and "offline" in str(err.value), str(err.value)
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]


def test_wrong_variant_names_mismatched_keys_and_guesses(tmp_path):
    xs = randomize_(mobilevt.create_model("mobilevit_xs"))
    path = mobilevt.save_weights(xs, tmp_path / "xs.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:
        mobilevt.create_model("mobilevit_xxs", weights=str(path))
    message = str(err.value)
    assert "mis-shaped" in message and "stem.conv.weight" not in message  # the stem has equal shapes
    assert "stages.0.0.expand.conv.weight [64, 16, 1, 1] vs model [32, 16, 1, 1]" in message
    # the fix comes first, before hundreds of characters of keys
    assert message.splitlines()[0].endswith(
        "does not fit model 'mobilevit_xxs'; the checkpoint matches 'mobilevit_xs': create that model instead."
    )


def test_v2_checkpoint_into_v1_model_names_missing_and_unexpected(tmp_path):
    v2 = mobilevt.create_model("mobilevitv2_050")
    with pytest.raises(CheckpointMismatchError) as err:
        mobilevt.load_weights(mobilevt.create_model("mobilevit_xxs"), v2.state_dict())
    message = str(err.value)
    assert "missing keys (35)" in message and "stages.1.2.expand.conv.weight" in message
    assert "stages.2.1.fusion.conv.weight" in err.value.missing  # v1's fusion conv is absent from v2
    assert "matches 'mobilevitv2_050'" in message


def test_classification_checkpoint_of_other_task_is_refused():
    state = dict(mobilevt.create_model("mobilevit_xxs").state_dict())
    state["seg_head.aspp.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError, match="seg_head.aspp.weight"):
        mobilevt.convert_state_dict(state, "mobilevit_xxs")


def test_pickle_that_is_not_weights_only_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "hook": functools.partial(os.getcwd)}, path)
    with pytest.raises(CheckpointMismatchError, match="weights-only"):
        mobilevt.create_model("mobilevit_xxs", weights=str(path))


def test_corrupt_files_give_clear_errors(tmp_path):
    bad_st = tmp_path / "broken.safetensors"
    bad_st.write_bytes(b"\x00\x01not safetensors")
    with pytest.raises(CheckpointMismatchError, match="not a readable safetensors"):
        mobilevt.create_model("mobilevit_xxs", weights=str(bad_st))
    bad_pt = tmp_path / "broken.pt"
    bad_pt.write_bytes(b"garbage")
    with pytest.raises(CheckpointMismatchError, match="corrupt or in another format"):
        mobilevt.create_model("mobilevit_xxs", weights=str(bad_pt))
    good = tmp_path / "good.pt"
    torch.save(mobilevt.create_model("mobilevit_xxs").state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointMismatchError, match="not a readable PyTorch checkpoint"):
        mobilevt.create_model("mobilevit_xxs", weights=str(truncated))
    with pytest.raises(TypeError, match="weights='DEFAULT'"):
        mobilevt.create_model("mobilevit_xxs", weights=True)
    with pytest.raises(WeightsNotFoundError, match="not found"):
        mobilevt.create_model("mobilevit_xxs", weights=str(tmp_path / "missing.pt"))


def test_default_weights_resolve_through_torch_hub_cache(tmp_path, monkeypatch):
    """weights='DEFAULT' is ml-cvnets' published file; once it sits in torch.hub's cache
    (downloaded earlier, or put there by hand on an offline machine) it loads from there."""
    timm = pytest.importorskip("timm")
    from test_layouts import _depths, timm_to_cvnets

    entry = mobilevt.get_model_entry("mobilevit_xxs").default_weights
    assert entry.layout == "cvnets" and entry.source.endswith("/mobilevit_xxs.pt")
    reference = randomize_(timm.create_model("mobilevit_xxs"), seed=9)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = timm_to_cvnets(reference.state_dict(), _depths(mobilevt.create_model("mobilevit_xxs")), v2=False)
    torch.save(state, cache / "mobilevit_xxs.pt")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    model = mobilevt.create_model("mobilevit_xxs", weights="DEFAULT").eval()
    assert model.pretrained_weights is entry
    assert model.preprocess.channel_order == "BGR" and model.preprocess.resize_size == 288
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert max_abs(model(x), reference(x)) <= 1e-4


def test_weights_strings_the_command_line_passes_through(monkeypatch):
    """``--weights`` goes to ``create_model`` unchanged: ``none`` is random init (keeping a
    tag's preprocessing), ``DEFAULT`` with a tag is the tag's weights, not the default."""
    from mobilevt import engine

    random = mobilevt.create_model("mobilevit_xxs.timm_in1k", weights="none")
    assert random.pretrained_weights is None
    timm_preprocess = mobilevt.get_model_entry("mobilevit_xxs").get_weights("timm_in1k").preprocess
    assert random.preprocess == timm_preprocess and random.preprocess.interpolation == "bicubic"

    asked = []
    monkeypatch.setattr(engine, "create", lambda entry, weights, **kwargs: asked.append(weights))
    mobilevt.create_model("mobilevit_xxs.timm_in1k", weights="DEFAULT")
    mobilevt.create_model("mobilevit_xxs", weights="DEFAULT")
    assert [w.tag for w in asked] == ["timm_in1k", "cvnets_in1k"]

"""ViLT-B/32 VQA: logit parity with transformers' ViltForQuestionAnswering (random
weights, single images and padded batches with pixel_mask), loading Hugging Face folders
and dandelin/ViLT .ckpt files, refusal of other checkpoints with the keys named, and
TorchScript / torch.export / ONNX export with dynamic image size.

Tolerances: parity with transformers and onnxruntime 1e-4 (PARITY_ATOL: different
kernels and summation orders); TorchScript and torch.export run the same kernels (1e-5).
Most tests use a small ViLT (hidden 96, 3 layers) for speed; one runs the full B/32."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import PARITY_ATOL, max_abs

import mobilevt
from mobilevt import CheckpointMismatchError, WeightsNotFoundError
from mobilevt.cli.main import main

transformers = pytest.importorskip("transformers")
from transformers import ViltConfig  # noqa: E402
from transformers import ViltForMaskedLM as HfViltForMaskedLM  # noqa: E402
from transformers import ViltForQuestionAnswering as HfViltForQuestionAnswering  # noqa: E402

ANSWERS = ["yes", "no", "2", "cat", "red", "1", "dog"]
# The same small architecture in transformers' and mobilevt's field names.
SMALL_HF = dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=4, intermediate_size=192, image_size=160)
SMALL = dict(hidden_size=96, num_layers=3, num_heads=4, mlp_dim=192, image_size=160)


def _randomize(model: torch.nn.Module, seed: int, std: float = 0.2) -> torch.nn.Module:
    """Every parameter random, norm scales around 1: position embeddings, [CLS] and
    biases are zeros by default, which would hide errors in their handling."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            is_norm_scale = (
                param.dim() == 1
                and name.endswith("weight")
                and ("norm" in name.lower() or name.startswith("classifier.1."))
            )
            param.copy_(torch.randn(param.shape, generator=generator) * std + (1.0 if is_norm_scale else 0.0))
    return model.eval()


def _hf_config(**overrides) -> ViltConfig:
    fields = dict(SMALL_HF, num_labels=len(ANSWERS), id2label=dict(enumerate(ANSWERS)))
    fields["label2id"] = {a: i for i, a in enumerate(ANSWERS)}
    fields.update(overrides)
    return ViltConfig(**fields)


def _inputs(image_sizes, text_lengths, seed=0):
    """A ViltProcessor-style batch: images zero-padded at the bottom/right to the largest
    size with pixel_mask, questions padded with [PAD]=0 and attention_mask."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(image_sizes)
    height = max(h for h, _ in image_sizes)
    width = max(w for _, w in image_sizes)
    pixel_values = torch.zeros(batch, 3, height, width)
    pixel_mask = torch.zeros(batch, height, width, dtype=torch.long)
    for i, (h, w) in enumerate(image_sizes):
        pixel_values[i, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        pixel_mask[i, :h, :w] = 1
    length = max(text_lengths)
    input_ids = torch.zeros(batch, length, dtype=torch.long)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    for i, n in enumerate(text_lengths):
        input_ids[i, :n] = torch.randint(1000, 30000, (n,), generator=generator)
        input_ids[i, 0], input_ids[i, n - 1] = 101, 102  # [CLS] ... [SEP]
        attention_mask[i, :n] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": pixel_values,
        "pixel_mask": pixel_mask,
    }


def _reference_logits(reference, inputs) -> torch.Tensor:
    torch.manual_seed(0)  # transformers permutes the patches of the largest image with torch.multinomial
    with torch.no_grad():
        return reference(**inputs).logits


@pytest.fixture(scope="module")
def reference():
    return _randomize(HfViltForQuestionAnswering(_hf_config()), seed=1)


@pytest.fixture(scope="module")
def hf_folder(reference, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vilt_hf")
    reference.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(hf_folder):
    return mobilevt.create_model("vilt_b32_vqa", weights=str(hf_folder)).eval()


# ---------------------------------------------------------------------------------------
# Parity with transformers


@pytest.mark.parametrize("size", [(160, 160), (96, 224)])
def test_batch_of_one_matches_transformers(reference, model, size):
    inputs = _inputs([size], [11])
    expected = _reference_logits(reference, inputs)
    assert expected.abs().max() > 1.0, "reference logits are degenerate; the comparison would be vacuous"
    with torch.no_grad():
        assert max_abs(model(**inputs), expected) <= PARITY_ATOL
        # without masks (everything valid), as transformers defaults them
        no_masks = {k: inputs[k] for k in ("input_ids", "pixel_values")}
        assert max_abs(model(**no_masks), _reference_logits(reference, no_masks)) <= PARITY_ATOL
        # BERT segment ids, which ViltProcessor also returns
        with_segments = dict(inputs, token_type_ids=(torch.arange(11) >= 6).long()[None])
        assert max_abs(model(**with_segments), _reference_logits(reference, with_segments)) <= PARITY_ATOL


def test_padded_batch_of_two_sizes_matches_transformers_and_single_images(reference, model):
    sizes, lengths = [(96, 224), (160, 128)], [9, 14]
    inputs = _inputs(sizes, lengths, seed=3)
    expected = _reference_logits(reference, inputs)
    with torch.no_grad():
        logits = model(**inputs)
        assert max_abs(logits, expected) <= PARITY_ATOL
        # padding changes nothing: each row equals that image and question alone
        for i, (size, length) in enumerate(zip(sizes, lengths)):
            h, w = size
            alone = {
                "input_ids": inputs["input_ids"][i : i + 1, :length],
                "attention_mask": inputs["attention_mask"][i : i + 1, :length],
                "pixel_values": inputs["pixel_values"][i : i + 1, :, :h, :w],
            }
            assert max_abs(model(**alone), logits[i : i + 1]) <= PARITY_ATOL


def test_full_size_vilt_b32_matches_transformers_at_384():
    reference = HfViltForQuestionAnswering(ViltConfig(num_labels=3129)).eval()
    # transformers' init already randomises the large matrices (std 0.02); randomise the
    # rest (norms, biases, position embeddings, [CLS]) cheaply.
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if param.numel() <= 200_000:
                scale = (
                    1.0
                    if param.dim() == 1
                    and name.endswith("weight")
                    and ("norm" in name.lower() or name.startswith("classifier.1."))
                    else 0.0
                )
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1 + scale)
    with torch.device("meta"):  # every tensor is assigned from the reference: skip the initialisation
        model = mobilevt.create_model("vilt_b32_vqa").eval()
    assert model.arch.hidden_size == 768 and model.num_layers == 12 and model.num_answers == 3129
    model.load_state_dict(mobilevt.convert_state_dict(reference.state_dict(), model), assign=True)
    inputs = _inputs([(384, 384)], [40], seed=4)
    expected = _reference_logits(reference, inputs)
    assert expected.abs().max() > 0.1
    with torch.no_grad():
        assert max_abs(model(**inputs), expected) <= PARITY_ATOL


# ---------------------------------------------------------------------------------------
# Loading


def test_hf_folder_gives_architecture_and_answers(model, hf_folder):
    assert model.answers == ANSWERS
    assert model.num_answers == len(ANSWERS)
    assert (model.arch.hidden_size, model.num_layers, model.arch.num_heads, model.arch.image_size) == (96, 3, 4, 160)
    assert model.arch.layer_norm_eps == 1e-12  # ViltConfig's, not nn.LayerNorm's default
    assert model.model_name == "vilt_b32_vqa"
    # the weights file itself loads alike, with the config.json beside it
    from_file = mobilevt.create_model("vilt_b32_vqa", weights=hf_folder / "model.safetensors")
    for (key, a), (_, b) in zip(model.state_dict().items(), from_file.state_dict().items()):
        assert torch.equal(a, b), key
    assert from_file.answers == ANSWERS


def _hf_to_dandelin(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """The dandelin/ViLT key layout, written independently from transformers'
    convert_vilt_original_to_pytorch.py (read in reverse)."""
    e = "vilt.embeddings."
    out = {
        "text_embeddings.word_embeddings.weight": state[e + "text_embeddings.word_embeddings.weight"],
        "text_embeddings.position_embeddings.weight": state[e + "text_embeddings.position_embeddings.weight"],
        "text_embeddings.token_type_embeddings.weight": state[e + "text_embeddings.token_type_embeddings.weight"],
        "text_embeddings.LayerNorm.weight": state[e + "text_embeddings.LayerNorm.weight"],
        "text_embeddings.LayerNorm.bias": state[e + "text_embeddings.LayerNorm.bias"],
        "text_embeddings.position_ids": torch.arange(40)[None],  # a buffer old BERT embeddings saved
        "token_type_embeddings.weight": state[e + "token_type_embeddings.weight"],
        "transformer.cls_token": state[e + "cls_token"],
        "transformer.pos_embed": state[e + "position_embeddings"],
        "transformer.patch_embed.proj.weight": state[e + "patch_embeddings.projection.weight"],
        "transformer.patch_embed.proj.bias": state[e + "patch_embeddings.projection.bias"],
        "transformer.norm.weight": state["vilt.layernorm.weight"],
        "transformer.norm.bias": state["vilt.layernorm.bias"],
        "pooler.dense.weight": state["vilt.pooler.dense.weight"],
        "pooler.dense.bias": state["vilt.pooler.dense.bias"],
    }
    for i in (0, 1, 3):
        for p in ("weight", "bias"):
            out[f"vqa_classifier.{i}.{p}"] = state[f"classifier.{i}.{p}"]
    for i in range(num_layers):
        hf, dd = f"vilt.encoder.layer.{i}.", f"transformer.blocks.{i}."
        for p in ("weight", "bias"):
            out[dd + f"norm1.{p}"] = state[hf + f"layernorm_before.{p}"]
            out[dd + f"norm2.{p}"] = state[hf + f"layernorm_after.{p}"]
            out[dd + f"attn.proj.{p}"] = state[hf + f"attention.output.dense.{p}"]
            out[dd + f"mlp.fc1.{p}"] = state[hf + f"intermediate.dense.{p}"]
            out[dd + f"mlp.fc2.{p}"] = state[hf + f"output.dense.{p}"]
            out[dd + f"attn.qkv.{p}"] = torch.cat(
                [state[hf + f"attention.attention.{n}.{p}"] for n in ("query", "key", "value")]
            )
    return out


def test_dandelin_ckpt_matches_transformers(reference, tmp_path):
    path = tmp_path / "vilt_vqa.ckpt"
    torch.save({"epoch": 9, "global_step": 1000, "state_dict": _hf_to_dandelin(reference.state_dict(), 3)}, path)
    model = mobilevt.create_model("vilt_b32_vqa", weights=str(path), answers=ANSWERS, **SMALL).eval()
    # dandelin/ViLT's ViT blocks normalise with timm's eps 1e-6, its BERT embeddings with 1e-12
    assert model.encoder.layers[0].norm1.eps == 1e-6 and model.norm.eps == 1e-6
    assert model.text_embeddings.norm.eps == 1e-12
    assert model.answers == ANSWERS and model.num_answers == len(ANSWERS)
    # transformers with the original encoder epsilon (its one epsilon also applies to the
    # text norm, where 1e-6 vs 1e-12 is far below the tolerance for these activations)
    original_eps = HfViltForQuestionAnswering(_hf_config(layer_norm_eps=1e-6)).eval()
    original_eps.load_state_dict(reference.state_dict())
    inputs = _inputs([(96, 224), (160, 128)], [9, 14], seed=6)
    with torch.no_grad():
        assert max_abs(model(**inputs), _reference_logits(original_eps, inputs)) <= PARITY_ATOL
    without_names = mobilevt.create_model("vilt_b32_vqa", weights=str(path), **SMALL)
    assert without_names.answers == []  # a .ckpt does not name its answers


def test_new_answer_vocabulary_keeps_everything_but_the_last_layer(hf_folder, model):
    fine_tune = mobilevt.create_model("vilt_b32_vqa", weights=str(hf_folder), num_classes=5)
    assert fine_tune.head.fc2.out_features == 5 and fine_tune.answers == []
    loaded = model.state_dict()
    for key, value in fine_tune.state_dict().items():
        if not key.startswith("head.fc2."):
            assert torch.equal(value, loaded[key]), key


def test_other_task_checkpoint_names_the_keys(tmp_path):
    HfViltForMaskedLM(ViltConfig(**SMALL_HF)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointMismatchError) as err:
        mobilevt.create_model("vilt_b32_vqa", weights=str(tmp_path))
    message = str(err.value)
    assert "classifier.0.weight" in err.value.missing and "classifier.3.weight" in err.value.missing
    assert any(k.startswith("mlm_score.") for k in err.value.unexpected)
    assert "mlm_score." in message and "classifier.3.weight" in message
    assert "ViltForMaskedLM" in message and "masked-language-model" in message


def test_other_size_without_config_names_mis_shaped_keys(reference, tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "weights.safetensors"))
    weights = str(tmp_path / "weights.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:  # no config.json: the registered B/32 is assumed
        mobilevt.create_model("vilt_b32_vqa", weights=weights)
    assert "vilt.encoder.layer.3.layernorm_before.weight" in err.value.missing
    assert "has 3 encoder layers, the model 12" in str(err.value) and "num_layers=3" in str(err.value)
    with pytest.raises(CheckpointMismatchError) as err:
        mobilevt.create_model("vilt_b32_vqa", weights=weights, num_layers=3)
    assert "text_embeddings.word_embeddings.weight [30522, 96] vs model [30522, 768]" in str(err.value)
    assert "hidden_size=" in str(err.value)
    # with the architecture given it loads
    loaded = mobilevt.create_model("vilt_b32_vqa", weights=str(tmp_path / "weights.safetensors"), **SMALL)
    assert loaded.num_answers == len(ANSWERS)


def test_mobilevit_checkpoint_is_refused(tmp_path):
    path = mobilevt.save_weights(mobilevt.create_model("mobilevit_xxs"), tmp_path / "xxs.safetensors")
    with pytest.raises(CheckpointMismatchError, match="not a ViLT checkpoint.*MobileViT checkpoint"):
        mobilevt.create_model("vilt_b32_vqa", weights=str(path))


def test_hub_id_offline_says_what_to_download(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    for source in ("dandelin/vilt-b32-finetuned-vqa", "hf-hub:dandelin/vilt-b32-finetuned-vqa", "DEFAULT"):
        with pytest.raises(WeightsNotFoundError) as err:
            mobilevt.create_model("vilt_b32_vqa", weights=source)
        message = str(err.value)
        assert "config.json and model.safetensors" in message
        assert "https://huggingface.co/dandelin/vilt-b32-finetuned-vqa" in message and str(tmp_path) in message


# ---------------------------------------------------------------------------------------
# mobilevt.load_weights / mobilevt.save_weights


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert list(state_a) == list(state_b)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def test_load_weights_reads_hf_folders_dandelin_ckpts_and_mobilevt_files(reference, hf_folder, model, tmp_path):
    # `model` is the Hugging Face folder loaded by create_model (its logits match transformers above)
    for source in (hf_folder, hf_folder / "model.safetensors"):
        fresh = mobilevt.create_model("vilt_b32_vqa", num_classes=len(ANSWERS), **SMALL)
        assert fresh.answers == []
        assert mobilevt.load_weights(fresh, source) is fresh
        _assert_same_state(fresh, model)
        assert fresh.answers == ANSWERS  # id2label of the config.json beside the weights
    # dandelin/ViLT .ckpt: the same tensors; it names no answers, so the model keeps its own
    ckpt = tmp_path / "vilt_vqa.ckpt"
    torch.save({"state_dict": _hf_to_dandelin(reference.state_dict(), 3)}, ckpt)
    names = [f"answer {i}" for i in range(len(ANSWERS))]
    fresh = mobilevt.create_model("vilt_b32_vqa", num_classes=len(ANSWERS), answers=names, layer_norm_eps=1e-6, **SMALL)
    mobilevt.load_weights(fresh, ckpt)
    _assert_same_state(fresh, model)
    assert fresh.answers == names
    # mobilevt's own file
    saved = mobilevt.save_weights(model, tmp_path / "vilt.safetensors")
    fresh = mobilevt.create_model("vilt_b32_vqa", num_classes=len(ANSWERS), **SMALL)
    mobilevt.load_weights(fresh, saved)
    _assert_same_state(fresh, model)
    assert fresh.answers == ANSWERS
    inputs = _inputs([(96, 224)], [9], seed=11)
    with torch.no_grad():  # equal tensors; 1e-5: memory alignment may change the SIMD summation order (CI: 1.5e-6)
        assert max_abs(fresh.eval()(**inputs), model(**inputs)) <= 1e-5


def _small_trained_like_vilt(seed: int) -> torch.nn.Module:
    """A ViLT of another size and norm epsilon than B/32, with answer names and trained-
    looking (random) MobiVQA exit heads: what a user saves after training one."""
    model = mobilevt.create_model(
        "vilt_b32_vqa",
        num_classes=5,
        answers=["yes", "no", "red", "blue", "3"],
        hidden_size=64,
        num_layers=4,
        num_heads=4,
        mlp_dim=128,
        patch_size=16,
        image_size=128,
        vocab_size=300,
        max_text_len=16,
        layer_norm_eps=1e-6,
    )
    model.add_early_exits([1, 2, 3], predictor_layer=1, predictor_hidden=32)
    return _randomize(model, seed, std=0.1)


def test_save_weights_round_trips_architecture_answers_and_exit_heads(tmp_path):
    model = _small_trained_like_vilt(seed=12)
    path = mobilevt.save_weights(model, tmp_path / "easy_vqa.safetensors")
    loaded = mobilevt.create_model("vilt_b32_vqa", weights=str(path)).eval()
    assert loaded.arch == model.arch and loaded.answers == model.answers
    assert loaded.exit_layers == [1, 2, 3] and loaded.predictor_layer == 1
    assert loaded.exit_predictor[0].fc1.out_features == 32
    _assert_same_state(loaded, model)
    generator = torch.Generator().manual_seed(0)
    inputs = (
        torch.randint(5, 300, (2, 9), generator=generator),
        torch.ones(2, 9, dtype=torch.long),
        torch.randn(2, 3, 128, 96, generator=generator),
    )
    with torch.no_grad():  # 1e-6: equal tensors, possibly another memory alignment (SIMD summation order)
        assert max_abs(loaded(*inputs), model(*inputs)) <= 1e-6
        for mobivqa in (model, loaded):
            mobivqa.set_early_exit(predictor=True)
            mobivqa.set_token_pruning(1, 0.5)
        (logits, layers), (expected_logits, expected_layers) = (
            loaded.forward_with_exit(*inputs),
            model.forward_with_exit(*inputs),
        )
        assert max_abs(logits, expected_logits) <= 1e-6 and torch.equal(layers, expected_layers)
    # load_weights into a model built alike reads it back identically too
    again = _small_trained_like_vilt(seed=13)
    again.answers = []
    mobilevt.load_weights(again, path)
    _assert_same_state(again, model)
    assert again.answers == model.answers


def test_load_weights_refuses_other_checkpoints_naming_keys_and_leaves_the_model_unchanged(
    reference, hf_folder, tmp_path
):
    target = mobilevt.create_model("vilt_b32_vqa", num_classes=len(ANSWERS), **dict(SMALL, num_layers=2))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as err:  # a 3-layer checkpoint into a 2-layer model
        mobilevt.load_weights(target, hf_folder)
    assert any(k.startswith("vilt.encoder.layer.2.") for k in err.value.unexpected)
    assert "vilt.encoder.layer.2." in str(err.value) and "has 3 encoder layers, the model 2" in str(err.value)
    # a mobilevt file with exit heads into a model without them: the keys and what to do
    trained = _small_trained_like_vilt(seed=14)
    path = mobilevt.save_weights(trained, tmp_path / "with_exits.safetensors")
    plain = mobilevt.create_model(
        "vilt_b32_vqa",
        num_classes=5,
        hidden_size=64,
        num_layers=4,
        num_heads=4,
        mlp_dim=128,
        patch_size=16,
        image_size=128,
        vocab_size=300,
        max_text_len=16,
        layer_norm_eps=1e-6,
    )
    with pytest.raises(CheckpointMismatchError) as err:
        mobilevt.load_weights(plain, path)
    assert "exit_heads.0.head.fc2.weight" in err.value.unexpected and "exit_heads.0.head.fc2.weight" in str(err.value)
    assert "exit heads after layers [1, 2, 3]" in str(
        err.value
    ) and "create_model('vilt_b32_vqa', weights=path)" in str(err.value)
    # the same keys and shapes but another norm epsilon: named although no key differs
    other_eps = _small_trained_like_vilt(seed=15)
    object.__setattr__(other_eps, "arch", dataclasses.replace(other_eps.arch, layer_norm_eps=1e-12))
    with pytest.raises(CheckpointMismatchError, match=r"layer_norm_eps=1e-06 \(model 1e-12\)"):
        mobilevt.load_weights(other_eps, path)
    # a masked-LM checkpoint: its head keys and what it is
    HfViltForMaskedLM(ViltConfig(**SMALL_HF)).save_pretrained(tmp_path / "mlm")
    with pytest.raises(CheckpointMismatchError) as err:
        mobilevt.load_weights(target, tmp_path / "mlm")
    assert any(k.startswith("mlm_score.") for k in err.value.unexpected) and "masked-language-model" in str(err.value)
    with pytest.raises(CheckpointMismatchError, match="not a ViLT checkpoint"):
        mobilevt.load_weights(
            target, mobilevt.save_weights(mobilevt.create_model("mobilevit_xxs"), tmp_path / "x.safetensors")
        )
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), key  # nothing half-loaded


def test_exit_heads_without_their_layers_are_refused_with_what_to_do(tmp_path):
    """A bare state dict (safetensors without mobilevt metadata) with exit heads."""
    from safetensors.torch import save_file

    trained = _small_trained_like_vilt(seed=16)
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    arch = dict(
        hidden_size=64,
        num_layers=4,
        num_heads=4,
        mlp_dim=128,
        patch_size=16,
        image_size=128,
        vocab_size=300,
        max_text_len=16,
        layer_norm_eps=1e-6,
    )
    with pytest.raises(CheckpointMismatchError) as err:
        mobilevt.create_model("vilt_b32_vqa", weights=str(path), **arch)
    assert "exit_predictor.0.fc1.weight" in err.value.unexpected
    assert "add_early_exits(exit_layers" in str(err.value) and "load_weights" in str(err.value)
    # what the message says works
    model = mobilevt.create_model("vilt_b32_vqa", num_classes=5, **arch)
    model.add_early_exits([1, 2, 3], predictor_layer=1, predictor_hidden=32)
    mobilevt.load_weights(model, path)
    _assert_same_state(model, trained)


# ---------------------------------------------------------------------------------------
# Export


@pytest.fixture(scope="module")
def two_sizes():
    return [_inputs([(128, 192), (96, 160)], [10, 12], seed=7), _inputs([(224, 96), (160, 64)], [12, 7], seed=8)]


def _args(inputs):
    return tuple(inputs[k] for k in ("input_ids", "attention_mask", "pixel_values", "pixel_mask"))


def test_torchscript_matches_eager(model, two_sizes):
    scripted = torch.jit.script(model)
    with torch.no_grad():
        for inputs in two_sizes:
            assert max_abs(scripted(*_args(inputs)), model(*_args(inputs))) <= 1e-5


def test_torch_export_with_dynamic_image_size(model, two_sizes):
    # ViltProcessor's sizes are multiples of the patch size: height = 32 * rows
    height = 32 * torch.export.Dim("patch_rows", min=2, max=40)
    width = 32 * torch.export.Dim("patch_cols", min=2, max=40)
    program = torch.export.export(
        model,
        _args(two_sizes[0]),
        dynamic_shapes={
            "input_ids": None,
            "attention_mask": None,
            "pixel_values": {2: height, 3: width},
            "pixel_mask": {1: height, 2: width},
        },
    )
    exported = program.module()
    with torch.no_grad():
        for inputs in two_sizes:
            assert max_abs(exported(*_args(inputs)), model(*_args(inputs))) <= 1e-5


def test_onnx_export_with_dynamic_image_size_runs_in_onnxruntime(model, two_sizes, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    names = ["input_ids", "attention_mask", "pixel_values", "pixel_mask"]
    path = tmp_path / "vilt.onnx"
    torch.onnx.export(
        model,
        _args(two_sizes[0]),
        str(path),
        input_names=names,
        output_names=["logits"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={
            "input_ids": {0: "batch", 1: "text"},
            "attention_mask": {0: "batch", 1: "text"},
            "pixel_values": {0: "batch", 2: "height", 3: "width"},
            "pixel_mask": {0: "batch", 1: "height", 2: "width"},
            "logits": {0: "batch"},
        },
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    single = _inputs([(64, 320)], [5], seed=9)
    for inputs in two_sizes + [single]:
        (logits,) = session.run(None, {k: inputs[k].numpy() for k in names})
        with torch.no_grad():
            assert max_abs(torch.from_numpy(logits), model(**inputs)) <= PARITY_ATOL


# ---------------------------------------------------------------------------------------
# Layer-wise access (for early exits and token pruning), inputs, registry


def test_forward_in_layer_steps_and_attention_weights(model):
    inputs = _inputs([(96, 224), (160, 128)], [9, 14], seed=10)
    with torch.no_grad():
        expected = model(**inputs)
        hidden, key_mask = model.embed(**inputs)
        text_len = inputs["input_ids"].shape[1]
        assert hidden.shape[1] == text_len + 1 + 5 * 7 and key_mask.shape == (2, 1, 1, hidden.shape[1])
        hidden = model.encoder.forward_layers(hidden, key_mask, 0, 1)
        out, weights = model.encoder.layers[1].forward_with_attention(hidden, key_mask)
        assert max_abs(out, model.encoder.layers[1](hidden, key_mask)) <= 1e-5
        hidden = model.encoder.forward_layers(out, key_mask, 2, model.num_layers)
        assert max_abs(model.answer_logits(hidden), expected) <= 1e-5
    assert weights.shape == (2, 4, hidden.shape[1], hidden.shape[1])
    assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
    # text-[CLS]-to-image attention: image 0 (96x224 in a 160x224 batch) has 3x7 valid
    # patches of 5x7; its padded patches and padded text tokens get exactly zero.
    patches = weights[0, :, 0, text_len + 1 :].reshape(4, 5, 7)
    assert (patches[:, 3:] == 0).all() and (patches[:, :3] > 0).all()
    assert (weights[0, :, :, 9:text_len] == 0).all()


def test_bad_inputs_raise_clear_errors(model):
    inputs = _inputs([(64, 64)], [41])
    with pytest.raises(ValueError, match="at most 40.*max_length=40"):
        model(**inputs)
    with pytest.raises(ValueError, match="needs pixel_values"):
        model(inputs["input_ids"][:, :5])
    with pytest.raises(ValueError, match=r"pixel_values must be \[batch, 3, height, width\]"):
        model(inputs["input_ids"][:, :5], pixel_values=torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="unknown ViLT option.*hidden_dim"):
        mobilevt.create_model("vilt_b32_vqa", hidden_dim=8)


def test_image_size_rule_matches_transformers_processor(model):
    from transformers import ViltImageProcessor

    processor = ViltImageProcessor()
    rule = model.image_size_rule
    assert (rule.mean, rule.std) == (tuple(processor.image_mean), tuple(processor.image_std))
    assert rule.shorter_side == processor.size["shortest_edge"] and rule.size_divisor == processor.size_divisor
    assert rule.interpolation == "bicubic" and int(processor.resample) == 3  # PIL BICUBIC
    generator = torch.Generator().manual_seed(0)
    for height, width in [(480, 640), (640, 480), (300, 1200), (384, 384), (100, 90), (1000, 333)]:
        image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
        shape = processor(image, return_tensors="pt")["pixel_values"].shape[-2:]
        assert rule.output_size(height, width) == tuple(shape), (height, width)


def test_registered_with_its_task_and_in_the_models_table(capsys):
    assert "vilt_b32_vqa" in mobilevt.list_models(kind="visual-question-answering")
    assert "vilt_b32_vqa" not in mobilevt.list_models(kind="image-classification")
    assert mobilevt.get_model_entry("vilt_b32_vqa").default_weights.source == "hf-hub:dandelin/vilt-b32-finetuned-vqa"
    assert main(["models", "vilt*", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    with torch.device("meta"):
        reference_params = sum(p.numel() for p in HfViltForQuestionAnswering(ViltConfig(num_labels=3129)).parameters())
    assert row["params_m"] == pytest.approx(reference_params / 1e6, abs=1e-3)
    assert row["resolution"] == "384x384 + 40 tokens"
    # 185 tokens (40 text + [CLS] + 12x12 patches) through 11 layers of width 768; the
    # last layer projects all tokens (one qkv matrix product: constant weights, which
    # ExecuTorch's XNNPACK delegate needs) but attends and outputs for the text [CLS] only;
    # plus the patch projection, the position-grid resize (two 12x12x12x768 matmuls) and
    # the pooler/classifier on one token
    tokens, dim = 185, 768
    expected = 11 * (tokens * (4 * dim * dim + 2 * dim * 4 * dim) + 2 * tokens * tokens * dim)
    expected += tokens * 3 * dim * dim + (dim * dim + 2 * dim * 4 * dim) + 2 * tokens * dim
    expected += 144 * 3 * 32 * 32 * dim + 2 * 12**3 * dim + dim * dim + dim * 2 * dim + 2 * dim * 3129
    assert row["macs_g"] == pytest.approx(expected / 1e9, abs=1e-3)

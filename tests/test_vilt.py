"""ViLT-B/32 VQA: logit parity with transformers' ViltForQuestionAnswering (random
weights, single images and padded batches with pixel_mask), loading Hugging Face folders
and dandelin/ViLT .ckpt files, refusal of other checkpoints with the keys named, and
TorchScript / torch.export / ONNX export with dynamic image size.

Tolerances: parity with transformers and onnxruntime 1e-4 (PARITY_ATOL: different
kernels and summation orders); TorchScript and torch.export run the same kernels (1e-5).
Most tests use a small ViLT (hidden 96, 3 layers) for speed; one runs the full B/32."""
from __future__ import annotations

import json

import pytest
import torch

import mobilevt
from conftest import PARITY_ATOL, max_abs
from mobilevt import CheckpointMismatchError, WeightsNotFoundError
from mobilevt.cli.main import main
from mobilevt.weights.vilt_convert import convert_vilt_state_dict

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
            is_norm_scale = param.dim() == 1 and name.endswith("weight") and (
                "norm" in name.lower() or name.startswith("classifier.1.")
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
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values, "pixel_mask": pixel_mask}


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
                scale = 1.0 if param.dim() == 1 and name.endswith("weight") and ("norm" in name.lower() or name.startswith("classifier.1.")) else 0.0
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1 + scale)
    with torch.device("meta"):  # every tensor is assigned from the reference: skip the initialisation
        model = mobilevt.create_model("vilt_b32_vqa").eval()
    assert model.arch.hidden_size == 768 and model.num_layers == 12 and model.num_answers == 3129
    model.load_state_dict(convert_vilt_state_dict(reference.state_dict(), model), assign=True)
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
            "input_ids": None, "attention_mask": None,
            "pixel_values": {2: height, 3: width}, "pixel_mask": {1: height, 2: width},
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
        model, _args(two_sizes[0]), str(path), input_names=names, output_names=["logits"], opset_version=17,
        dynamo=False,
        dynamic_axes={
            "input_ids": {0: "batch", 1: "text"}, "attention_mask": {0: "batch", 1: "text"},
            "pixel_values": {0: "batch", 2: "height", 3: "width"}, "pixel_mask": {0: "batch", 1: "height", 2: "width"},
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
    assert "vilt_b32_vqa" in mobilevt.list_models(task="visual-question-answering")
    assert "vilt_b32_vqa" not in mobilevt.list_models(task="image-classification")
    assert mobilevt.get_model_entry("vilt_b32_vqa").default_weights.source == "hf-hub:dandelin/vilt-b32-finetuned-vqa"
    assert main(["models", "vilt*", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    with torch.device("meta"):
        reference_params = sum(p.numel() for p in HfViltForQuestionAnswering(ViltConfig(num_labels=3129)).parameters())
    assert row["params_m"] == pytest.approx(reference_params / 1e6, abs=1e-3)
    assert row["resolution"] == "384x384 + 40 tokens"
    # 185 tokens (40 text + [CLS] + 12x12 patches) through 11 layers of width 768; the
    # last layer computes keys and values of all tokens but outputs only the text [CLS];
    # plus the patch projection, the position-grid resize (two 12x12x12x768 matmuls) and
    # the pooler/classifier on one token
    tokens, dim = 185, 768
    expected = 11 * (tokens * (4 * dim * dim + 2 * dim * 4 * dim) + 2 * tokens * tokens * dim)
    expected += tokens * 2 * dim * dim + (2 * dim * dim + 2 * dim * 4 * dim) + 2 * tokens * dim
    expected += 144 * 3 * 32 * 32 * dim + 2 * 12**3 * dim + dim * dim + dim * 2 * dim + 2 * dim * 3129
    assert row["macs_g"] == pytest.approx(expected / 1e9, abs=1e-3)

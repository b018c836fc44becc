"""MobiVQA optimisations on ViLT: early exit (confidence threshold, exit predictor, fixed
layer) and question-guided image-token pruning, switched at run time.

Expected values are computed independently from the model's public pieces (embed,
encoder layers, their attention probabilities, exit heads), never by the code paths
under test. Tolerances: 1e-6 (relative to the logit scale) where the same math runs in another
order (pruning with ratio 1.0 permutes the image tokens), 1e-5 for TorchScript / torch.export against eager."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mobilevt.models.mobivqa import MobiVqaVilt, build_vilt_b32_vqa, prune_image_tokens, text_to_image_attention
from mobilevt.training.vqa import VqaSplit, train_exit_heads

SMALL = dict(hidden_size=64, num_layers=6, num_heads=4, mlp_dim=128, image_size=128, patch_size=16, vocab_size=300)
EXIT_LAYERS = [2, 3, 4]


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """All parameters random (biases, position embeddings and [CLS] are zeros by default)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            is_norm_scale = param.dim() == 1 and name.endswith("weight") and "norm" in name
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + (1.0 if is_norm_scale else 0.0))
    return model.eval()


def _model(seed: int = 0) -> MobiVqaVilt:
    model = build_vilt_b32_vqa(num_answers=7, **SMALL)
    model.add_early_exits(EXIT_LAYERS, predictor_layer=2)
    return _randomize(model, seed)


def _inputs(seed: int = 0, padded: bool = True):
    """Two questions (11 and 7 tokens) and two images, the second padded to 96x128 of
    the batch's 128x128 (pixel_mask)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 300, (2, 11), generator=generator)
    attention_mask = torch.ones(2, 11, dtype=torch.long)
    attention_mask[1, 7:] = 0
    input_ids[1, 7:] = 0
    pixel_values = torch.randn(2, 3, 128, 128, generator=generator)
    pixel_mask = torch.ones(2, 128, 128, dtype=torch.long)
    if padded:
        pixel_values[1, :, 96:] = 0
        pixel_mask[1, 96:] = 0
    return input_ids, attention_mask, pixel_values, pixel_mask


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(autouse=True)
def _switch_off(model):
    yield
    model.set_early_exit()
    model.set_token_pruning(0)


def _states_after(model, inputs, layers: int):
    hidden, key_mask = model.embed(*inputs)
    return model.encoder.forward_layers(hidden, key_mask, 0, layers), key_mask


def test_all_off_is_bit_identical_to_the_plain_model(model):
    plain = build_vilt_b32_vqa(num_answers=7, **SMALL)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("exit_")})
    plain.eval()
    inputs = _inputs()
    with torch.no_grad():
        expected = plain(*inputs)
        assert torch.equal(model(*inputs), expected)
        model.set_token_pruning(2, 0.5)
        model.set_early_exit(threshold=0.5)
        model.set_early_exit()
        model.set_token_pruning(0)
        assert torch.equal(model(*inputs), expected)  # switched back off: identical again


def test_pruning_keeps_the_top_k_image_tokens_by_text_to_image_attention(model):
    inputs = _inputs()
    num_text = inputs[0].shape[1]
    with torch.no_grad():
        hidden, key_mask = _states_after(model, inputs, 1)
        out, attention = model.encoder.layers[1].forward_with_attention(hidden, key_mask)
        _, new_mask, kept = prune_image_tokens(out, key_mask, attention, num_text, 0.5)
    patches = out.shape[1] - num_text - 1  # 64 patch positions
    valid_patches = [64, 48]  # the second image has 6 of its 8 patch rows
    for b in range(2):
        # independent score: mean over heads, then over the real question tokens
        text_rows = int(inputs[1][b].sum())
        score = attention[b, :, :text_rows, num_text + 1 :].mean(dim=0).mean(dim=0)
        score[valid_patches[b] :] = -1.0  # padded patches never count
        k = math.ceil(0.5 * valid_patches[b])
        expected = set(score.topk(k).indices.tolist())
        kept_valid = new_mask[b, 0, 0, num_text + 1 :]
        assert int(kept_valid.sum()) == k
        assert set(kept[b][kept_valid].tolist()) == expected
    assert kept.shape == (2, math.ceil(0.5 * patches))
    assert torch.equal(new_mask[:, 0, 0, : num_text + 1], key_mask[:, 0, 0, : num_text + 1])  # text + image [CLS] kept


def test_text_to_image_attention_ignores_padded_question_tokens():
    attention = torch.rand(1, 2, 6, 6).softmax(dim=-1)
    key_mask = torch.tensor([[True, True, False, True, True, True]])[:, None, None, :]
    expected = attention[0, :, :2, 3:].mean(dim=0).mean(dim=0)  # text queries 0 and 1 only
    assert torch.allclose(text_to_image_attention(attention, key_mask, 3)[0], expected, atol=1e-7)


def test_pruned_model_runs_on_fewer_tokens(model):
    inputs = _inputs()
    seen = []
    handle = model.encoder.layers[3].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    try:
        model.set_token_pruning(2, 0.25)
        with torch.no_grad():
            model(*inputs)
    finally:
        handle.remove()
    assert seen == [11 + 1 + 16]  # text + image [CLS] + ceil(0.25 * 64) patches


def test_pruning_with_ratio_one_equals_the_full_model(model):
    inputs = _inputs()
    with torch.no_grad():
        expected = model(*inputs)
        for layer in (1, 3, 5):
            model.set_token_pruning(layer, 1.0)
            # 1e-5 relative to the logit scale: the kept tokens are reordered by score, which changes the
            # float32 summation order (CI measured 1.2e-6 relative); a dropped or wrong token moves logits by > 1e-2
            assert (model(*inputs) - expected).abs().max() <= 1e-5 * max(1.0, float(expected.abs().max()))


def test_pruning_changes_answers_only_through_dropped_tokens(model):
    """Keep ratio 0.5: equals running the remaining layers on the hand-gathered tokens."""
    inputs = _inputs(padded=False)
    num_text = inputs[0].shape[1]
    model.set_token_pruning(2, 0.5)
    with torch.no_grad():
        hidden, key_mask = _states_after(model, inputs, 1)
        out, attention = model.encoder.layers[1].forward_with_attention(hidden, key_mask)
        score = attention[:, :, :, num_text + 1 :].mean(dim=1)
        text_valid = inputs[1][:, :, None].float()
        score = (score[:, :num_text] * text_valid).sum(1) / text_valid.sum(1)
        keep = score.topk(32, dim=1).indices.sort(dim=1).values + num_text + 1
        rows = torch.cat([torch.arange(num_text + 1).expand(2, -1), keep], dim=1)
        pruned = torch.stack([out[b, rows[b]] for b in range(2)])
        pruned_mask = torch.stack([key_mask[b, :, :, rows[b]] for b in range(2)])
        pruned = model.encoder.forward_layers(pruned, pruned_mask, 2, 6)
        expected = model.answer_logits(pruned)
        assert (model(*inputs) - expected).abs().max() <= 1e-5


def test_exit_head_logits_are_head_of_the_state_after_that_layer(model):
    inputs = _inputs()
    with torch.no_grad():
        for index, layer in enumerate(EXIT_LAYERS):
            hidden, _ = _states_after(model, inputs, layer)
            head = model.exit_heads[index]
            pooled = torch.tanh(head.pooler(head.norm(hidden[:, 0])))
            expected = head.head.fc2(F.gelu(head.head.norm(head.head.fc1(pooled))))
            model.set_early_exit(layer=layer)
            logits, layers_run = model.forward_with_exit(*inputs)
            assert (logits - expected).abs().max() <= 1e-6
            assert layers_run.tolist() == [layer, layer]


def _count_layer_calls(model):
    calls = []
    handles = [
        layer.register_forward_pre_hook(lambda module, args, number=number: calls.append(number))
        for number, layer in enumerate(model.encoder.layers, start=1)
    ]
    return calls, handles


def test_confidence_exit_stops_at_the_expected_layer(model):
    inputs = _inputs()
    with torch.no_grad():
        model.set_early_exit(threshold=0.0)  # every head is confident: the first exit
        logits, layers_run = model.forward_with_exit(*inputs)
        assert layers_run.tolist() == [2, 2]
        hidden, _ = _states_after(model, inputs, 2)
        assert torch.equal(logits, model.exit_heads[0](hidden))
        model.set_early_exit(threshold=1.01)  # never confident: the full model
        logits, layers_run = model.forward_with_exit(*inputs)
        assert layers_run.tolist() == [6, 6]
        model.set_early_exit()
        assert (logits - model(*inputs)).abs().max() <= 1e-6
        # a threshold between the two images' top probabilities at layer 3
        scores = [
            model.exit_heads[i](_states_after(model, inputs, layer)[0]).softmax(-1).amax(-1)
            for i, layer in enumerate(EXIT_LAYERS)
        ]
        threshold = float(scores[0].max()) + 1e-4  # nobody exits at layer 2
        expected = []
        for b in range(2):
            layer_b = next((layer for layer, s in zip(EXIT_LAYERS, scores) if float(s[b]) >= threshold), 6)
            expected.append(layer_b)
        model.set_early_exit(threshold=threshold)
        calls, handles = _count_layer_calls(model)
        try:
            _, layers_run = model.forward_with_exit(*inputs)
        finally:
            for handle in handles:
                handle.remove()
        assert layers_run.tolist() == expected
        assert 2 not in expected
        assert max(calls) == max(expected) or max(expected) == 6  # the last layer runs as forward_queries (no hook)


def test_batched_confidence_exit_equals_each_question_alone(model):
    inputs = _inputs()
    with torch.no_grad():
        model.set_early_exit(threshold=0.3)
        batched, layers = model.forward_with_exit(*inputs)
        for b in range(2):
            length = int(inputs[1][b].sum())
            height = int(inputs[3][b, :, 0].sum())
            alone, alone_layers = model.forward_with_exit(
                inputs[0][b : b + 1, :length], inputs[1][b : b + 1, :length], inputs[2][b : b + 1, :, :height]
            )
            assert alone_layers.tolist() == [int(layers[b])]
            assert (alone - batched[b : b + 1]).abs().max() <= 1e-5


def test_exit_predictor_picks_layers_and_the_model_runs_only_that_far():
    model = _model(seed=3)
    inputs = _inputs()
    predictor = model.exit_predictor[0]
    choices = [0, 1, 2, 3]  # exits after 2, 3, 4 layers, then the full model
    for choice in choices:
        with torch.no_grad():  # force the choice: a bias that dominates the MLP's output
            predictor.fc2.bias.zero_()
            predictor.fc2.bias[choice] = 1e4
        model.set_early_exit(predictor=True)
        calls, handles = _count_layer_calls(model)
        try:
            with torch.no_grad():
                logits, layers_run = model.forward_with_exit(*inputs)
        finally:
            for handle in handles:
                handle.remove()
        expected_layers = (EXIT_LAYERS + [6])[choice]
        assert layers_run.tolist() == [expected_layers] * 2
        ran = sorted(set(calls))
        assert ran == list(range(1, min(expected_layers, 5) + 1))  # the 6th runs as forward_queries
        with torch.no_grad():
            if choice < 3:
                hidden, _ = _states_after(model, inputs, expected_layers)
                assert torch.equal(logits, model.exit_heads[choice](hidden))
    # the predictor's input: mean of valid text and of valid image tokens after layer 2
    with torch.no_grad():
        hidden, key_mask = _states_after(model, inputs, 2)
        b = 1
        text = hidden[b, :7].mean(0)
        image = hidden[b, 11 : 11 + 1 + 48].mean(0)  # image [CLS] + 6 valid rows of 8 patches
        expected = predictor.fc2(F.gelu(predictor.fc1(torch.cat([text, image]))))
        assert (predictor(hidden, key_mask, 11)[b] - expected).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "exit_kwargs, pruning",
    [
        ({}, (0, 1.0)),
        ({}, (2, 0.5)),
        ({"threshold": 0.3}, (0, 1.0)),
        ({"predictor": True}, (0, 1.0)),
        ({"layer": 3}, (2, 0.5)),
        ({"threshold": 0.3}, (3, 0.25)),
    ],
)
def test_scripted_equals_eager(model, exit_kwargs, pruning):
    scripted = torch.jit.script(model)
    inputs = _inputs()
    model.set_early_exit(**exit_kwargs)
    model.set_token_pruning(*pruning)
    scripted.set_early_exit(**exit_kwargs)  # the switches are TorchScript methods too
    scripted.set_token_pruning(*pruning)
    with torch.no_grad():
        eager_logits, eager_layers = model.forward_with_exit(*inputs)
        script_logits, script_layers = scripted.forward_with_exit(*inputs)
        assert torch.equal(eager_layers, script_layers)
        assert (eager_logits - script_logits).abs().max() <= 1e-5
        assert (model(*inputs) - scripted(*inputs)).abs().max() <= 1e-5


def test_torch_export_of_pruning_with_fixed_exit_matches_eager(model):
    inputs = _inputs()
    model.set_token_pruning(2, 0.5)
    model.set_early_exit(layer=4)
    exported = torch.export.export(model, inputs)
    with torch.no_grad():
        expected = model(*inputs)
        other = _inputs(seed=5)
        assert (exported.module()(*inputs) - expected).abs().max() <= 1e-5
        assert (exported.module()(*other) - model(*other)).abs().max() <= 1e-5  # not baked to the example
    model.set_early_exit()
    model.set_token_pruning(0)


def test_bad_settings_are_refused_with_a_clear_error(model):
    with pytest.raises(ValueError, match="keep_ratio"):
        model.set_token_pruning(2, 0.0)
    with pytest.raises(ValueError, match="pruning layer"):
        model.set_token_pruning(6, 0.5)
    with pytest.raises(ValueError, match="one early-exit mode"):
        model.set_early_exit(threshold=0.5, predictor=True)
    with pytest.raises(ValueError, match="no exit head"):
        model.set_early_exit(layer=5)
    plain = build_vilt_b32_vqa(num_answers=7, **SMALL)
    with pytest.raises(ValueError, match="add_early_exits"):
        plain.set_early_exit(threshold=0.9)
    with pytest.raises(ValueError, match="exit_layers"):
        plain.add_early_exits([6])


def test_training_exit_heads_with_frozen_backbone_changes_only_heads():
    model = _model(seed=7)
    generator = torch.Generator().manual_seed(1)
    count = 24
    split = VqaSplit(
        images=torch.randn(6, 3, 128, 128, generator=generator),
        image_index=torch.randint(0, 6, (count,), generator=generator),
        input_ids=torch.randint(5, 300, (count, 8), generator=generator),
        attention_mask=torch.ones(count, 8, dtype=torch.long),
        labels=torch.randint(0, 7, (count,), generator=generator),
    )
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    train_exit_heads(model, split, epochs=1.0, batch_size=12, predictor_epochs=1.0, log=None)
    changed = {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}
    assert changed, "training changed nothing"
    assert all(name.startswith(("exit_heads.", "exit_predictor.")) for name in changed), sorted(changed)
    assert any(name.startswith("exit_predictor.") for name in changed)
    assert all(param.requires_grad for param in model.parameters())  # the backbone is unfrozen again


def test_shift_and_flip_moves_the_picture_and_fills_with_the_background():
    from mobilevt.training.vqa import shift_and_flip

    images = torch.full((64, 1, 8, 8), -1.0)  # background -1
    ids = torch.arange(64.0).view(64, 1)
    images[:, 0, 2:4, 3] = ids  # a 2x2 "shape" per image: left column i, right column 100 + i
    images[:, 0, 2:4, 4] = ids + 100
    out = shift_and_flip(images, max_shift=2, generator=torch.Generator().manual_seed(0))
    flipped, shifts = 0, set()
    for i in range(64):
        left, right = (out[i, 0] == i).nonzero(), (out[i, 0] == 100 + i).nonzero()
        assert left.shape[0] == right.shape[0] == 2, i  # the whole shape, moved (a shift <= 2 keeps it inside)
        assert set(out[i, 0].unique().tolist()) == {-1.0, float(i), 100.0 + i}  # the border is background
        dy, dx = int(left[:, 0].min()) - 2, int(left[:, 1].min()) - 3
        assert -2 <= dy <= 2 and -3 <= dx <= 3
        is_flipped = bool(right[:, 1].min() < left[:, 1].min())
        flipped += int(is_flipped)
        shifts.add((dy, dx - 1 if is_flipped else dx))  # flipped: the left column lands at 4 before shifting
    assert 10 < flipped < 54  # flips with probability 1/2
    assert len(shifts) > 10 and all(-2 <= s <= 2 for pair in shifts for s in pair)
    assert torch.equal(images[:, 0, 2, 3], ids.flatten())  # the input is untouched


def test_evaluate_vqa_accuracy_by_answer_group():
    from mobilevt.training.vqa import easy_vqa_answer_groups, evaluate_on_split

    class Fixed(torch.nn.Module):  # answers a fixed sequence whatever the input
        def __init__(self, predictions):
            super().__init__()
            self.predictions = predictions

        def forward(self, input_ids, attention_mask, pixel_values):
            rows = input_ids[:, 0]
            return torch.nn.functional.one_hot(self.predictions[rows], 5).float()

    answers = ["yes", "no", "red", "circle", "triangle"]
    labels = torch.tensor([0, 1, 2, 3, 4, 3, 0, 2])
    predictions = torch.tensor([0, 0, 2, 4, 4, 3, 0, 3])  # yes/no 2/3, colour 1/2, shape 2/3
    split = VqaSplit(
        images=torch.zeros(1, 3, 4, 4),
        image_index=torch.zeros(8, dtype=torch.long),
        input_ids=torch.arange(8).view(8, 1),
        attention_mask=torch.ones(8, 1, dtype=torch.long),
        labels=labels,
    )
    groups = easy_vqa_answer_groups(answers)
    assert groups == {"shape": [3, 4], "yes/no": [0, 1], "colour": [2]}
    result = evaluate_on_split(Fixed(predictions), split, batch_size=3, answer_groups=groups)
    assert result["accuracy"] == pytest.approx(5 / 8)
    assert result["by_group"] == pytest.approx({"shape": 2 / 3, "yes/no": 2 / 3, "colour": 1 / 2})
    # a group naming an answer no question has (index 7) is allowed, and empty groups are NaN
    extra = evaluate_on_split(Fixed(predictions), split, answer_groups={**groups, "other": [7]})
    assert (
        extra["by_group"]["shape"] == pytest.approx(2 / 3) and extra["by_group"]["other"] != extra["by_group"]["other"]
    )


def test_plain_vilt_has_no_mobivqa_parts_and_equals_mobivqa_switched_off():
    from mobilevt.models.mobivqa import ExitMode
    from mobilevt.models.vilt import ViltForQuestionAnswering

    mobivqa = _model()
    plain = ViltForQuestionAnswering(mobivqa.arch, num_answers=mobivqa.num_answers).eval()
    state = {k: v for k, v in mobivqa.state_dict().items() if not k.startswith(("exit_heads.", "exit_predictor."))}
    plain.load_state_dict(state, strict=True)
    assert not hasattr(plain, "exit_mode") and not hasattr(plain, "add_early_exits")
    assert ExitMode(mobivqa.exit_mode) is ExitMode.OFF and mobivqa.prune_layer == 0
    inputs = mobivqa.example_inputs(2, (64, 96))
    with torch.no_grad():
        assert torch.equal(plain(*inputs), mobivqa(*inputs))
    mobivqa.set_early_exit(threshold=0.5)
    assert ExitMode(mobivqa.exit_mode) is ExitMode.CONFIDENCE and ExitMode.CONFIDENCE.label == "confidence-threshold"

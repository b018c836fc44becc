"""MobiVQA's exit decision on a tiny random ViLT: the exit predictor's training target (the
earliest exit whose answer equals the full model's), its threshold calibrated on held-out
questions, and the oracle it is compared with. Expected values come from the model's public
forward path (fixed exits, exits off), not from the functions under test."""

from __future__ import annotations

import pytest
import torch

import mobilevt
from mobilevt.errors import InvalidInputError
from mobilevt.training import vqa as vqa_training
from mobilevt.training.vqa import (
    VqaSplit,
    calibrate_exit_predictor,
    earliest_agreeing_exit,
    exit_oracle,
    exit_states,
    full_model_answers,
    hold_out,
    train_exit_heads,
)

SMALL = dict(hidden_size=32, num_layers=5, num_heads=2, mlp_dim=64, image_size=64, patch_size=16, vocab_size=50)
EXIT_LAYERS = [1, 2, 3]
ANSWERS = 4  # few answers: the exits agree with the full model often enough to matter


def _model(seed: int):
    model = mobilevt.create_model("vilt_b32_vqa", num_classes=ANSWERS, **SMALL)
    model.add_early_exits(EXIT_LAYERS, predictor_layer=1)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            is_norm_scale = param.dim() == 1 and name.endswith("weight") and "norm" in name
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3 + (1.0 if is_norm_scale else 0.0))
    return model.eval()


def _split(count: int, seed: int, images: int = 12) -> VqaSplit:
    generator = torch.Generator().manual_seed(seed)
    return VqaSplit(
        images=torch.randn(images, 3, 64, 64, generator=generator),
        image_index=torch.randint(0, images, (count,), generator=generator),
        input_ids=torch.randint(5, 50, (count, 6), generator=generator),
        attention_mask=torch.ones(count, 6, dtype=torch.long),
        labels=torch.randint(0, ANSWERS, (count,), generator=generator),
    )


@torch.no_grad()
def _answers_by_forward(model, split: VqaSplit) -> torch.Tensor:
    """``[questions, exits + 1]``: each fixed exit's answer, then the full model's."""
    input_ids, attention_mask, pixel_values, _ = split.batch(torch.arange(len(split)))
    columns = []
    for layer in EXIT_LAYERS + [0]:
        model.set_early_exit(layer=layer)  # 0: exits off, the full model
        columns.append(model(input_ids, attention_mask, pixel_values).argmax(dim=1))
    model.set_early_exit()
    return torch.stack(columns, dim=1)


def _first_match(answers: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    matches = [
        int(next(i for i in range(len(row)) if i == len(row) - 1 or row[i] == ref))
        for row, ref in zip(answers, reference)
    ]
    return torch.tensor(matches)


def test_predictor_target_is_the_earliest_exit_that_gives_the_full_models_answer():
    model = _model(seed=1)
    split = _split(64, seed=2)
    expected_answers = _answers_by_forward(model, split)
    input_ids, attention_mask, pixel_values, labels = split.batch(torch.arange(len(split)))
    with torch.no_grad():
        states, _, key_mask = exit_states(model, input_ids, attention_mask, pixel_values)
        full = full_model_answers(model, states[-1], key_mask)
        target = earliest_agreeing_exit(model, states, full)
    assert torch.equal(full, expected_answers[:, -1])
    assert torch.equal(target, _first_match(expected_answers, expected_answers[:, -1]))
    assert 0 < int((target < len(EXIT_LAYERS)).sum()) < len(split)  # some exit early, some run in full


def test_train_exit_heads_teaches_the_predictor_the_full_models_answer_not_the_label(monkeypatch):
    """One image and one question asked with random labels: the full model gives one answer
    to all, so every target the predictor trains on is that answer's earliest exit, however
    the labels vary."""
    model = _model(seed=3)
    split = _split(32, seed=4)
    split.image_index.zero_()
    split.input_ids[:] = split.input_ids[0]
    targets_for = []
    real = vqa_training.earliest_agreeing_exit

    def recording(model_, states, answers):
        targets_for.append(answers.clone())
        return real(model_, states, answers)

    monkeypatch.setattr(vqa_training, "earliest_agreeing_exit", recording)
    train_exit_heads(model, split, epochs=0.5, batch_size=16, predictor_epochs=1.0, log=None)
    assert len(targets_for) == 2 and len(set(split.labels.tolist())) > 1
    full_answer = int(_answers_by_forward(model, split.subset(torch.arange(1)))[0, -1])
    assert all(answers.tolist() == [full_answer] * 16 for answers in targets_for)


def test_hold_out_keeps_each_image_on_one_side():
    split = _split(300, seed=5, images=40)
    rest, held = hold_out(split, fraction=0.25, seed=0)
    assert len(rest) + len(held) == len(split)
    assert not set(rest.image_index.tolist()) & set(held.image_index.tolist())
    assert len(set(held.image_index.tolist())) == 10
    with pytest.raises(InvalidInputError, match="fraction"):
        hold_out(split, fraction=1.0)


@torch.no_grad()
def _by_predictor(model, split: VqaSplit, risk: float) -> tuple[float, float]:
    """Agreement with the full model and mean layers of the predictor exit at ``risk``,
    through the model's forward."""
    full = _answers_by_forward(model, split)[:, -1]
    model.predictor_risk = risk
    model.set_early_exit(predictor=True)
    input_ids, attention_mask, pixel_values, _ = split.batch(torch.arange(len(split)))
    logits, layers = model.forward_with_exit(input_ids, attention_mask, pixel_values)
    model.set_early_exit()
    return float((logits.argmax(dim=1) == full).double().mean()), float(layers.double().mean())


def test_calibration_picks_the_highest_risk_that_agrees_enough_on_the_held_out_questions():
    model = _model(seed=6)
    held = _split(96, seed=7)
    with torch.no_grad():  # a predictor with spread-out choices, so the risk matters
        model.exit_predictor[0].fc2.weight.mul_(5.0)
    bar = 0.85
    result = calibrate_exit_predictor(model, held, min_agreement=bar)
    risk = model.predictor_risk
    assert result["risk"] == risk and 0.0 <= risk <= 1.0
    agreement, layers = _by_predictor(model, held, risk)
    assert agreement >= bar and agreement == pytest.approx(result["agreement"])
    assert layers == pytest.approx(result["mean_layers"]) and layers < SMALL["num_layers"]
    for lower in torch.linspace(0.0, risk, 12).tolist():  # every lower risk agrees enough too
        assert _by_predictor(model, held, lower)[0] >= bar
    # the first higher risk that exits earlier does not
    for higher in torch.linspace(risk, 1.0, 400).tolist()[1:]:
        higher_agreement, higher_layers = _by_predictor(model, held, higher)
        if higher_layers < layers:
            assert higher_agreement < bar
            break
    else:
        pytest.fail("no higher risk exits earlier: the test's predictor is too confident")
    # a stricter bar costs more layers; 1.0 asks for the full model's answer on every question
    assert calibrate_exit_predictor(model, held, min_agreement=0.99)["mean_layers"] >= layers
    assert calibrate_exit_predictor(model, held, min_agreement=1.0)["agreement"] == 1.0


def test_oracle_stops_each_question_at_its_earliest_agreeing_or_correct_exit():
    model = _model(seed=8)
    split = _split(80, seed=9)
    answers = _answers_by_forward(model, split)
    layers = torch.tensor(EXIT_LAYERS + [SMALL["num_layers"]], dtype=torch.float64)
    oracle = exit_oracle(model, split, batch_size=32)
    for name, reference in (("agreeing", answers[:, -1]), ("correct", split.labels)):
        choice = _first_match(answers, reference)
        picked = answers.gather(1, choice[:, None])[:, 0]
        assert oracle[name]["mean_layers"] == pytest.approx(float(layers[choice].mean()))
        assert oracle[name]["accuracy"] == pytest.approx(float((picked == split.labels).double().mean()))
    full_accuracy = float((answers[:, -1] == split.labels).double().mean())
    assert oracle["agreeing"]["accuracy"] == pytest.approx(full_accuracy)
    assert oracle["correct"]["accuracy"] >= full_accuracy


def test_calibrated_threshold_travels_with_the_saved_weights(tmp_path):
    model = _model(seed=10)
    model.predictor_risk = 0.3125
    path = mobilevt.save_weights(model, tmp_path / "vilt.safetensors")
    loaded = mobilevt.create_model("vilt_b32_vqa", weights=str(path))
    assert loaded.predictor_risk == 0.3125 and loaded.exit_layers == EXIT_LAYERS
    other = _model(seed=11)  # loading into a model made beforehand takes the risk too
    assert other.predictor_risk == 0.5
    assert mobilevt.load_weights(other, str(path)).predictor_risk == 0.3125


def test_train_vqa_scores_the_trained_model_with_a_softmax_and_reports_each_epoch(tmp_path):
    """train_vqa trains with cross-entropy over the answers, so the model is marked to be scored
    with a softmax, and its saved file keeps the mark (ViLT's own head stays sigmoid); it calls
    back after each epoch, so that a long run can be saved as it goes."""
    model = _model(seed=5).train()
    assert not model.answer_softmax
    saved_after = []
    losses = vqa_training.train_vqa(
        model, _split(16, seed=6), epochs=3.0, batch_size=8, log=None, on_epoch_end=saved_after.append
    )
    assert len(losses) >= 1 and model.answer_softmax
    assert saved_after == [1, 2]  # after each whole epoch but the last (whose end the caller sees)
    loaded = mobilevt.create_model(
        "vilt_b32_vqa", weights=str(mobilevt.save_weights(model, tmp_path / "m.safetensors"))
    )
    assert loaded.answer_softmax

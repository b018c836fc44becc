"""What a command-line user reads when something is wrong: flags, not Python keywords;
``--topk`` above the number of classes is capped with a note."""

from __future__ import annotations

import torch
from PIL import Image

from mobilevt.cli.main import in_cli_words, main


def test_python_keywords_become_flags():
    assert in_cli_words("pass its local path as weights=PATH, or vocab_file=FILE.") == (
        "pass its local path as --weights PATH, or --vocab FILE."
    )
    # a keyword with no flag of its own (and one that only ends like a flag) is left alone
    assert in_cli_words("pass it as backbone_weights=... to create_model") == (
        "pass it as backbone_weights=... to create_model"
    )


def test_vqa_without_a_vocabulary_names_the_vocab_flag(tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (200, 40, 40)).save(image)
    assert main(["vqa", str(image), "what colour is it?", "--weights", "none"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "--vocab FILE" in err and "vocab_file" not in err, err


def test_weights_that_cannot_be_fetched_name_the_weights_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    image = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(image)
    url = "http://127.0.0.1:9/mobilevit_xxs.pt"  # the discard port: refused at once
    assert main(["predict", str(image), "--model", "mobilevit_xxs", "--weights", url]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--weights PATH" in err and "weights=" not in err, err


def test_topk_above_the_classes_is_capped_with_a_note(tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.new("RGB", (40, 40), (10, 120, 30)).save(image)
    assert main(["predict", str(image), "--model", "mobilevit_xxs", "--weights", "none", "--topk", "2000"]) == 0
    captured = capsys.readouterr()
    assert "note: --topk 2000 is more than the model's 1000 classes" in captured.err
    assert captured.out.count("%") == 1000

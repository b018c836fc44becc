"""DeepLabV3-MobileViT: transformers parity, checkpoint layouts, mIoU on hand-made cases,
dataset readers, segment / overlay output and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import PARITY_ATOL, max_abs, randomize_
from PIL import Image

import mobilevt
from mobilevt import CheckpointMismatchError
from mobilevt.data.segmentation import ade20k_segmentation, open_segmentation_dataset, read_mask, voc_segmentation
from mobilevt.data.synthetic_shapes import write_shapes_dataset
from mobilevt.tasks.segmentation import (
    ConfusionMatrix,
    SegmentationPreprocess,
    colorize,
    evaluate_segmentation,
    mean_iou,
    segment,
    write_segmentation,
)

transformers = pytest.importorskip("transformers")

V1_XXS = dict(hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320], expand_ratio=2.0)


def _hf_v1(output_stride=16, **kwargs):
    config = transformers.MobileViTConfig(**V1_XXS, output_stride=output_stride, num_labels=21, **kwargs)
    return randomize_(transformers.MobileViTForSemanticSegmentation(config))


def _hf_v2(output_stride=16):
    rates = [6, 12, 18] if output_stride == 16 else [12, 24, 36]
    config = transformers.MobileViTV2Config(
        width_multiplier=0.5, output_stride=output_stride, num_labels=21, atrous_rates=rates
    )
    return randomize_(transformers.MobileViTV2ForSemanticSegmentation(config))


@pytest.fixture(scope="module")
def x():
    return torch.rand(2, 3, 128, 160, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------
# Registry and architecture


def test_registered_for_every_mobilevit_classifier():
    classifiers = [
        n
        for n in mobilevt.list_models(kind="image-classification")
        if mobilevt.get_model_entry(n).family.startswith("mobilevit")
    ]
    segmenters = mobilevt.list_models(kind="semantic-segmentation")
    assert {f"deeplabv3_{n}" for n in classifiers} <= set(segmenters)
    assert "deeplabv3_mobilevit_s" in segmenters and "deeplabv3_mobilevitv2_100" in segmenters


@pytest.mark.parametrize(
    "name, published",
    # MobileViT paper Table 5 (v1) and the ml-cvnets model zoo (v2, PASCAL VOC)
    [
        ("deeplabv3_mobilevit_xxs", 1.9),
        ("deeplabv3_mobilevit_xs", 2.9),
        ("deeplabv3_mobilevit_s", 6.4),
        ("deeplabv3_mobilevitv2_050", 6.2),
        ("deeplabv3_mobilevitv2_100", 13.3),
    ],
)
def test_parameter_counts_match_published(name, published):
    with torch.device("meta"):
        model = mobilevt.create_model(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == published


@pytest.mark.parametrize("output_stride", [8, 16])
def test_logits_at_output_stride_or_upsampled(x, output_stride):
    model = mobilevt.create_model("deeplabv3_mobilevit_xxs", output_stride=output_stride, aux_head=True).eval()
    logits = model(x)
    assert logits.shape == (2, 21, 128 // output_stride, 160 // output_stride)
    main, aux = model.forward_with_aux(x)
    stage4 = min(16, output_stride)  # the fourth stage's stride: 16, or 8 when it is dilated
    assert torch.equal(main, logits) and aux.shape == (2, 21, 128 // stage4, 160 // stage4)
    model.upsample = True
    assert model(x).shape == (2, 21, 128, 160)
    odd = model(torch.rand(1, 3, 100, 130))
    assert odd.shape == (1, 21, 100, 130)


def test_default_head_settings_follow_the_published_recipes():
    v1, v2 = mobilevt.create_model("deeplabv3_mobilevit_s"), mobilevt.create_model("deeplabv3_mobilevitv2_100")
    assert v1.classifier.in_channels == 256 and v2.classifier.in_channels == 512
    assert v1.aspp.atrous_rates == v2.aspp.atrous_rates == (6, 12, 18) and v1.output_stride == 16
    os8 = mobilevt.create_model("deeplabv3_mobilevit_xxs", output_stride=8)
    assert os8.aspp.atrous_rates == (12, 24, 36)
    assert v1.preprocess.channel_order == "BGR" and v2.preprocess.channel_order == "RGB"


# ---------------------------------------------------------------------------------------
# transformers parity (random weights, randomised BatchNorm statistics, eval mode)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_parity_with_transformers_v1(x, output_stride):
    rates = [6, 12, 18] if output_stride == 16 else [12, 24, 36]
    reference = _hf_v1(output_stride, atrous_rates=rates)
    model = mobilevt.create_model("deeplabv3_mobilevit_xxs", output_stride=output_stride).eval()
    mobilevt.load_weights(model, reference.state_dict())
    with torch.no_grad():
        expected = reference(x).logits
    assert expected.abs().max() > 0.1  # not a degenerate near-zero output
    assert max_abs(model(x), expected) < PARITY_ATOL


@pytest.mark.parametrize("output_stride", [16, 8])
def test_parity_with_transformers_v2(x, output_stride):
    reference = _hf_v2(output_stride)
    model = mobilevt.create_model(
        "deeplabv3_mobilevitv2_050", output_stride=output_stride, transformers_v2_dilation=True
    ).eval()
    mobilevt.load_weights(model, reference.state_dict())
    with torch.no_grad():
        expected = reference(x).logits
    assert max_abs(model(x), expected) < PARITY_ATOL
    # By default the v2 blocks dilate their depthwise conv in dilated stages as ml-cvnets
    # (where these weights are trained) does; transformers does not, so logits differ.
    ml_cvnets_like = mobilevt.create_model("deeplabv3_mobilevitv2_050", output_stride=output_stride).eval()
    mobilevt.load_weights(ml_cvnets_like, reference.state_dict())
    assert max_abs(ml_cvnets_like(x), expected) > 1e-2


def test_hf_folder_gives_architecture_and_class_names(tmp_path, x):
    # non-default head settings: only a config.json that is read makes the logits match
    reference = _hf_v1(8, atrous_rates=[3, 5, 7], aspp_out_channels=64)
    reference.config.id2label = {i: f"class{i}" for i in range(21)}
    reference.save_pretrained(tmp_path / "hf")
    model = mobilevt.create_model("deeplabv3_mobilevit_xxs", weights=tmp_path / "hf").eval()
    assert (model.output_stride, model.aspp.atrous_rates, model.classifier.in_channels) == (8, (3, 5, 7), 64)
    assert model.class_names[:2] == ["class0", "class1"]
    with torch.no_grad():
        assert max_abs(model(x), reference(x).logits) < PARITY_ATOL


# ---------------------------------------------------------------------------------------
# ml-cvnets layout


def _cvnets_head_keys() -> dict[str, str]:
    """ml-cvnets' SegEncoderDecoder head key -> mobilevt key, written out from ml-cvnets'
    modules (ASPP in seg_head.aspp.aspp_layer, ConvLayer2d = block.conv / block.norm,
    ASPPPooling = aspp_pool.{global_pool, conv_1x1}, aux head Sequential(ConvLayer2d,
    Dropout2d, ConvLayer2d))."""
    keys = {}
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    layers = {f"seg_head.aspp.aspp_layer.convs.{i}.block": f"aspp.convs.{i}" for i in range(4)}
    layers["seg_head.aspp.aspp_layer.convs.4.aspp_pool.conv_1x1.block"] = "aspp.convs.4"
    layers["seg_head.aspp.aspp_layer.project.block"] = "aspp.project"
    layers["seg_head.aux_head.0.block"] = "aux_head.0"
    for theirs, ours in layers.items():
        keys[f"{theirs}.conv.weight"] = f"{ours}.conv.weight"
        keys.update({f"{theirs}.norm.{b}": f"{ours}.bn.{b}" for b in bn})
    for p in ("weight", "bias"):
        keys[f"seg_head.classifier.block.conv.{p}"] = f"classifier.{p}"
        keys[f"seg_head.aux_head.2.block.conv.{p}"] = f"aux_head.2.{p}"
    return keys


def test_cvnets_checkpoint_layout(tmp_path, x):
    source = randomize_(mobilevt.create_model("deeplabv3_mobilevit_xxs", aux_head=True), seed=4)
    ours = source.state_dict()
    head = _cvnets_head_keys()
    state = {theirs: ours[mine] for theirs, mine in head.items()}
    # the backbone under "encoder." in ml-cvnets' classification names (as the classifier converter maps them)
    for key in ours:
        if key.startswith("backbone."):
            theirs = mobilevt.weights.mobilevit_layouts.source_keys(
                "cvnets", key[len("backbone.") :], source.backbone.arch
            )
            assert len(theirs) == 1
            state["encoder." + theirs[0]] = ours[key]
    assert "encoder.layer_4.1.global_rep.0.pre_norm_mha.1.qkv_proj.weight" in state
    assert len(state) == len(ours)
    torch.save({"state_dict": state}, tmp_path / "cvnets.pt")

    with_aux = mobilevt.create_model("deeplabv3_mobilevit_xxs", weights=tmp_path / "cvnets.pt", aux_head=True).eval()
    assert max_abs(with_aux(x), source(x)) == 0
    for name, tensor in with_aux.state_dict().items():
        assert torch.equal(tensor, ours[name]), name
    # the auxiliary head is for training only: dropped when the model has none
    plain = mobilevt.create_model("deeplabv3_mobilevit_xxs", weights=tmp_path / "cvnets.pt").eval()
    assert plain.aux_head is None and max_abs(plain(x), source(x)) == 0


# ---------------------------------------------------------------------------------------
# Loading: round trip, fine-tuning, backbone weights, clear errors


def test_save_and_reload_keeps_architecture(tmp_path, x):
    model = randomize_(mobilevt.create_model("deeplabv3_mobilevit_xxs", output_stride=8, atrous_rates=(2, 4, 6)))
    model.class_names = [f"c{i}" for i in range(21)]
    mobilevt.save_weights(model, tmp_path / "seg.safetensors")
    loaded = mobilevt.create_model("deeplabv3_mobilevit_xxs", weights=tmp_path / "seg.safetensors").eval()
    assert (loaded.output_stride, loaded.aspp.atrous_rates) == (8, (2, 4, 6))
    assert loaded.class_names == model.class_names
    assert max_abs(loaded(x), model(x)) == 0


def test_new_class_count_keeps_everything_but_the_classifier(tmp_path):
    model = randomize_(mobilevt.create_model("deeplabv3_mobilevit_xxs"))
    mobilevt.save_weights(model, tmp_path / "seg.safetensors")
    tuned = mobilevt.create_model("deeplabv3_mobilevit_xxs", weights=tmp_path / "seg.safetensors", num_classes=4)
    assert tuned.classifier.out_channels == 4
    assert torch.equal(tuned.aspp.project.conv.weight, model.aspp.project.conv.weight)
    assert torch.equal(tuned.backbone.stem.conv.weight, model.backbone.stem.conv.weight)


def test_backbone_weights_from_a_classifier_checkpoint(tmp_path):
    classifier = randomize_(mobilevt.create_model("mobilevit_xxs"), seed=7)
    mobilevt.save_weights(classifier, tmp_path / "clf.safetensors")
    model = mobilevt.create_model(
        "deeplabv3_mobilevit_xxs", backbone_weights=tmp_path / "clf.safetensors", num_classes=3
    )
    for key, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, classifier.state_dict()[key]), key
    with pytest.raises(CheckpointMismatchError, match="backbone_weights"):
        mobilevt.create_model("deeplabv3_mobilevit_xxs", weights=tmp_path / "clf.safetensors")


def test_wrong_variant_names_keys_and_the_fitting_model(tmp_path):
    mobilevt.save_weights(mobilevt.create_model("deeplabv3_mobilevit_xs"), tmp_path / "xs.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:
        mobilevt.create_model("deeplabv3_mobilevit_xxs", weights=tmp_path / "xs.safetensors")
    message = str(err.value)
    assert "mis-shaped" in message and "backbone.stages.0.0.expand.conv.weight" in message
    assert "'deeplabv3_mobilevit_xs'" in message
    with pytest.raises(CheckpointMismatchError, match="no auxiliary head"):
        mobilevt.create_model("deeplabv3_mobilevit_xxs", weights=tmp_path / "xs.safetensors", aux_head=True)


# ---------------------------------------------------------------------------------------
# mIoU on hand-made cases


def test_miou_hand_made():
    target = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255]])
    predicted = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 2], [2, 0, 0, 2]])
    # 255 pixels ignored (whatever is predicted there). Counted pixels:
    # class 0: TP 3 (0,0)(1,0)(1,1); FN 1 (0,1)->1; FP 1 (2,1) gt 2 -> IoU 3/5
    # class 1: TP 3 (0,2)(0,3)(1,2); FN 1 (1,3)->2; FP 1 (0,1) -> IoU 3/5
    # class 2: TP 1 (2,0); FN 1 (2,1)->0; FP 1 (1,3) -> IoU 1/3
    scores = _scores(predicted, target, 3)
    assert scores.iou == pytest.approx([3 / 5, 3 / 5, 1 / 3])
    assert scores.miou == pytest.approx((3 / 5 + 3 / 5 + 1 / 3) / 3)
    assert scores.pixel_accuracy == pytest.approx(7 / 10)  # 7 correct of 10 counted pixels
    assert scores.accuracy == pytest.approx([3 / 4, 3 / 4, 1 / 2])
    assert scores.pixels == 10


def test_miou_absent_classes_and_accumulation():
    # class 3 is in neither ground truth nor predictions: no IoU, not in the mean;
    # class 2 is only predicted: IoU 0 and counted.
    target = torch.tensor([0, 0, 1, 1])
    predicted = torch.tensor([0, 2, 1, 1])
    scores = _scores(predicted, target, 4)
    # class 0: TP 1, FN 1 -> 1/2; class 1: 2/2; class 2: 0/1; class 3: nan
    assert scores.iou[:3] == pytest.approx([1 / 2, 1.0, 0.0]) and np.isnan(scores.iou[3])
    assert scores.miou == pytest.approx(0.5)
    # two updates count like one of the concatenation (dataset-level IoU, not a mean of images)
    matrix = ConfusionMatrix(2)
    matrix.update(torch.tensor([0, 0]), torch.tensor([0, 1]))  # class 1 missed once
    matrix.update(torch.tensor([1] * 8), torch.tensor([1] * 8))
    # class 0: TP 1, FP 1 -> 1/2; class 1: TP 8, FN 1 -> 8/9
    assert matrix.compute().iou == pytest.approx([1 / 2, 8 / 9])
    assert mean_iou(torch.tensor([1, 1]), torch.tensor([1, 1]), 2) == 1.0  # class 0 absent: mean over class 1


def test_miou_all_ignored_and_shape_errors():
    scores = _scores(torch.zeros(3, dtype=torch.long), torch.full((3,), 255), 2)
    assert scores.pixels == 0 and np.isnan(scores.miou)
    with pytest.raises(ValueError, match="differ in shape"):
        ConfusionMatrix(2).update(torch.zeros(2, 2), torch.zeros(4))


def _scores(predicted, target, k):
    matrix = ConfusionMatrix(k)
    matrix.update(predicted, target)
    return matrix.compute()


class _ConstantModel(torch.nn.Module):
    """Predicts class ``label`` everywhere, at stride 8, whatever the image."""

    def __init__(self, num_classes: int, label: int):
        super().__init__()
        self.num_classes, self.label = num_classes, label
        self.preprocess = mobilevt.PreprocessConfig((32, 32), 32)

    def forward(self, x):
        logits = torch.zeros(x.shape[0], self.num_classes, x.shape[2] // 8, x.shape[3] // 8)
        logits[:, self.label] = 1.0
        return logits


def test_evaluate_on_a_hand_made_voc_folder(tmp_path):
    root = tmp_path / "voc"
    masks = {"a": np.array([[0, 0, 1], [0, 255, 1]], np.uint8), "b": np.array([[1, 1, 1], [0, 0, 255]], np.uint8)}
    _write_voc(root, masks, split="val")
    result = evaluate_segmentation(_ConstantModel(2, 0), root, split="val")
    # every pixel predicted 0; counted: 3 + 2 zeros (TP), 2 + 3 ones (FN of 1, FP of 0)
    # IoU0 = 5 / (5 + 5) = 1/2, IoU1 = 0 / 5 = 0 -> mIoU 1/4; pixel accuracy 5/10
    assert result.num_images == 2 and result.failed == []
    assert result.iou == pytest.approx([0.5, 0.0]) and result.miou == pytest.approx(0.25)
    assert result.pixel_accuracy == pytest.approx(0.5)
    assert result.to_dict()["per_class_iou"]["background"] == pytest.approx(0.5)


def _write_voc(root, masks, split):
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClass").mkdir()
    for name, mask in masks.items():
        Image.fromarray(np.full((*mask.shape, 3), 128, np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        colorize(torch.from_numpy(mask)).save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(masks) + "\n")
    (root / "classes.txt").write_text("background\nthing\n")


# ---------------------------------------------------------------------------------------
# Dataset readers


def test_voc_reader_on_the_shapes_dataset(tmp_path):
    root = write_shapes_dataset(tmp_path / "shapes", num_train=3, num_val=2, image_size=48, seed=1)
    data = open_segmentation_dataset(root, "val")
    assert data.layout == "voc" and len(data) == 2
    assert data.class_names == ["background", "circle", "square", "triangle"]
    image, mask = data[0]
    assert image.shape == (3, 48, 48) and image.dtype == torch.uint8
    assert mask.shape == (48, 48) and set(mask.unique().tolist()) <= {0, 1, 2, 3, 255}
    assert np.array_equal(mask.numpy(), np.asarray(Image.open(root / "SegmentationClass" / "val_000000.png")))
    assert len(voc_segmentation(root, "train")) == 3
    with pytest.raises(mobilevt.data.DatasetLayoutError, match="splits found"):
        voc_segmentation(root, "test")


def test_ade20k_reader_shifts_labels(tmp_path):
    for split in ("training", "validation"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "annotations" / split).mkdir(parents=True)
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "images" / "validation" / "x.jpg")
    Image.fromarray(np.array([[0, 1, 150], [2, 0, 75]], np.uint8), mode="L").save(
        tmp_path / "annotations" / "validation" / "x.png"
    )
    data = open_segmentation_dataset(tmp_path, "val")
    assert data.layout == "ade20k" and data.num_classes == 150
    _, mask = data[0]
    # 0 ("other") is ignored, 1..150 become 0..149
    assert mask.tolist() == [[255, 0, 149], [1, 255, 74]]
    assert len(ade20k_segmentation(tmp_path, "validation")) == 1


def test_colour_masks_are_refused_with_an_explanation(tmp_path):
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(mobilevt.data.DatasetLayoutError, match="class indices, not colours"):
        read_mask(tmp_path / "rgb.png")
    with pytest.raises(mobilevt.data.DatasetLayoutError, match="not a segmentation dataset"):
        open_segmentation_dataset(tmp_path)


# ---------------------------------------------------------------------------------------
# Segmenting images, writing masks, CLI


def test_preprocess_resizes_the_whole_image_and_orders_channels():
    image = torch.zeros(3, 20, 40, dtype=torch.uint8)
    image[0] = 255  # red
    config = mobilevt.PreprocessConfig((16, 16), 16, channel_order="BGR")
    out = SegmentationPreprocess(config)(image)
    assert out.shape == (3, 16, 16)  # not cropped: the 2:1 image is squeezed to the input size
    assert torch.allclose(out[2], torch.ones(16, 16)) and out[:2].abs().max() == 0  # red is last in BGR
    assert torch.jit.script(SegmentationPreprocess(config))(image).equal(out)


def test_segment_writes_mask_and_overlay(tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(photo)
    model = _ConstantModel(3, 2)
    result = segment(model, photo)[0]
    assert result.mask.shape == (40, 56) and (result.mask == 2).all()
    assert result.class_fractions() == {"2": 1.0}
    mask_path, overlay_path = write_segmentation(result, photo, tmp_path / "out")
    mask_png = Image.open(mask_path)
    assert mask_png.mode == "P" and (np.asarray(mask_png) == 2).all()
    over = np.asarray(Image.open(overlay_path)).astype(float)
    original = np.asarray(Image.open(photo)).astype(float)
    assert over.shape == original.shape
    # class 2 is VOC's (0, 128, 0), blended at alpha 0.5
    assert np.abs(over - (original * 0.5 + np.array([0, 128, 0]) * 0.5)).max() <= 0.5 + 1e-6


def test_cli_segment(tmp_path, capsys):
    from mobilevt.cli.main import main

    model = mobilevt.create_model("deeplabv3_mobilevit_xxs", num_classes=4)
    model.class_names = ["background", "circle", "square", "triangle"]
    model.preprocess = mobilevt.PreprocessConfig((128, 128), 128)  # stored in the file: a quick test
    mobilevt.save_weights(model, tmp_path / "seg.safetensors")
    photo = tmp_path / "cat.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(photo)
    code = main(
        [
            "segment",
            str(photo),
            "--model",
            "deeplabv3_mobilevit_xxs",
            "--weights",
            str(tmp_path / "seg.safetensors"),
            "--out",
            str(tmp_path / "out"),
            "--json",
        ]
    )
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["source"] == str(photo) and abs(sum(rows[0]["classes"].values()) - 1) < 1e-6
    mask = np.asarray(Image.open(tmp_path / "out" / "cat_mask.png"))
    assert mask.shape == (60, 80) and Image.open(tmp_path / "out" / "cat_overlay.png").size == (80, 60)
    expected = segment(mobilevt.create_model("deeplabv3_mobilevit_xxs", weights=tmp_path / "seg.safetensors"), photo)[0]
    assert np.array_equal(mask, expected.mask.numpy())
    # a missing file: one error line, exit code 1
    assert (
        main(
            [
                "segment",
                str(tmp_path / "missing.jpg"),
                "--model",
                "deeplabv3_mobilevit_xxs",
                "--weights",
                str(tmp_path / "seg.safetensors"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 1
    )
    assert "missing.jpg" in capsys.readouterr().err
    # random 21-class weights print PASCAL VOC's class names, as detect prints COCO's
    assert (
        main(
            [
                "segment",
                str(photo),
                "--model",
                "deeplabv3_mobilevit_xxs",
                "--weights",
                "none",
                "--out",
                str(tmp_path / "random"),
                "--json",
            ]
        )
        == 0
    )
    from mobilevt.data.segmentation import VOC_CLASSES

    assert set(json.loads(capsys.readouterr().out)[0]["classes"]) <= set(VOC_CLASSES)


def test_cli_segment_evaluate(tmp_path, capsys):
    from mobilevt.cli.main import main

    root = write_shapes_dataset(tmp_path / "shapes", num_train=1, num_val=2, image_size=48, seed=2)
    model = mobilevt.create_model("deeplabv3_mobilevit_xxs", num_classes=4)
    model.preprocess = mobilevt.PreprocessConfig((128, 128), 128)
    mobilevt.save_weights(model, tmp_path / "seg.safetensors")
    code = main(
        [
            "segment",
            "--evaluate",
            str(root),
            "--model",
            "deeplabv3_mobilevit_xxs",
            "--weights",
            str(tmp_path / "seg.safetensors"),
            "-o",
            str(tmp_path / "miou.json"),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "miou.json").read_text())
    direct = evaluate_segmentation(
        mobilevt.create_model("deeplabv3_mobilevit_xxs", weights=tmp_path / "seg.safetensors"), root
    )
    assert report["num_images"] == 2 and report["miou"] == pytest.approx(direct.miou)
    assert "mIoU" in capsys.readouterr().out

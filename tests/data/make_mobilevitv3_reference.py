"""Write tests/data/mobilevitv3_reference.safetensors by running the MobileViTv3 authors'
own models (not mobilevt) on the weights of ``random_weights`` in tests/test_mobilevitv3.py.

Their code is not installable. Set it up by hand (outside this repository):

    git clone https://github.com/apple/ml-cvnets v1 && git -C v1 checkout d38a116fe134a8cd5db18670764fdaafd39a5d4f
    git clone https://github.com/apple/ml-cvnets v2 && git -C v2 checkout 84d992f413e52c0468f86d23196efd9dad885e6f
    git clone https://github.com/micronDLA/MobileViTv3
    cp -r MobileViTv3/MobileViTv3-v1/* v1/ && cp -r MobileViTv3/MobileViTv3-v2/* v2/

(the commits and the overlay are those of the authors' README), then, in the mobilevt venv:

    python tests/data/make_mobilevitv3_reference.py --v1-root v1 --v2-root v2

For each model: build the authors' model with their configuration, load the random
weights (strict), measure the BatchNorm statistics on a calibration batch in train mode,
then store those statistics, the logits of ``reference_input`` images and, at output
stride 8, the stage-5 features.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
OUTPUT = TESTS / "data" / "mobilevitv3_reference.safetensors"

# mobilevt name -> the authors' model: their mode (v1) or width multiplier (v2), L2 form
AUTHORS_MODELS = {
    "v1": {
        "mobilevitv3_xxs": ("xx_small_v3", False), "mobilevitv3_xs": ("x_small_v3", False),
        "mobilevitv3_s": ("small_v3", False), "mobilevitv3_xxs_l2": ("xx_small_v3", True),
        "mobilevitv3_xs_l2": ("x_small_v3", True), "mobilevitv3_s_l2": ("small_v3", True),
    },
    "v2": {"mobilevitv3_050": (0.5, False), "mobilevitv3_075": (0.75, False), "mobilevitv3_100": (1.0, False)},
}
LOGIT_SIZES = {"mobilevitv3_xxs": [(97, 131), (256, 256)], "mobilevitv3_050": [(97, 131), (256, 256)]}
OS8_MODELS = ("mobilevitv3_xxs", "mobilevitv3_050")
OS8_SIZE = (64, 96)


def _opts(base: str, setting, l2: bool) -> argparse.Namespace:
    """The options of the authors' ImageNet yaml configs that shape the model."""
    values = {
        "model.classification.n_classes": 1000,
        "model.activation.name": "swish",
        "model.classification.activation.name": "swish",
        "model.normalization.momentum": 0.1,
        "model.layer.global_pool": "mean",
        "model.layer.conv_init": "kaiming_normal",
        "model.layer.linear_init": "trunc_normal",
        "model.layer.linear_init_std_dev": 0.02,
    }
    if base == "v1":  # MobileViTv3-v1/config/classification/mobilevitv3_*_oneserver.yaml
        values.update({
            "model.classification.classifier_dropout": 0.1,
            "model.normalization.name": "batch_norm_2d",
            "model.classification.mit.mode": setting + ("_fast" if l2 else ""),  # "_fast": the L2 forms
            "model.classification.mit.dropout": 0.05 if setting.startswith("xx") else 0.1,
            "model.classification.mit.attn_dropout": 0.0,
            "model.classification.mit.ffn_dropout": 0.0,
            "model.classification.mit.number_heads": 4,
            "model.classification.mit.no_fuse_local_global_features": False,
            "model.classification.mit.conv_kernel_size": 3,
            "model.classification.mit.transformer_norm_layer": "layer_norm",
        })
    else:  # MobileViTv3-v2/config/classification/imagenet/mobilevit_v3_oneserver.py
        values.update({
            "model.normalization.name": "batch_norm",
            "model.classification.mitv3.width_multiplier": setting,
            "model.classification.mitv3.attn_norm_layer": "layer_norm_2d",
            "model.classification.mitv3.dropout": 0.0,
            "model.classification.mitv3.ffn_dropout": 0.0,
            "model.classification.mitv3.attn_dropout": 0.0,
        })
    opts = argparse.Namespace()
    for key, value in values.items():
        setattr(opts, key, value)
    return opts


def _build(base: str, setting, l2: bool, **kwargs) -> torch.nn.Module:
    if base == "v1":
        from cvnets.models.classification.mobilevit import MobileViTv3
    else:
        from cvnets.models.classification.mobilevit_v3 import MobileViTv3
    return MobileViTv3(_opts(base, setting, l2), **kwargs)


def _worker(base: str, root: str, output: str) -> None:
    sys.path.insert(0, root)
    sys.path.insert(0, str(TESTS))
    from test_mobilevitv3 import random_weights, reference_input

    out: dict[str, torch.Tensor] = {}
    for name, (setting, l2) in AUTHORS_MODELS[base].items():
        model = _build(base, setting, l2)
        model.load_state_dict(random_weights(name), strict=True)
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # the average over the calibration batch
        with torch.no_grad():
            model.train()(reference_input("calibration", 8, 128, 128))
        model.eval()
        state = model.state_dict()
        for key, value in state.items():
            if key.endswith(("running_mean", "running_var")):
                out[f"{name}/bn/{key}"] = value.clone()
        with torch.no_grad():
            for height, width in LOGIT_SIZES.get(name, [(97, 131)]):
                out[f"{name}/logits/{height}x{width}"] = model(reference_input(name, 2, height, width))
            if name in OS8_MODELS:
                dilated = _build(base, setting, l2, output_stride=8).eval()
                dilated.load_state_dict(state, strict=True)
                x = reference_input(name, 1, *OS8_SIZE)
                out[f"{name}/os8_stage5/{OS8_SIZE[0]}x{OS8_SIZE[1]}"] = dilated.extract_end_points_all(x)["out_l5"]
    torch.save({k: v.contiguous() for k, v in out.items()}, output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--v1-root", help="ml-cvnets d38a116 with MobileViTv3-v1 over it")
    parser.add_argument("--v2-root", help="ml-cvnets 84d992f with MobileViTv3-v2 over it")
    parser.add_argument("--worker", nargs=3, metavar=("BASE", "ROOT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
        return
    from safetensors.torch import save_file

    from mobilevt.fileio import atomic_path

    merged: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # both roots are a package named `cvnets`: one process each
        for base, root in (("v1", args.v1_root), ("v2", args.v2_root)):
            part = Path(tmp) / f"{base}.pt"
            subprocess.run([sys.executable, __file__, "--worker", base, str(Path(root).resolve()), str(part)], check=True)
            merged.update(torch.load(part, weights_only=True))
        metadata = {"source": "micronDLA/MobileViTv3 models on ml-cvnets d38a116 (v1-based) / 84d992f (v2-based)",
                    "models": json.dumps(sorted({k.split("/")[0] for k in merged}))}
        with atomic_path(OUTPUT) as tmp_out:
            save_file(merged, str(tmp_out), metadata=metadata)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size // 1024} KiB, {len(merged)} tensors)")


if __name__ == "__main__":
    main()

"""Regenerate src/mobilevt/data/imagenet_classes.tsv (run once; needs timm and torchvision).

Columns: class index, WordNet id, short name, WordNet lemmas. The WordNet ids and lemmas
come from timm's ImageNet metadata (Apache-2.0); the short, unique names from torchvision's
weights metadata (BSD-3-Clause).
"""

from pathlib import Path

from timm.data import ImageNetInfo
from torchvision.models import ResNet18_Weights

info = ImageNetInfo()
wnids = info.label_names()
lemmas = info.label_descriptions()
names = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
assert len(wnids) == len(names) == len(lemmas) == 1000 and len(set(names)) == 1000
out = Path(__file__).resolve().parents[1] / "src/mobilevt/data/imagenet_classes.tsv"
lines = [
    "# ImageNet-1k classes in the standard index order (sorted WordNet ids).",
    "# WordNet ids and lemmas from timm's ImageNet metadata (Apache-2.0); short names from",
    "# torchvision's weights metadata (BSD-3-Clause). Regenerate with tools/make_imagenet_classes.py.",
    "index\twnid\tname\tlemmas",
]
lines += [f"{i}\t{w}\t{n}\t{d}" for i, (w, n, d) in enumerate(zip(wnids, names, lemmas))]
out.write_text("\n".join(lines) + "\n", encoding="utf-8")
print(f"wrote {out}")

"""ImageNet-1k class metadata shipped with the package: index, WordNet id, names."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class ImageNetClasses:
    wnids: tuple[str, ...]
    names: tuple[str, ...]  # short, unique names ("tench", "goldfish")
    lemmas: tuple[str, ...]  # all WordNet lemmas of the synset

    def __len__(self) -> int:
        return len(self.wnids)

    @functools.cached_property
    def index_of_wnid(self) -> dict[str, int]:
        return {wnid: i for i, wnid in enumerate(self.wnids)}


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> ImageNetClasses:
    """The 1000 ImageNet-1k classes in the standard order (sorted WordNet ids)."""
    text = resources.files("mobilevt.data").joinpath("imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    header, rows = rows[0], rows[1:]
    if header != ["index", "wnid", "name", "lemmas"] or len(rows) != 1000:
        raise RuntimeError("mobilevt's packaged imagenet_classes.tsv is damaged; reinstall mobilevt")
    return ImageNetClasses(
        wnids=tuple(r[1] for r in rows), names=tuple(r[2] for r in rows), lemmas=tuple(r[3] for r in rows)
    )

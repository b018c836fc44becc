"""The PASCAL VOC colour palette used for segmentation masks (palette PNGs, colour masks)."""

from __future__ import annotations

IGNORE_INDEX = 255  # the "void" label of PASCAL VOC masks: not counted by losses or metrics


def voc_palette(num_colors: int = 256) -> list[int]:
    """The PASCAL VOC palette as a flat ``[r0, g0, b0, r1, ...]`` list of ``3 * num_colors``
    ints, the form ``PIL.Image.putpalette`` takes.

    Label ``c`` gets the colour whose bits are the bits of ``c`` spread over the three
    channels from the most significant bit down (VOC's ``bitget`` construction): 0 is black,
    1 dark red, 2 dark green, ... and 255 (ignore) the light (224, 224, 192) of VOC's borders.
    """
    palette = []
    for label in range(num_colors):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette

"""ViLT image preprocessing as a TorchScript-compatible module.

:class:`ViltImagePreprocess` turns one uint8 RGB image into ViLT's ``(pixel_values,
pixel_mask)``: the shorter side resized to 384 and the longer one capped at 639, both
floored to multiples of 32 (:class:`mobilevt.data.vilt_preprocess.ViltImageSizeRule`), bicubic with
antialiasing, scaled by 1/255 and normalised with mean = std = 0.5. ``pad_batch`` zero-pads
several preprocessed images at the bottom and right to the largest height and width and
returns the pixel mask that tells the model which pixels are real, as transformers'
``ViltImageProcessor`` does.

Reference: transformers 5's ``ViltImageProcessor`` (its torchvision backend): on the CPU
it resizes the uint8 image with torch's native uint8 antialiased bicubic kernel, and so
does this module, then normalises as ``(x - 127.5) / 127.5`` in float32 (the fused form
transformers uses). The outputs are therefore equal up to float rounding of the
normalisation (see tests/tasks/test_vqa_pipeline.py for the measured difference on real photos).
On other devices (no uint8 bicubic kernel) the resize runs in float32 and is rounded back
to uint8, which is torchvision's fallback path. The PIL backend
(``ViltImageProcessorPil``, the dandelin/ViLT training pipeline) rounds after each of
PIL's two 1-D passes: measured on 24 real photos it differs by 1-2 grey levels on 0.27% of
the values (max-abs 0.0157 after normalisation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError

__all__ = ["VILT_IMAGE_SIZE_RULE", "ViltImagePreprocess", "ViltImageSizeRule", "vilt_resized_size"]


def vilt_resized_size(
    height: int, width: int, shorter_side: int = 384, longer_side_max: int = 639, size_divisor: int = 32
) -> tuple[int, int]:
    """(height, width) that ViLT resizes a ``height`` x ``width`` image to.

    The scriptable form of :meth:`mobilevt.data.vilt_preprocess.ViltImageSizeRule.output_size`
    (the same float arithmetic as transformers' ``ViltImageProcessor.resize``): the shorter
    side becomes ``shorter_side``, the longer keeps the aspect ratio up to
    ``longer_side_max``, both rounded half up, then floored to a multiple of ``size_divisor``.
    """
    if height <= 0 or width <= 0:
        raise InvalidInputError("image size must be positive, got " + str(height) + "x" + str(width))
    if height < width:
        new_height = float(shorter_side)
        new_width = width * (shorter_side / height)
    else:
        new_height = height * (shorter_side / width)
        new_width = float(shorter_side)
    longest = max(new_height, new_width)
    if longest > longer_side_max:
        scale = longer_side_max / longest
        new_height = new_height * scale
        new_width = new_width * scale
    out_height = int(new_height + 0.5) // size_divisor * size_divisor
    out_width = int(new_width + 0.5) // size_divisor * size_divisor
    return out_height, out_width


@dataclass(frozen=True)
class ViltImageSizeRule:
    """How ViLT prepares an image (dandelin/ViLT's ``pixelbert_transform``, transformers'
    ``ViltImageProcessor``). Data only: the preprocessing itself lives elsewhere.

    The shorter side is resized to ``shorter_side`` and the longer one keeps the aspect
    ratio, capped at ``longer_side_max`` (``int(1333 / 800 * shorter_side)``, the
    800x1333 cap of detection pipelines scaled down); both are rounded (half up) and
    floored to a multiple of ``size_divisor``. Pixels are scaled by 1/255, normalised
    with ``mean``/``std`` (RGB), and the images of a batch are zero-padded at the bottom
    and right to the largest height and width, with ``pixel_mask`` 1 on real pixels.
    """

    shorter_side: int = 384
    longer_side_max: int = 639
    size_divisor: int = 32
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    channel_order: str = "RGB"

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) an image of ``height`` x ``width`` is resized to."""
        return vilt_resized_size(height, width, self.shorter_side, self.longer_side_max, self.size_divisor)

    @classmethod
    def for_image_size(cls, image_size: int, patch_size: int) -> ViltImageSizeRule:
        """ViLT's rule scaled to a model trained on ``image_size`` squares: the shorter side to
        ``image_size``, the longer capped by the same 1333/800 ratio, sides in whole patches.
        ``for_image_size(384, 32)`` is ViLT's own rule."""
        if image_size <= 0 or patch_size <= 0:
            raise InvalidInputError(f"image_size and patch_size must be positive, got {image_size}, {patch_size}")
        return cls(shorter_side=image_size, longer_side_max=int(1333 / 800 * image_size), size_divisor=patch_size)

    def to_dict(self) -> dict:
        """The rule as JSON-ready data (:meth:`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ViltImageSizeRule:
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)

    @classmethod
    def from_preprocessor_config(cls, config: dict) -> ViltImageSizeRule:
        """The rule of a ``preprocessor_config.json`` (:meth:`preprocessor_config`, or
        transformers' own for a ViltImageProcessor: the longer side's cap then follows from
        the shorter side's size, as transformers computes it)."""
        try:
            shorter = int(config["size"]["shortest_edge"])
            longer = int(config.get("longer_side_max", int(1333 / 800 * shorter)))
            mean, std = tuple(config["image_mean"]), tuple(config["image_std"])
            return cls(shorter, longer, int(config["size_divisor"]), mean=mean, std=std)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InvalidInputError(
                f"not a ViLT preprocessor_config.json ({type(err).__name__}: {err}): it needs size.shortest_edge, "
                "size_divisor, image_mean and image_std"
            ) from err

    def preprocessor_config(self) -> dict:
        """The rule in the keys of transformers' ``preprocessor_config.json`` for
        ``ViltImageProcessor`` (which derives the longer side's cap from the shorter side's
        size; ``longer_side_max`` states it for readers that do not)."""
        if self.interpolation != "bicubic" or self.channel_order != "RGB":
            raise InvalidInputError(f"only bicubic RGB rules have a ViltImageProcessor form, got {self}")
        return {
            "image_processor_type": "ViltImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": self.shorter_side},
            "longer_side_max": self.longer_side_max,
            "size_divisor": self.size_divisor,
            "resample": 3,  # PIL's BICUBIC
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "do_pad": True,
        }


VILT_IMAGE_SIZE_RULE = ViltImageSizeRule()


class ViltImagePreprocess(nn.Module):
    """One uint8 RGB image to ViLT's ``(pixel_values [1, 3, h, w], pixel_mask [1, h, w])``.

    Input: a uint8 tensor ``[H, W, 3]`` (camera frames, bitmaps, ``numpy`` arrays) or
    ``[3, H, W]`` (:func:`mobilevt.load_image`). A tensor whose last dimension is 3 is read
    as ``[H, W, 3]``. The mask is all ones for one image; :meth:`pad_batch` makes the
    padded batch and its mask for several.

    Args:
        size_rule: a :class:`mobilevt.data.vilt_preprocess.ViltImageSizeRule` (default: ViLT's,
            ``model.image_size_rule``): sizes, mean and std.
    """

    def __init__(self, size_rule=None):
        super().__init__()
        if size_rule is None:
            size_rule = VILT_IMAGE_SIZE_RULE
        if size_rule.interpolation != "bicubic" or size_rule.channel_order != "RGB":
            raise InvalidInputError(
                f"ViltImagePreprocess implements bicubic RGB preprocessing, the rule asks for "
                f"{size_rule.interpolation} {size_rule.channel_order}"
            )
        self.shorter_side = int(size_rule.shorter_side)
        self.longer_side_max = int(size_rule.longer_side_max)
        self.size_divisor = int(size_rule.size_divisor)
        self.mean: list[float] = [float(v) for v in size_rule.mean]
        self.std: list[float] = [float(v) for v in size_rule.std]
        # the fused rescale + normalise of the reference: (x - 255 mean) / (255 std)
        scaled_mean = torch.tensor(size_rule.mean, dtype=torch.float32) * 255.0
        scaled_std = torch.tensor(size_rule.std, dtype=torch.float32) * 255.0
        self.register_buffer("scaled_mean", scaled_mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scaled_std", scaled_std.view(1, 3, 1, 1), persistent=False)

    def size_rule(self) -> ViltImageSizeRule:
        """The rule this module applies (what an app that pre-processes itself must follow)."""
        return ViltImageSizeRule(
            self.shorter_side, self.longer_side_max, self.size_divisor, mean=tuple(self.mean), std=tuple(self.std)
        )

    @torch.jit.export
    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of ``pixel_values`` for an input of ``height`` x ``width``."""
        return vilt_resized_size(height, width, self.shorter_side, self.longer_side_max, self.size_divisor)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chw = self._channels_first(image)
        height, width = self.output_size(chw.shape[1], chw.shape[2])
        if height == 0 or width == 0:
            raise InvalidInputError(
                "image of " + str(chw.shape[1]) + "x" + str(chw.shape[2]) + " pixels is too elongated: ViLT's resize "
                "gives a side shorter than " + str(self.size_divisor) + " pixels; crop it closer to square"
            )
        resized = self._resize(chw.unsqueeze(0), height, width)
        pixel_values = (resized.to(torch.float32) - self.scaled_mean) / self.scaled_std
        pixel_mask = torch.ones([1, height, width], dtype=torch.long, device=pixel_values.device)
        return pixel_values.contiguous(), pixel_mask

    @torch.jit.export
    def pad_batch(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocess ``images`` (each as :meth:`forward` takes them) into one batch
        ``[B, 3, h_max, w_max]``, zero-padded at the bottom and right, with
        ``pixel_mask [B, h_max, w_max]`` (1 on real pixels, 0 on padding)."""
        if len(images) == 0:
            raise InvalidInputError("pad_batch needs at least one image")
        processed: list[torch.Tensor] = []
        max_height = 0
        max_width = 0
        for image in images:
            pixel_values, _ = self.forward(image)
            processed.append(pixel_values)
            max_height = max(max_height, pixel_values.shape[2])
            max_width = max(max_width, pixel_values.shape[3])
        device = processed[0].device
        batch = torch.zeros([len(processed), 3, max_height, max_width], dtype=torch.float32, device=device)
        mask = torch.zeros([len(processed), max_height, max_width], dtype=torch.long, device=device)
        for index, pixel_values in enumerate(processed):
            height, width = pixel_values.shape[2], pixel_values.shape[3]
            batch[index, :, :height, :width] = pixel_values[0]
            mask[index, :height, :width] = 1
        return batch, mask

    def _channels_first(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8:
            raise InvalidInputError(
                "expected a uint8 RGB image (values 0-255), got dtype "
                + str(image.dtype)
                + "; convert with (image * 255).round().to(torch.uint8) if it is scaled to [0, 1]"
            )
        if image.dim() == 3 and image.shape[2] == 3:
            return image.permute(2, 0, 1)
        if image.dim() == 3 and image.shape[0] == 3:
            return image
        raise InvalidInputError(
            "expected one RGB image [H, W, 3] or [3, H, W], got shape "
            + str(list(image.shape))
            + "; convert grayscale or RGBA images to RGB first (mobilevt.load_image does it)"
        )

    def _resize(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if image.shape[2] == height and image.shape[3] == width:
            return image
        if image.device.type == "cpu":
            # torch's native uint8 antialiased bicubic kernel: what the reference runs
            return F.interpolate(image, size=[height, width], mode="bicubic", align_corners=False, antialias=True)
        # no uint8 bicubic kernel elsewhere: torchvision's fallback, float then rounded
        resized = F.interpolate(
            image.to(torch.float32), size=[height, width], mode="bicubic", align_corners=False, antialias=True
        )
        return resized.clamp(0.0, 255.0).round().to(torch.uint8)

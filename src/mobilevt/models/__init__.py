"""Model families. Importing a family module registers its variants."""
from .mobilevit import MobileViT, MobileViTArch, StageConfig
from ..data.vilt_preprocess import ViltImageSizeRule
from .mobivqa import ExitMode, MobiVqaVilt  # registers vilt_b32_vqa
from .vilt import ViltArch, ViltForQuestionAnswering

# last: registers an SSDLite detector for every MobileViT classifier registered above
from .ssdlite import SSDLite, SSDLiteConfig  # noqa: E402
from .deeplabv3 import DeepLabV3  # noqa: E402  (likewise a DeepLabV3 segmenter)

__all__ = [
    "DeepLabV3", "MobileViT", "MobileViTArch", "SSDLite", "SSDLiteConfig", "StageConfig", "ViltArch", "ViltForQuestionAnswering",
    "ViltImageSizeRule", "ExitMode", "MobiVqaVilt",
]

"""Model families. Importing a family module registers its variants."""

from ..data.vilt_preprocess import ViltImageSizeRule
from .deeplabv3 import DeepLabV3
from .mobilevit import MobileViT, MobileViTArch, StageConfig
from .mobivqa import ExitMode, MobiVqaVilt  # registers vilt_b32_vqa

# the task models, registered from their literal tables (after the classifiers: the order
# of list_models())
from .ssdlite import SSDLite, SSDLiteConfig
from .vilt import ViltArch, ViltForQuestionAnswering

__all__ = [
    "DeepLabV3",
    "MobileViT",
    "MobileViTArch",
    "SSDLite",
    "SSDLiteConfig",
    "StageConfig",
    "ViltArch",
    "ViltForQuestionAnswering",
    "ViltImageSizeRule",
    "ExitMode",
    "MobiVqaVilt",
]

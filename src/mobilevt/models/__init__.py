"""Model families. Importing a family module registers its variants."""
from .mobilevit import MobileViT, MobileViTArch, StageConfig
from ..data.vilt_preprocess import ViltImageSizeRule
from .mobivqa import ExitMode, MobiVqaVilt  # registers vilt_b32_vqa
from .vilt import ViltArch, ViltForQuestionAnswering

# the task models, registered from their literal tables (after the classifiers: the order
# of list_models())
from .ssdlite import SSDLite, SSDLiteConfig  # noqa: E402
from .deeplabv3 import DeepLabV3  # noqa: E402

__all__ = [
    "DeepLabV3", "MobileViT", "MobileViTArch", "SSDLite", "SSDLiteConfig", "StageConfig", "ViltArch", "ViltForQuestionAnswering",
    "ViltImageSizeRule", "ExitMode", "MobiVqaVilt",
]

"""Model families. Importing a family module registers its variants."""
from .mobilevit import MobileViT, MobileViTArch, StageConfig
from .vilt import ViltArch, ViltForQuestionAnswering, ViltImageSizeRule

# last: registers an SSDLite detector for every MobileViT classifier registered above
from .ssdlite import SSDLite, SSDLiteConfig  # noqa: E402

__all__ = [
    "MobileViT", "MobileViTArch", "SSDLite", "SSDLiteConfig", "StageConfig", "ViltArch", "ViltForQuestionAnswering",
    "ViltImageSizeRule",
]

"""Model families. Importing a family module registers its variants."""
from .mobilevit import MobileViT, MobileViTArch, StageConfig
from .vilt import ViltArch, ViltForQuestionAnswering, ViltImageSizeRule

__all__ = ["MobileViT", "MobileViTArch", "StageConfig", "ViltArch", "ViltForQuestionAnswering", "ViltImageSizeRule"]

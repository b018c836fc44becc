"""Model families. Importing a family module registers its variants."""
from .mobilevit import MobileViT, MobileViTArch, StageConfig

__all__ = ["MobileViT", "MobileViTArch", "StageConfig"]

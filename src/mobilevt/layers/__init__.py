"""Building blocks shared by the model families."""

from .attention import LinearSelfAttention, MultiHeadSelfAttention
from .conv import ConvNormAct, ConvNormReLU, cvnets_init_, fuse_batchnorms_, make_divisible
from .inverted_residual import InvertedResidual
from .mobilevit_block import MobileViTBlock, MobileViTV2Block, MobileViTV3Block, MobileViTV3V2Block
from .transformer import ConvMlp, Dropouts, LinearTransformerLayer, Mlp, TransformerLayer

__all__ = [
    "ConvMlp",
    "ConvNormAct",
    "ConvNormReLU",
    "Dropouts",
    "InvertedResidual",
    "LinearSelfAttention",
    "LinearTransformerLayer",
    "MobileViTBlock",
    "MobileViTV2Block",
    "MobileViTV3Block",
    "MobileViTV3V2Block",
    "Mlp",
    "MultiHeadSelfAttention",
    "TransformerLayer",
    "cvnets_init_",
    "fuse_batchnorms_",
    "make_divisible",
]

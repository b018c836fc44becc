"""Image decoding, preprocessing and datasets."""

from .datasets import (
    ClassificationSample,
    DatasetLayoutError,
    ImageClassificationDataset,
    collate_classification,
    image_folder,
    imagenet_val,
    open_classification_dataset,
    read_validation_labels,
)
from .imagenet import ImageNetClasses, imagenet_classes
from .images import IMAGE_EXTENSIONS, ImageDecodeError, list_images, load_image, pil_to_tensor
from .preprocess import ImagePreprocess
from .sampler import MultiScaleBatchSampler, MultiScaleDataset, Resolution, multiscale_resolutions

__all__ = [
    "IMAGE_EXTENSIONS",
    "ClassificationSample",
    "DatasetLayoutError",
    "ImageClassificationDataset",
    "ImageDecodeError",
    "ImageNetClasses",
    "ImagePreprocess",
    "MultiScaleBatchSampler",
    "MultiScaleDataset",
    "Resolution",
    "collate_classification",
    "image_folder",
    "imagenet_classes",
    "imagenet_val",
    "list_images",
    "load_image",
    "multiscale_resolutions",
    "open_classification_dataset",
    "pil_to_tensor",
    "read_validation_labels",
]

"""The model: everything a saved folder carries for `trust_remote_code` (see docs/ARCHITECTURE.md).

The modules here import only each other, by sibling-relative imports (`from .backbone import ...`), and never
`hf_detr` or `transformers.models.*`: `save_pretrained` copies them flat next to the weights, where nothing else of
hf_detr exists. `tests/test_layout.py` checks it.
"""

from .configuration_hf_detr import HfDetrConfig
from .errors import HfDetrInputError, HfDetrInputTypeError
from .image_processing_hf_detr import HfDetrImageProcessor
from .modeling_hf_detr import (
    HfDetrForObjectDetection,
    HfDetrForSegmentation,
    HfDetrModel,
    HfDetrModelOutput,
    HfDetrObjectDetectionOutput,
    HfDetrPreTrainedModel,
    HfDetrSegmentationOutput,
)

__all__ = [
    "HfDetrConfig",
    "HfDetrForObjectDetection",
    "HfDetrForSegmentation",
    "HfDetrImageProcessor",
    "HfDetrInputError",
    "HfDetrInputTypeError",
    "HfDetrModel",
    "HfDetrModelOutput",
    "HfDetrObjectDetectionOutput",
    "HfDetrPreTrainedModel",
    "HfDetrSegmentationOutput",
]

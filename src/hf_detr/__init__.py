"""hf_detr: DETR for the Hugging Face ecosystem.

Importing the package registers the model type ``hf_detr`` with the transformers Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForObjectDetection

from .configuration_hf_detr import HfDetrConfig
from .modeling_hf_detr import (
    HfDetrForObjectDetection,
    HfDetrModel,
    HfDetrModelOutput,
    HfDetrObjectDetectionOutput,
    HfDetrPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register(HfDetrConfig.model_type, HfDetrConfig, exist_ok=True)
AutoModel.register(HfDetrConfig, HfDetrModel, exist_ok=True)
AutoModelForObjectDetection.register(HfDetrConfig, HfDetrForObjectDetection, exist_ok=True)
# auto_map in saved configs, and the code files copied next to the weights, for trust_remote_code loading
HfDetrConfig.register_for_auto_class()
HfDetrModel.register_for_auto_class("AutoModel")
HfDetrForObjectDetection.register_for_auto_class("AutoModelForObjectDetection")

from transformers import AutoImageProcessor, AutoVideoProcessor  # noqa: E402

from .image_processing_hf_detr import HfDetrImageProcessor  # noqa: E402

AutoImageProcessor.register(HfDetrConfig, image_processor_classes={"torchvision": HfDetrImageProcessor}, exist_ok=True)
HfDetrImageProcessor.register_for_auto_class("AutoImageProcessor")
# No video processor: without this, pipeline() guesses one from the processor's auto_map and prompts for remote code.
AutoVideoProcessor.register(HfDetrConfig, video_processor_classes={}, exist_ok=True)

__all__ = [
    "HfDetrConfig",
    "HfDetrForObjectDetection",
    "HfDetrImageProcessor",
    "HfDetrModel",
    "HfDetrModelOutput",
    "HfDetrObjectDetectionOutput",
    "HfDetrPreTrainedModel",
]

"""hf_detr: DETR for the Hugging Face ecosystem.

Layout (docs/ARCHITECTURE.md): `modeling/` is the model (config, network, image processor, matcher, loss; the files a
saved folder carries for `trust_remote_code`), `data/` the data sets and batches, `evaluation/` COCO metrics and the
one evaluation loop, `training/` the accelerate loop and the Trainer integration, `hub/` checkpoint conversion, export
and model cards, `apps/` the `hf-detr` command, the demo and prediction; `presets` names the published and recipe
configurations, and `create_model` (`builder`) builds a model from a preset name, a folder or a Hub id.

Importing the package registers the model type ``hf_detr`` with the transformers Auto classes (config, models,
image processor) and marks the classes for ``auto_map``, so ``save_pretrained`` writes a folder that also loads
with ``trust_remote_code=True`` where hf_detr is not installed.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageSegmentation,
    AutoModelForObjectDetection,
    AutoModelForUniversalSegmentation,
    AutoVideoProcessor,
)

from . import _moved, modeling
from .modeling import (
    HfDetrConfig,
    HfDetrForObjectDetection,
    HfDetrForSegmentation,
    HfDetrImageProcessor,
    HfDetrInputError,
    HfDetrInputTypeError,
    HfDetrModel,
    HfDetrModelOutput,
    HfDetrObjectDetectionOutput,
    HfDetrPreTrainedModel,
    HfDetrSegmentationOutput,
)

__version__ = "0.1.0"

AutoConfig.register(HfDetrConfig.model_type, HfDetrConfig, exist_ok=True)
AutoModel.register(HfDetrConfig, HfDetrModel, exist_ok=True)
AutoModelForObjectDetection.register(HfDetrConfig, HfDetrForObjectDetection, exist_ok=True)
# as transformers registers its DetrForSegmentation: the image-segmentation pipeline looks in both
AutoModelForImageSegmentation.register(HfDetrConfig, HfDetrForSegmentation, exist_ok=True)
AutoModelForUniversalSegmentation.register(HfDetrConfig, HfDetrForSegmentation, exist_ok=True)
AutoImageProcessor.register(HfDetrConfig, image_processor_classes={"torchvision": HfDetrImageProcessor}, exist_ok=True)
# No video processor: without this, pipeline() guesses one from the processor's auto_map and prompts for remote code.
AutoVideoProcessor.register(HfDetrConfig, video_processor_classes={}, exist_ok=True)

HfDetrConfig.register_for_auto_class()
HfDetrModel.register_for_auto_class("AutoModel")
HfDetrForObjectDetection.register_for_auto_class("AutoModelForObjectDetection")
HfDetrForSegmentation.register_for_auto_class("AutoModelForImageSegmentation")
HfDetrImageProcessor.register_for_auto_class("AutoImageProcessor")

_moved.install()

# imported after the registration: the builder loads checkpoints through the Auto-registered classes
from .builder import create_image_processor, create_model  # noqa: E402

# the public API: the model's (config, models, outputs, image processor) and the builder
__all__ = [*modeling.__all__, "create_image_processor", "create_model"]

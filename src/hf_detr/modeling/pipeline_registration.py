"""Let `pipeline("object-detection")` and `pipeline("image-segmentation")` accept hf_detr's models without logging
"not supported".

Each pipeline checks the model's class name against a copy of transformers' built-in name tables, a copy that loses
the models added with `AutoModelFor*.register`. The tables are the `_model_mapping` of the public
`MODEL_FOR_*_MAPPING`s (private to transformers, hence the `getattr` and the type check: if they change, the pipelines
only log again). The image processor's module calls `register_with_pipelines` on import, because every pipeline loads
it, also when the code comes from a saved folder with `trust_remote_code` where hf_detr is not installed.
"""

from __future__ import annotations

from transformers import MODEL_FOR_IMAGE_SEGMENTATION_MAPPING, MODEL_FOR_OBJECT_DETECTION_MAPPING

__all__ = ["register_with_pipelines"]


def register_with_pipelines() -> None:
    for mapping, name in (
        (MODEL_FOR_OBJECT_DETECTION_MAPPING, "HfDetrForObjectDetection"),
        (MODEL_FOR_IMAGE_SEGMENTATION_MAPPING, "HfDetrForSegmentation"),
    ):
        names = getattr(mapping, "_model_mapping", None)
        if isinstance(names, dict):
            names.setdefault("hf_detr", name)

"""Data: loaders into the Hub's COCO detection schema (`loading`), the generated shapes (`synthetic`), the one entry
point from a name to splits (`sources.load_data`), box-aware augmentation (`transforms`) and model batches
(`collate`)."""

from .loading import (
    BoxPolicy,
    apply_box_policy,
    coco_category_ids,
    coco_detection_features,
    id2label,
    load_coco_folder,
    load_detection_dataset,
)
from .sources import SYNTHETIC, load_data

__all__ = [
    "SYNTHETIC",
    "BoxPolicy",
    "apply_box_policy",
    "coco_category_ids",
    "coco_detection_features",
    "id2label",
    "load_coco_folder",
    "load_data",
    "load_detection_dataset",
]

"""Data: loaders into the Hub's COCO detection schema (`loading`, with the YOLO and VOC parsers of `formats`), the
generated shapes (`synthetic`), the one entry point from a name to splits (`sources.load_data`), the data check of
`hf-detr check-data` (`check`), object masks as compressed RLEs (`masks`), box- and mask-aware augmentation
(`transforms`) and model batches (`collate`)."""

from .check import DataReport, check_data
from .loading import (
    BoxChange,
    BoxPolicy,
    apply_box_policy,
    coco_category_ids,
    coco_detection_features,
    coco_isthing,
    detect_format,
    id2label,
    load_coco_folder,
    load_detection_dataset,
)
from .masks import mask_references
from .sources import SYNTHETIC, load_data

__all__ = [
    "SYNTHETIC",
    "BoxChange",
    "BoxPolicy",
    "DataReport",
    "apply_box_policy",
    "check_data",
    "coco_category_ids",
    "coco_detection_features",
    "coco_isthing",
    "detect_format",
    "id2label",
    "load_coco_folder",
    "load_data",
    "load_detection_dataset",
    "mask_references",
]

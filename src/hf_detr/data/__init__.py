"""Data: loaders into the Hub's COCO detection schema (`schema`): the entry `loading`, with COCO folders (`coco`), YOLO
and VOC folders (`formats`, `folders`), Hub and `save_to_disk` splits (`hub_sources`), boxes under one `box_policy`
and the splits prepared once (`prepared`); the generated shapes (`synthetic`), the one entry point from a name to
splits (`sources.load_data`), the data check of `hf-detr check-data` (`check`), object masks as compressed RLEs
(`masks`), box- and mask-aware augmentation (`transforms`) and model batches (`collate`)."""

from .box_policy import BoxChange, BoxPolicy, apply_box_policy
from .check import DataReport, check_data
from .coco import load_coco_folder
from .loading import detect_format, load_detection_dataset
from .masks import mask_references
from .schema import coco_category_ids, coco_detection_features, coco_isthing, id2label
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

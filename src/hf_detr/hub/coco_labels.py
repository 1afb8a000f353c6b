"""COCO's label maps as the original DETR checkpoints use them.

Detection: the 91 category ids 0..90 of the COCO annotation files, where 0 and the ten ids COCO never assigned are
"N/A" (the same map as transformers' DETR configs). Panoptic: the original's 250 classes, of which COCO panoptic's 133
category ids (80 things, ids 1-90, and 53 stuff classes, ids 92-200, from panopticapi's panoptic_coco_categories.json)
are named and the others "N/A"."""

from __future__ import annotations

_LABELS = (
    "N/A", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

COCO_ID2LABEL: dict[int, str] = dict(enumerate(_LABELS))

_STUFF = {
    92: "banner", 93: "blanket", 95: "bridge", 100: "cardboard", 107: "counter", 109: "curtain", 112: "door-stuff",
    118: "floor-wood", 119: "flower", 122: "fruit", 125: "gravel", 128: "house", 130: "light", 133: "mirror-stuff",
    138: "net", 141: "pillow", 144: "platform", 145: "playingfield", 147: "railroad", 148: "river", 149: "road",
    151: "roof", 154: "sand", 155: "sea", 156: "shelf", 159: "snow", 161: "stairs", 166: "tent", 168: "towel",
    171: "wall-brick", 175: "wall-stone", 176: "wall-tile", 177: "wall-wood", 178: "water-other", 180: "window-blind",
    181: "window-other", 184: "tree-merged", 185: "fence-merged", 186: "ceiling-merged", 187: "sky-other-merged",
    188: "cabinet-merged", 189: "table-merged", 190: "floor-other-merged", 191: "pavement-merged",
    192: "mountain-merged", 193: "grass-merged", 194: "dirt-merged", 195: "paper-merged", 196: "food-other-merged",
    197: "building-other-merged", 198: "rock-merged", 199: "wall-other-merged", 200: "rug-merged",
}  # fmt: skip
COCO_PANOPTIC_NUM_CLASSES = 250  # the original's num_classes for coco_panoptic (ids up to 200, rounded up)
COCO_PANOPTIC_ID2LABEL: dict[int, str] = {
    i: COCO_ID2LABEL.get(i, "N/A") if i <= 90 else _STUFF.get(i, "N/A") for i in range(COCO_PANOPTIC_NUM_CLASSES)
}
COCO_PANOPTIC_STUFF_IDS = tuple(_STUFF)  # the classes that are not things (no instances, one segment per class)

__all__ = ["COCO_ID2LABEL", "COCO_PANOPTIC_ID2LABEL", "COCO_PANOPTIC_NUM_CLASSES", "COCO_PANOPTIC_STUFF_IDS"]

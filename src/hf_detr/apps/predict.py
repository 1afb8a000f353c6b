"""Detect objects in image files with a saved model folder: JSON results and annotated PNGs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from ..modeling import HfDetrForObjectDetection, HfDetrImageProcessor
from ..modeling.image_processing_hf_detr import upright_rgb
from .visualize import draw_detections


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as upright RGB (`upright_rgb`: EXIF orientation, grayscale, 16-bit, transparency), as
    training saw its images; missing or unreadable files name the path."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image {path} does not exist or is not a file")
    try:
        with Image.open(path) as image:
            image.load()  # the pixels, before the file closes (an upright RGB image is returned as it is)
            return upright_rgb(image)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"image {path} could not be read as an image: {error}") from error


def predict_images(
    model_dir: str | os.PathLike,
    images: list[str | os.PathLike],
    threshold: float = 0.5,
    out_dir: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Run the model saved in `model_dir` (weights, config and preprocessor config; an hf_detr folder or a transformers
    DETR checkpoint, folder or Hub id) on each image file.

    Returns, per image, `{"image": path, "detections": [{"label", "score", "box": {"xmin", "ymin", "xmax",
    "ymax"}}]}` in original pixel coordinates; with `out_dir`, also writes `<stem>.png` with the boxes drawn.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    pictures = [open_image(path) for path in images]  # fail on a bad path before loading the model
    # hf_detr's folders, and transformers' DETR checkpoints converted on load
    model = HfDetrForObjectDetection.from_pretrained(model_dir).eval()
    processor = HfDetrImageProcessor.from_pretrained(model_dir)
    id2label = model.config.id2label
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    results = []
    for path, picture in zip(images, pictures):
        inputs = processor(images=picture, return_tensors="pt")
        with torch.no_grad():
            outputs = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs.get("pixel_mask"))
        found = processor.post_process_object_detection(
            outputs, threshold=threshold, target_sizes=[(picture.height, picture.width)]
        )[0]
        detections = [
            {
                "label": id2label.get(int(label), str(int(label))),
                "score": round(float(score), 4),
                "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), (round(float(v), 2) for v in box))),
            }
            for score, label, box in zip(found["scores"], found["labels"], found["boxes"])
        ]
        results.append({"image": str(path), "detections": detections})
        if out_dir is not None:
            drawn = draw_detections(picture, found["boxes"], found["labels"].tolist(), id2label, found["scores"])
            Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(Path(out_dir) / f"{Path(path).stem}.png")
    return results

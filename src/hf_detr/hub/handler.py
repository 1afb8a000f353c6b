"""Inference Endpoints handler of an hf_detr model folder: `save_model_folder` copies this file into every folder it
writes (and so `push_to_hub` into every repository) as `handler.py`.

Inference Endpoints build `EndpointHandler(path)` once with the repository's folder and call it with each request's
body, `{"inputs": image, "parameters": {"threshold": 0.5}}`: the image as a base64 string (a `data:` URL too), its
file's bytes, or a PIL image (what the toolkit passes for a request sent as an image content type). The answer is
what `pipeline("object-detection")` returns, `[{"score", "label", "box": {"xmin", "ymin", "xmax", "ymax"}}]` with
the box in the image's pixels.

It runs where hf_detr is not installed: only transformers (the folder carries the model's code, loaded with
`trust_remote_code=True`), torch, PIL and the standard library, with the folder's requirements.txt.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoConfig, pipeline
from transformers.dynamic_module_utils import get_class_from_dynamic_module

REQUEST = '{"inputs": "<base64 image>", "parameters": {"threshold": 0.5}}'


class EndpointHandler:
    """`pipeline("object-detection")` on the model folder `path` (default: the folder holding this file); a
    segmentation model's boxes, without its masks."""

    def __init__(self, path: str = "") -> None:
        folder = path or os.path.dirname(os.path.abspath(__file__))
        auto_map = AutoConfig.from_pretrained(folder, trust_remote_code=True).auto_map
        model: Any = folder
        if "AutoModelForObjectDetection" not in auto_map:
            # a segmentation model's folder: its detector class (in the same code file) loads the same weights
            # without the mask head, and gives the boxes
            module = auto_map["AutoModelForImageSegmentation"].rsplit(".", 1)[0]
            model = get_class_from_dynamic_module(f"{module}.HfDetrForObjectDetection", folder).from_pretrained(folder)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.pipeline = pipeline(
            "object-detection", model=model, image_processor=folder, trust_remote_code=True, device=device
        )

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError(f"the request body must be a JSON object {REQUEST}, got {str(data)[:100]!r}")
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise TypeError(f'parameters must be an object such as {{"threshold": 0.5}}, got {parameters!r}')
        unknown = sorted(set(parameters) - {"threshold"})
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; the one parameter is threshold, e.g. {REQUEST}")
        threshold = parameters.get("threshold", 0.5)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"parameters.threshold must be a score in [0, 1], got {threshold!r}")
        return self.pipeline(_image(data["inputs"]), threshold=threshold)


def _image(inputs: Any) -> Image.Image:
    """The request's image, decoded (a base64 string or a file's bytes) and checked to be one PIL reads."""
    if isinstance(inputs, Image.Image):
        return inputs
    if isinstance(inputs, str):
        encoded = inputs.split(",", 1)[1] if inputs.startswith("data:") else inputs  # data:image/png;base64,...
        try:
            inputs = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(
                f"inputs is not a base64 image ({error}); send the file's bytes base64-encoded, as in {REQUEST}"
            ) from None
    if not isinstance(inputs, (bytes, bytearray)):
        raise TypeError(f"inputs must be a base64 string, bytes or a PIL image, got {type(inputs).__name__}")
    try:
        image = Image.open(io.BytesIO(inputs))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ValueError(
            f"inputs could not be read as an image ({error}); send a JPEG, PNG, WebP, BMP or TIFF file"
        ) from None
    return image

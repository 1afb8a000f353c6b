"""Running exported graphs with onnxruntime: `OnnxDetector`, the end-to-end graph with its inputs checked (images as
PIL images or uint8 arrays, any sizes, batched and padded here), and `OnnxModel`, the raw graph behind the model
interface that `hf_detr.evaluation.evaluate` scores."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import nn

from ..modeling.errors import HfDetrInputError, HfDetrInputTypeError
from ..modeling.image_processing_hf_detr import upright_rgb
from .onnx_graph import MAX_SIDE, MIN_SIDE

__all__ = ["OnnxDetector", "OnnxModel", "end_to_end_inputs", "session"]


def session(path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None) -> Any:
    """An onnxruntime `InferenceSession` of the graph at `path` (default provider: the CPU; `threads`: its
    intra-op threads, default onnxruntime's, one per core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: a float16 graph on the CPU warns of every operator it casts
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))


def _pixels(image: Any, where: str) -> np.ndarray:
    """One image as uint8 `[height, width, 3]` RGB pixels, or the error that says what is wrong with it."""
    if isinstance(image, PIL.Image.Image):
        image = np.asarray(upright_rgb(image))  # as the processor reads PIL images
    elif isinstance(image, torch.Tensor):
        image = image.numpy(force=True)
    if not isinstance(image, np.ndarray):
        raise HfDetrInputTypeError(
            f"{where} is a {type(image).__name__}; pass PIL images or uint8 [height, width, 3] arrays."
        )
    if image.dtype != np.uint8:
        raise HfDetrInputTypeError(
            f"{where} has dtype {image.dtype}; the end-to-end graph takes uint8 RGB pixels (0-255): "
            "convert float images in [0, 1] with (image * 255).round().astype(np.uint8)."
        )
    if image.ndim != 3 or image.shape[-1] != 3:
        channels = image.shape[-1] if image.ndim == 3 else 1
        raise HfDetrInputError(
            f"{where} has shape {image.shape} ({channels} channel{'s' if channels > 1 else ''}); the end-to-end graph "
            "takes RGB images [height, width, 3]: convert grayscale, two-channel or RGBA images to RGB first (PIL's "
            "image.convert('RGB'), or pass the PIL image)."
        )
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE or max(height, width) > MAX_SIDE:
        raise HfDetrInputError(
            f"{where} is {height} x {width} pixels (height x width); the end-to-end graph takes sides of {MIN_SIDE} to "
            f"{MAX_SIDE} pixels (its resize is a matrix product over every input pixel): "
            + (
                "an image this small holds nothing to detect."
                if min(height, width) < MIN_SIDE
                else "downscale it first, or cut it into tiles (hf-detr predict --tile)."
            )
        )
    return image


def end_to_end_inputs(images: Sequence[Any]) -> dict[str, np.ndarray]:
    """The end-to-end graph's inputs of `images` (PIL images or uint8 `[height, width, 3]` RGB arrays): `images`
    uint8 `[batch, H, W, 3]`, each in the top-left of the padded array, and `sizes` int64 `[batch, 2]`. A ValueError
    or TypeError naming the image when one cannot go through the graph."""
    if isinstance(images, (np.ndarray, PIL.Image.Image, torch.Tensor)) or not len(images):
        raise HfDetrInputTypeError("images must be a non-empty list of PIL images or uint8 [height, width, 3] arrays.")
    pixels = [_pixels(image, f"images[{i}]") for i, image in enumerate(images)]
    sizes = np.array([image.shape[:2] for image in pixels], dtype=np.int64)
    batch = np.zeros((len(pixels), *sizes.max(0), 3), dtype=np.uint8)
    for row, image in zip(batch, pixels):
        row[: image.shape[0], : image.shape[1]] = image
    return {"images": batch, "sizes": sizes}


class OnnxDetector:
    """The end-to-end graph at `path` under onnxruntime (`providers`, `threads`: see `session`):
    `detector(images, threshold)` gives one dict per image (`scores`, `labels`, `boxes` in the image's pixels and,
    for a segmentation model, bool `masks` `[n, height, width]`), the detections scoring at least `threshold`, best
    first."""

    def __init__(
        self, path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None
    ) -> None:
        self.session = session(path, providers, threads)
        self.output_names = [output.name for output in self.session.get_outputs()]
        if [graph_input.name for graph_input in self.session.get_inputs()] != ["images", "sizes"]:
            raise HfDetrInputError(
                f"{path} is not an end-to-end graph (inputs images, sizes); a raw graph runs with OnnxModel."
            )

    def __call__(self, images: Sequence[Any], threshold: float = 0.0) -> list[dict[str, np.ndarray]]:
        inputs = end_to_end_inputs(images)
        outputs = dict(zip(self.output_names, self.session.run(None, inputs)))
        found = []
        for i, (height, width) in enumerate(inputs["sizes"]):
            keep = outputs["scores"][i] >= threshold
            image = {name: outputs[name][i][keep] for name in ("scores", "labels", "boxes")}
            if "masks" in outputs:
                image["masks"] = outputs["masks"][i][keep][:, :height, :width]
            found.append(image)
        return found


class OnnxModel(nn.Module):
    """The raw graph at `path` behind the model interface that `hf_detr.evaluation.evaluate` scores:
    `model(pixel_values, pixel_mask)` returns `logits`, `pred_boxes` (and `pred_masks`) computed by onnxruntime;
    `config` is the PyTorch model's (labels); `providers`, `threads`: see `session`."""

    def __init__(
        self, path: str | os.PathLike, config: Any, providers: Sequence[str] | None = None, threads: int | None = None
    ) -> None:
        super().__init__()
        self.session, self.config = session(path, providers, threads), config
        self.output_names = [output.name for output in self.session.get_outputs()]
        # evaluate reads the model's device from its parameters; the graph runs on the CPU
        self.device_marker = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> Any:
        from ..evaluation.metrics import PostProcessInputs

        inputs = {"pixel_values": pixel_values.numpy(force=True), "pixel_mask": pixel_mask.numpy(force=True)}
        outputs = self.session.run(None, inputs)
        return PostProcessInputs(**{name: torch.from_numpy(value) for name, value in zip(self.output_names, outputs)})

"""HfDetrImageProcessor: images and COCO detection annotations in, DETR inputs and labels out; model outputs back to
boxes in pixels.

This module imports nothing from the package but its siblings `boxes` and `transformers_detr` (which reads a
transformers `DetrImageProcessor` config), so a saved folder can load it with `trust_remote_code`.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from torchvision.ops import box_convert
from torchvision.transforms.v2 import functional as tvF
from transformers import MODEL_FOR_OBJECT_DETECTION_MAPPING
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_transforms import get_size_with_aspect_ratio
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
    get_image_size_for_max_height_width,
    load_image,
    pil_torch_interpolation_mapping,
)

from .boxes import check_boxes, denormalize_boxes, normalize_boxes
from .transformers_detr import image_processor_dict_from_transformers

__all__ = ["HfDetrImageProcessor", "upright_rgb"]

_SIZE_FORMS = ({"shortest_edge", "longest_edge"}, {"height", "width"}, {"max_height", "max_width"})
_CHANNEL_COUNTS = (1, 3, 4)


class HfDetrImageProcessorKwargs(TypedDict, total=False):
    """The options of [`HfDetrImageProcessor`], settable at construction and per call."""

    do_resize: bool | None
    size: dict[str, int] | None
    resample: PILImageResampling | int | None
    do_rescale: bool | None
    rescale_factor: float | None
    do_normalize: bool | None
    image_mean: float | list[float] | tuple[float, ...] | None
    image_std: float | list[float] | tuple[float, ...] | None
    do_pad: bool | None
    pad_size: dict[str, int] | None
    do_convert_annotations: bool | None
    keep_crowd: bool | None
    input_data_format: str | ChannelDimension | None
    device: str | torch.device | None
    return_tensors: str | None


class HfDetrImageProcessor(TorchvisionBackend):
    r"""
    Prepares images (and COCO detection annotations) for [`HfDetrForObjectDetection`] and turns its outputs into boxes
    in pixels. Defaults reproduce DETR's evaluation preprocessing: shorter side 800, longer side at most 1333,
    bilinear antialiased resize, ImageNet normalization, zero padding to the largest image of the batch.

    Box convention (differs from `transformers.DetrImageProcessor` for padded batches): label `boxes` are normalized
    (center_x, center_y, width, height) relative to each image's resized size *before* padding, as in the original
    DETR: its checkpoints were trained with this convention and post-processing decodes `pred_boxes` with it.
    `DetrImageProcessor` renormalizes them (and sets `size`) to the padded canvas, so the labels of an image change
    with the size of the largest image it is batched with, and a model fine-tuned on them predicts boxes that drift
    from the objects. Here the labels of an image do not depend on its batch, and [`post_process_object_detection`]
    with the original sizes maps predictions back onto the original pixels. Without padding both processors agree.

    Args:
        do_resize (`bool`, defaults to `True`): resize every image according to `size`.
        size (`dict[str, int]`, defaults to `{"shortest_edge": 800, "longest_edge": 1333}`): one of
            `{"shortest_edge", "longest_edge"}` (shorter side to `shortest_edge` unless that makes the longer side
            exceed `longest_edge`, aspect ratio kept), `{"height", "width"}` (exact size) or
            `{"max_height", "max_width"}` (largest size within the bounds, aspect ratio kept).
        resample (`PILImageResampling`, defaults to `BILINEAR`): interpolation of the (antialiased) resize.
        do_rescale (`bool`, defaults to `True`): multiply pixel values by `rescale_factor`.
        rescale_factor (`float`, defaults to `1 / 255`): maps 0-255 inputs to [0, 1]. Float inputs are scaled too:
            pass `do_rescale=False` for float images already in [0, 1].
        do_normalize (`bool`, defaults to `True`): subtract `image_mean` and divide by `image_std` per channel.
        image_mean / image_std (`float` or 3 floats, default ImageNet's).
        do_pad (`bool`, defaults to `True`): pad (bottom and right, with zeros) to the largest image of the batch, or
            to `pad_size`, and return `pixel_mask`.
        pad_size (`dict[str, int]`, *optional*): `{"height", "width"}` to pad to instead of the batch's largest size.
        do_convert_annotations (`bool`, defaults to `True`): labels get normalized (cx, cy, w, h) boxes; with `False`
            they keep absolute (x0, y0, x1, y1) pixel boxes of the resized image.
        keep_crowd (`bool`, defaults to `False`): keep `iscrowd=1` objects in the labels (DETR drops them).

    Call with `images` (a PIL image, a numpy array or torch tensor of shape (H, W), (H, W, C) or (C, H, W) with C in
    1, 3, 4, uint8 or float, a file path or URL, a list of those, or a 4-D batch (N, C, H, W) / (N, H, W, C)) and
    optionally `annotations` (one COCO detection dict per image: `{"image_id": int, "annotations": [{"bbox": [x, y,
    w, h], "category_id": int, "area": float, "iscrowd": 0 or 1}, ...]}`; `area` defaults to w * h and `iscrowd` to 0).
    Images are converted to RGB (transparency composited onto white) and PIL images are turned upright by their EXIF
    orientation; annotations refer to the upright image. A layout that is both (C, H, W) and (H, W, C) is read as
    (C, H, W) for tensors and (H, W, C) for numpy arrays unless `input_data_format` says otherwise.

    Returns a `BatchFeature` with
        - `pixel_values`: float32 `[batch, 3, height, width]` (a list of `[3, h, w]` when images of different sizes
          are not padded and `return_tensors=None`);
        - `pixel_mask` (when padding): int64 `[batch, height, width]`, 1 on image pixels, 0 on padding;
        - `labels` (with annotations): one dict per image of `class_labels` int64 `[n]`, `boxes` float32 `[n, 4]`,
          `area` float32 `[n]` (in resized pixels), `iscrowd` int64 `[n]`, `image_id` int64 `[1]`, `orig_size` and
          `size` int64 `[2]` (height, width of the upright input and of the resized image before padding).
          Boxes are clipped to the image; objects left with no area are dropped.
    """

    valid_kwargs = HfDetrImageProcessorKwargs
    model_input_names = ["pixel_values", "pixel_mask"]
    do_resize = True
    size = {"shortest_edge": 800, "longest_edge": 1333}
    default_to_square = False
    resample = PILImageResampling.BILINEAR
    do_rescale = True
    do_normalize = True
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    do_pad = True
    do_convert_annotations = True
    keep_crowd = False

    @classmethod
    def from_dict(cls, image_processor_dict: dict[str, Any], **kwargs: Any) -> Any:
        """transformers' `from_dict` (which `from_pretrained` calls), which also takes the settings of a transformers
        `DetrImageProcessor` (its `preprocessor_config.json`, also the old `DetrFeatureExtractor`'s) and keeps how
        they preprocess: size, resize, rescale, normalization, padding. `format` must be `"coco_detection"`."""
        return super().from_dict(image_processor_dict_from_transformers(image_processor_dict), **kwargs)

    def _standardize_kwargs(self, size: Any = None, pad_size: Any = None, **kwargs: Any) -> dict:
        size = _size_dict(size, "size", _SIZE_FORMS)
        pad_size = _size_dict(pad_size, "pad_size", _SIZE_FORMS[1:2])
        return super()._standardize_kwargs(size=size, pad_size=pad_size, **kwargs)

    def preprocess(
        self,
        images: Any,
        annotations: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Process `images` and their COCO `annotations`; any option of the class can be overridden per call."""
        return super().preprocess(images, annotations, **kwargs)

    def _preprocess_image_like_inputs(
        self,
        images: Any,
        annotations: Any,
        *,
        do_rescale: bool,
        rescale_factor: float,
        input_data_format: str | ChannelDimension | None,
        device: str | torch.device | None,
        **kwargs: Any,
    ) -> BatchFeature:
        white = 1.0 / rescale_factor if do_rescale else 1.0
        loaded = [_to_rgb_tensor(image, where, input_data_format, white) for image, where in _image_list(images)]
        if device is not None:
            loaded = [image.to(device) for image in loaded]
        return self._preprocess(
            loaded,
            _coco_targets(annotations, len(loaded)),
            do_rescale=do_rescale,
            rescale_factor=rescale_factor,
            **kwargs,
        )

    def _preprocess(
        self,
        images: list[torch.Tensor],
        targets: list[dict[str, torch.Tensor]] | None,
        *,
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | int | tvF.InterpolationMode | None,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | tuple[float, ...],
        image_std: float | tuple[float, ...],
        do_pad: bool,
        pad_size: SizeDict | None,
        do_convert_annotations: bool,
        keep_crowd: bool,
        return_tensors: str | None,
        **kwargs: Any,
    ) -> BatchFeature:
        """`images`: uint8 or float32 `[3, h, w]` tensors; `targets`: from `_coco_targets`, in original pixels."""
        orig_sizes = [tuple(image.shape[-2:]) for image in images]
        sizes = [_resized_size(orig, size) for orig in orig_sizes] if do_resize else orig_sizes
        canvas = _canvas_size(sizes, pad_size, do_pad, return_tensors)
        scale, bias = _affine(do_rescale, rescale_factor, do_normalize, image_mean, image_std, images[0].device)
        interpolation = _interpolation(resample)

        device = images[0].device
        pixels = []
        out = None if canvas is None else torch.empty(len(images), 3, *canvas, device=device)
        for i, (image, (height, width)) in enumerate(zip(images, sizes)):
            if (height, width) != tuple(image.shape[-2:]):
                image = tvF.resize(image, [height, width], interpolation=interpolation, antialias=True)
            region = torch.empty(3, height, width, device=device) if out is None else out[i, :, :height, :width]
            region.copy_(image)  # the float32 conversion, written in place
            if scale is not None:
                region.mul_(scale)
            if bias is not None:
                region.add_(bias)
            if out is None:
                pixels.append(region)
            else:
                out[i, :, height:] = 0
                out[i, :, :height, width:] = 0
        data: dict[str, Any] = {"pixel_values": pixels if out is None else out}
        if do_pad:
            mask = torch.zeros(len(images), *canvas, dtype=torch.int64, device=device)
            for i, (height, width) in enumerate(sizes):
                mask[i, :height, :width] = 1
            data["pixel_mask"] = mask

        encoded = BatchFeature(data, tensor_type=return_tensors)
        if targets is not None:
            encoded["labels"] = [
                BatchFeature(
                    _labels(target, orig, resized, do_convert_annotations, keep_crowd, device),
                    tensor_type=return_tensors,
                )
                for target, orig, resized in zip(targets, orig_sizes, sizes)
            ]
        return encoded

    def post_process_object_detection(
        self,
        outputs: Any,
        threshold: float = 0.5,
        target_sizes: torch.Tensor | Sequence[Sequence[int]] | None = None,
        top_k: int | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Turn DETR outputs into detections.

        Args:
            outputs: any object with `logits` `[batch, queries, num_labels + 1]` (the last class is "no object") and
                `pred_boxes` `[batch, queries, 4]` (normalized center_x, center_y, width, height).
            threshold: keep detections whose score (softmax probability of the best real class) is >= `threshold`
                (transformers keeps scores > `threshold`; the two differ only on exact ties).
            target_sizes: `[batch, 2]` (height, width) per image, usually each image's original size; boxes are then
                absolute pixels of that size, otherwise they stay relative to [0, 1].
            top_k: keep at most this many detections per image, highest scores first. Without it detections keep
                the query order (as in transformers).

        Returns:
            One dict per image: `scores` `[n]`, `labels` `[n]` (int64) and `boxes` `[n, 4]` (x0, y0, x1, y1).
        """
        logits, pred_boxes = _detection_outputs(outputs)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"`top_k` must be a positive int or None, got {top_k!r}.")
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
        if target_sizes is not None:
            boxes = denormalize_boxes(pred_boxes, "xyxy", _target_sizes(target_sizes, len(logits)))
        else:
            boxes = box_convert(pred_boxes, "cxcywh", "xyxy")

        results = []
        for image_scores, image_labels, image_boxes in zip(scores, labels, boxes):
            keep = (image_scores >= threshold).nonzero()[:, 0]
            if top_k is not None:
                keep = keep[image_scores[keep].argsort(descending=True, stable=True)[:top_k]]
            results.append({"scores": image_scores[keep], "labels": image_labels[keep], "boxes": image_boxes[keep]})
        return results


def _size_dict(size: Any, name: str, forms: Sequence[set[str]]) -> dict[str, int] | None:
    """Check that `size` is one of `forms` with positive int values; `SizeDict`s become plain dicts."""
    if size is None:
        return None
    if isinstance(size, SizeDict):
        size = {key: value for key, value in dict(size).items() if value is not None}
    allowed = " or ".join(str(sorted(form)) for form in forms)
    if not isinstance(size, Mapping) or set(size) not in forms:
        raise ValueError(f"`{name}` must be a dict with the keys {allowed}, got {size!r}.")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size.values()):
        raise ValueError(f"`{name}` values must be positive ints, got {dict(size)!r}.")
    return dict(size)


def _image_list(images: Any) -> list[tuple[Any, str]]:
    """Split `images` into single images, each with the name used in error messages (`images[i]`)."""
    if _is_array(images) and images.ndim == 4:
        if not any(_channel_axes(tuple(images.shape[1:]))):
            raise ValueError(
                f"`images` is a 4-D array of shape {tuple(images.shape)}, which is not a batch of images: a 4-D input "
                f"must be (batch, C, H, W) or (batch, H, W, C) with C in {_CHANNEL_COUNTS}."
            )
        return [(image, f"images[{i}]") for i, image in enumerate(images)]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("`images` is empty; pass at least one image.")
        for i, image in enumerate(images):
            if isinstance(image, (list, tuple)):
                raise TypeError(f"images[{i}] is a {type(image).__name__}; pass a flat list of images.")
            if _is_array(image) and image.ndim == 4:
                raise ValueError(
                    f"images[{i}] has 4 dimensions {tuple(image.shape)}; pass a list of single images or one 4-D batch."
                )
        return [(image, f"images[{i}]") for i, image in enumerate(images)]
    return [(images, "images[0]")]


def _is_array(x: Any) -> bool:
    return isinstance(x, (np.ndarray, torch.Tensor))


def _channel_axes(shape: tuple[int, ...]) -> tuple[bool, bool]:
    """Whether the first / last axis of a 3-D image shape can be its channels."""
    return shape[0] in _CHANNEL_COUNTS, shape[-1] in _CHANNEL_COUNTS


def _to_rgb_tensor(
    image: Any, where: str, input_data_format: str | ChannelDimension | None, white: float
) -> torch.Tensor:
    """One input image as a `[3, h, w]` uint8 or float32 tensor (a view of the input when possible).

    `white` is the value of a full-intensity float pixel, used to composite transparent arrays onto white.
    """
    if isinstance(image, (str, os.PathLike)):
        image = _open(image, where)
    if isinstance(image, PIL.Image.Image):
        return _pil_to_tensor(image, where)
    if not _is_array(image):
        raise TypeError(
            f"{where} is a {type(image).__name__}; expected a PIL image, a numpy array, a torch tensor or a file path."
        )
    tensor = torch.from_numpy(image) if isinstance(image, np.ndarray) else image
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{where} has dtype {tensor.dtype}; pass uint8 (0-255) or float pixel values.")
    if tensor.ndim == 2:
        tensor = tensor[None]
    elif tensor.ndim == 3:
        channels_last = _is_channels_last(tensor.shape, isinstance(image, np.ndarray), where, input_data_format)
        tensor = tensor.movedim(-1, 0) if channels_last else tensor
    else:
        raise ValueError(f"{where} has shape {tuple(tensor.shape)}; an image must be (H, W), (H, W, C) or (C, H, W).")
    _check_not_empty(tuple(tensor.shape[-2:]), where)
    if tensor.dtype != torch.uint8:
        tensor = tensor.to(torch.float32)
    if tensor.shape[0] == 1:
        return tensor.expand(3, -1, -1)
    if tensor.shape[0] == 4:
        return _composite_on_white(tensor, 255.0 if tensor.dtype == torch.uint8 else white)
    return tensor


def _open(path: str | os.PathLike, where: str) -> PIL.Image.Image:
    path = os.fspath(path)
    try:
        if path.startswith(("http://", "https://")):
            return load_image(path)
        image = PIL.Image.open(path)
        image.load()  # decode now, so that a truncated file fails here, with its path
        return image
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"{where}: cannot read the image file {path!r}: {error}") from error


def _pil_to_tensor(image: PIL.Image.Image, where: str) -> torch.Tensor:
    image = upright_rgb(image)
    _check_not_empty((image.height, image.width), where)
    # HWC memory viewed as CHW: torchvision's uint8 resize is fastest on this channels-last layout
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


_EXIF_ORIENTATION = 0x0112
# 16-bit and 32-bit integer modes: scaled from 0..65535 to 0..255 (PIL's own convert clips them at 255 instead)
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def upright_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """``image`` as an upright 8-bit RGB image, the form every image takes, in training, evaluation and inference.

    EXIF orientation is applied (``PIL.ImageOps.exif_transpose``: boxes are given in the upright frame, which is what
    annotation tools show and ``datasets.Image`` decodes); grayscale (``"L"``, ``"1"``), palette (``"P"``), CMYK and
    other modes are converted; transparency (``"RGBA"``, ``"LA"``, ``"PA"``, a palette or grayscale ``transparency``)
    is composited onto white; 16-bit and 32-bit integer grayscale (``"I;16"``, ``"I"``) is taken as 0..65535 and
    scaled to 0..255 (PIL's ``convert`` would clip every value above 255 to white). An upright RGB image is returned
    as it is, anything else as a new image.
    """
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:  # exif_transpose always copies, so check first
        image = PIL.ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_INTEGER_MODES:
        values = np.asarray(image).astype(np.int64)
        image = PIL.Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8))  # 2-D uint8: mode "L"
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB")


def _is_channels_last(
    shape: torch.Size, is_numpy: bool, where: str, input_data_format: str | ChannelDimension | None
) -> bool:
    if input_data_format is not None:
        channels_last = ChannelDimension(input_data_format) == ChannelDimension.LAST
        channels = shape[-1] if channels_last else shape[0]
        if channels not in _CHANNEL_COUNTS:
            raise ValueError(
                f"{where} has shape {tuple(shape)}: with input_data_format={ChannelDimension(input_data_format).value} "
                f"its channel axis has size {channels}, expected one of {_CHANNEL_COUNTS}."
            )
        return channels_last
    first, last = _channel_axes(tuple(shape))
    if not (first or last):
        raise ValueError(
            f"{where} has shape {tuple(shape)}: neither its first nor its last axis has {_CHANNEL_COUNTS} channels."
        )
    return last and (not first or is_numpy)


def _check_not_empty(height_width: tuple[int, int], where: str) -> None:
    if min(height_width) < 1:
        raise ValueError(f"{where} is empty: height x width = {height_width[0]} x {height_width[1]}.")


def _composite_on_white(rgba: torch.Tensor, white: float) -> torch.Tensor:
    """`[4, h, w]` RGBA composited onto a white background; uint8 stays uint8 (rounded)."""
    pixels = rgba.to(torch.float32)
    alpha = pixels[3:] / white
    rgb = pixels[:3] * alpha + white * (1.0 - alpha)
    return rgb.round_().to(torch.uint8) if rgba.dtype == torch.uint8 else rgb


def _resized_size(height_width: tuple[int, int], size: SizeDict) -> tuple[int, int]:
    """The (height, width) an image of `height_width` is resized to: transformers' arithmetic, so sizes agree."""
    if size.shortest_edge is not None:
        new = get_size_with_aspect_ratio(height_width, size.shortest_edge, size.longest_edge)
    elif size.max_height is not None:
        new = get_image_size_for_max_height_width(height_width, size.max_height, size.max_width)
    else:
        new = (size.height, size.width)
    return max(int(new[0]), 1), max(int(new[1]), 1)  # an extreme aspect ratio must not round a side to 0


def _canvas_size(
    sizes: list[tuple[int, int]], pad_size: SizeDict | None, do_pad: bool, return_tensors: str | None
) -> tuple[int, int] | None:
    """The (height, width) of the output batch, or None for a list of differently sized images."""
    if do_pad and pad_size is not None:
        for i, (height, width) in enumerate(sizes):
            if height > pad_size.height or width > pad_size.width:
                raise ValueError(
                    f"images[{i}] is {height} x {width} after resizing, larger than pad_size "
                    f"{pad_size.height} x {pad_size.width}; raise pad_size or resize to a smaller size."
                )
        return pad_size.height, pad_size.width
    if do_pad or len(set(sizes)) == 1:
        return max(h for h, _ in sizes), max(w for _, w in sizes)
    if return_tensors is not None:
        raise ValueError(
            f"The images have different sizes after resizing ({sorted(set(sizes))}) and do_pad=False, so they cannot "
            f"be stacked into one tensor (return_tensors={return_tensors!r}): set do_pad=True, or resize to a fixed "
            'size={"height": ..., "width": ...}, or pass return_tensors=None to get a list.'
        )
    return None


def _affine(
    do_rescale: bool,
    rescale_factor: float,
    do_normalize: bool,
    mean: float | Sequence[float],
    std: float | Sequence[float],
    device: torch.device,
) -> tuple[float | torch.Tensor | None, torch.Tensor | None]:
    """Rescaling and normalization as one `x * scale + bias`, per channel (`[3, 1, 1]`); None where it is a no-op."""
    factor = rescale_factor if do_rescale else 1.0
    if not do_normalize:
        return (factor if do_rescale else None), None
    mean_t, std_t = (torch.as_tensor(v, dtype=torch.float64).reshape(-1, 1, 1) for v in (mean, std))
    if mean_t.shape[0] not in (1, 3) or std_t.shape[0] not in (1, 3):
        raise ValueError(f"image_mean and image_std must be one float or 3 floats, got {mean!r} and {std!r}.")
    scale, bias = (factor / std_t).expand(3, 1, 1), (-mean_t / std_t).expand(3, 1, 1)
    return scale.to(device, torch.float32), bias.to(device, torch.float32)


def _interpolation(resample: Any) -> tvF.InterpolationMode:
    if isinstance(resample, tvF.InterpolationMode):
        return resample
    if resample is None:
        return tvF.InterpolationMode.BILINEAR
    try:
        return pil_torch_interpolation_mapping[PILImageResampling(resample)]
    except (ValueError, KeyError):
        raise ValueError(f"`resample` must be a PILImageResampling filter (2: BILINEAR), got {resample!r}.") from None


def _coco_targets(annotations: Any, num_images: int) -> list[dict[str, torch.Tensor]] | None:
    """Validate COCO detection annotations; per image: `image_id` `[1]`, unclipped (x0, y0, x1, y1) `boxes` `[n, 4]`
    (float64, original pixels), `class_labels`, `area` and `iscrowd` `[n]`."""
    if annotations is None:
        return None
    if isinstance(annotations, Mapping):
        annotations = [annotations]
    if not isinstance(annotations, (list, tuple)):
        raise TypeError(
            f"`annotations` must be a dict or a list of dicts (one per image), got {type(annotations).__name__}."
        )
    if len(annotations) != num_images:
        raise ValueError(
            f"Got {len(annotations)} annotations for {num_images} images; pass exactly one annotation dict per image, "
            "in the same order."
        )
    return [_coco_target(annotation, f"annotations[{i}]") for i, annotation in enumerate(annotations)]


def _coco_target(annotation: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(annotation, Mapping) or "image_id" not in annotation or "annotations" not in annotation:
        raise ValueError(
            f'{where} must be a COCO detection dict {{"image_id": int, "annotations": [...]}}, got {annotation!r:.200}.'
        )
    image_id = _integer(annotation["image_id"], f'{where}["image_id"]')
    objects = annotation["annotations"]
    if not isinstance(objects, (list, tuple)):
        raise ValueError(f'{where}["annotations"] must be a list of object dicts, got {type(objects).__name__}.')
    labels, crowd = [], []
    for j, obj in enumerate(objects):
        name = f'{where}["annotations"][{j}]'
        missing = [key for key in ("bbox", "category_id") if not isinstance(obj, Mapping) or key not in obj]
        if missing:
            raise ValueError(
                f"{name} has no {' or '.join(map(repr, missing))}: every object needs \"bbox\": [x, y, width, height] "
                'in pixels and an integer "category_id".'
            )
        labels.append(_integer(obj["category_id"], f'{name}["category_id"]'))
        crowd.append(_integer(obj.get("iscrowd", 0), f'{name}["iscrowd"]'))
    boxes = check_boxes([obj["bbox"] for obj in objects], lambda j: f'{where}["annotations"][{j}]["bbox"]', "xywh")
    areas = [float(obj.get("area", w * h)) for obj, (_, _, w, h) in zip(objects, boxes.tolist())]
    return {
        "image_id": torch.tensor([image_id], dtype=torch.int64),
        "boxes": box_convert(boxes, "xywh", "xyxy"),
        "class_labels": torch.tensor(labels, dtype=torch.int64),
        "area": torch.tensor(areas, dtype=torch.float64),
        "iscrowd": torch.tensor(crowd, dtype=torch.int64),
    }


def _integer(value: Any, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {value!r}.") from None


def _labels(
    target: dict[str, torch.Tensor],
    orig_size: tuple[int, int],
    size: tuple[int, int],
    do_convert_annotations: bool,
    keep_crowd: bool,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Model labels of one image from its COCO target, boxes clipped to the image and empty or crowd ones dropped."""
    orig_h, orig_w = orig_size
    height, width = size
    boxes = target["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, orig_w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, orig_h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if not keep_crowd:
        keep &= target["iscrowd"] == 0
    boxes = boxes[keep]
    if do_convert_annotations:
        # Normalized to the resized image before padding, which is the original image's frame scaled.
        boxes = normalize_boxes(boxes, "xyxy", (orig_h, orig_w))
    else:
        boxes = boxes * torch.tensor([width / orig_w, height / orig_h] * 2, dtype=torch.float64)
    labels = {
        "size": torch.tensor([height, width]),
        "image_id": target["image_id"],
        "class_labels": target["class_labels"][keep],
        "boxes": boxes.to(torch.float32),
        "area": (target["area"][keep] * (height * width / (orig_h * orig_w))).to(torch.float32),
        "iscrowd": target["iscrowd"][keep],
        "orig_size": torch.tensor([orig_h, orig_w]),
    }
    return {key: value.to(device) for key, value in labels.items()}


def _detection_outputs(outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    missing = [name for name in ("logits", "pred_boxes") if getattr(outputs, name, None) is None]
    if missing:
        raise TypeError(
            f"post_process_object_detection needs model outputs with `logits` and `pred_boxes`; "
            f"{type(outputs).__name__} has no {' or '.join(f'`{m}`' for m in missing)}."
        )
    logits, boxes = torch.as_tensor(outputs.logits), torch.as_tensor(outputs.pred_boxes)
    if logits.ndim != 3 or logits.shape[-1] < 2 or boxes.shape != (*logits.shape[:2], 4):
        raise ValueError(
            "Expected `logits` [batch, queries, num_labels + 1] and `pred_boxes` [batch, queries, 4], got shapes "
            f"{tuple(logits.shape)} and {tuple(boxes.shape)}."
        )
    return logits, boxes


def _target_sizes(target_sizes: Any, batch: int) -> torch.Tensor:
    sizes = torch.as_tensor(
        [[float(v) for v in pair] for pair in target_sizes] if not _is_array(target_sizes) else target_sizes
    )
    if sizes.shape != (batch, 2):
        raise ValueError(
            f"`target_sizes` must hold one (height, width) per image, shape ({batch}, 2); got {tuple(sizes.shape)}."
        )
    return sizes


def _register_with_object_detection_pipeline() -> None:
    """Let `pipeline("object-detection")` accept HfDetrForObjectDetection without logging "not supported".

    The pipeline checks the model's class name against a copy of transformers' built-in name table, a copy that loses
    the models added with `AutoModelForObjectDetection.register`. The table is the `_model_mapping` of the public
    `MODEL_FOR_OBJECT_DETECTION_MAPPING`; the entry is added here because every pipeline loads this module, also when
    the code comes from a saved folder with `trust_remote_code`.
    """
    names = getattr(MODEL_FOR_OBJECT_DETECTION_MAPPING, "_model_mapping", None)
    if isinstance(names, dict):
        names.setdefault("hf_detr", "HfDetrForObjectDetection")


_register_with_object_detection_pipeline()

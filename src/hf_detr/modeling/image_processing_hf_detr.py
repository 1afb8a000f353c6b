"""HfDetrImageProcessor: images and COCO detection or panoptic annotations in (with object masks on request), DETR
inputs and labels out; model outputs back to boxes in pixels and to segmentation maps.

This module imports nothing from the package but its siblings `boxes`, `segmentation_postprocessing` and
`transformers_detr` (which reads a transformers `DetrImageProcessor` config), so a saved folder can load it with
`trust_remote_code`.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from torchvision.ops import box_convert, masks_to_boxes
from torchvision.transforms.v2 import functional as tvF
from transformers import MODEL_FOR_IMAGE_SEGMENTATION_MAPPING, MODEL_FOR_OBJECT_DETECTION_MAPPING
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_processing_utils import BatchFeature
from transformers.image_transforms import get_size_with_aspect_ratio
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    AnnotationFormat,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
    get_image_size_for_max_height_width,
    load_image,
    pil_torch_interpolation_mapping,
)

from .boxes import check_boxes, denormalize_boxes, normalize_boxes
from .errors import HfDetrInputError, HfDetrInputTypeError
from .segmentation_postprocessing import (
    instance_segmentation,
    panoptic_segmentation,
    query_masks,
    semantic_segmentation,
)
from .transformers_detr import image_processor_dict_from_transformers

__all__ = ["HfDetrImageProcessor", "upright_rgb"]

_SIZE_FORMS = ({"shortest_edge", "longest_edge"}, {"height", "width"}, {"max_height", "max_width"})
_CHANNEL_COUNTS = (1, 3, 4)
_FORMATS = ("coco_detection", "coco_panoptic")
# how far (pixels) a polygon point may lie outside its image: annotation tools put border points on the pixel edge
# at x = width, and some a fraction beyond
_POLYGON_TOLERANCE = 1.0


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
    format: str | AnnotationFormat | None
    return_segmentation_masks: bool | None
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
        keep_crowd (`bool`, defaults to `False`): keep `iscrowd=1` objects in the labels (DETR drops them for
            detection; for panoptic training DETR and transformers keep crowd segments: pass `True` to match them).
        format (`str`, defaults to `"coco_detection"`): the annotations' format, `"coco_detection"` or
            `"coco_panoptic"` (see below).
        return_segmentation_masks (`bool`, *optional*): add each object's mask to its labels; by default only for
            `"coco_panoptic"`, as in transformers.

    Call with `images` (a PIL image, a numpy array or torch tensor of shape (H, W), (H, W, C) or (C, H, W) with C in
    1, 3, 4, uint8 or float, a file path or URL, a list of those, or a 4-D batch (N, C, H, W) / (N, H, W, C)) and
    optionally `annotations`, one dict per image, in transformers' `DetrImageProcessor` formats:
        - `"coco_detection"`: `{"image_id": int, "annotations": [{"bbox": [x, y, w, h], "category_id": int, "area":
          float, "iscrowd": 0 or 1, "segmentation": ...}, ...]}`; `area` defaults to w * h and `iscrowd` to 0.
          `segmentation` (read with `return_segmentation_masks=True`) is COCO's: polygons `[[x1, y1, x2, y2, ...],
          ...]` in pixels (points at most 1 pixel outside the image; polygons of fewer than 3 points enclose nothing
          and are ignored), or an RLE `{"size": [height, width], "counts": [int, ...] or str}` (uncompressed or
          compressed) of the image's size.
        - `"coco_panoptic"`: `{"image_id": int, "segments_info": [{"id": int, "category_id": int, "iscrowd": 0 or 1,
          "area": float}, ...], "file_name": str}` with the PNG at `masks_path / file_name` (as in transformers), or
          the PNG itself as `"panoptic_png"` (a path, a PIL image or `[H, W, 3]` uint8 RGB pixels); the segment id
          of a pixel is R + 256 G + 256^2 B, 0 is unlabeled. Every other id of the PNG must be listed in
          `segments_info` (an error otherwise); a listed segment without pixels in the PNG gets an empty box and is
          dropped like any object without area. Boxes come from the masks (`torchvision.ops.masks_to_boxes`, the
          last pixel's index as the maximum, as transformers does); `bbox` is not read; `area` defaults to the
          segment's pixel count.
    Images are converted to RGB (transparency composited onto white) and PIL images are turned upright by their EXIF
    orientation; annotations refer to the upright image. A layout that is both (C, H, W) and (H, W, C) is read as
    (C, H, W) for tensors and (H, W, C) for numpy arrays unless `input_data_format` says otherwise.

    Returns a `BatchFeature` with
        - `pixel_values`: float32 `[batch, 3, height, width]` (a list of `[3, h, w]` when images of different sizes
          are not padded and `return_tensors=None`);
        - `pixel_mask` (when padding): int64 `[batch, height, width]`, 1 on image pixels, 0 on padding;
        - `labels` (with annotations): one dict per image of `class_labels` int64 `[n]`, `boxes` float32 `[n, 4]`,
          `area` float32 `[n]` (in resized pixels), `iscrowd` int64 `[n]`, `image_id` int64 `[1]`, `orig_size` and
          `size` int64 `[2]` (height, width of the upright input and of the resized image before padding);
          with masks also `masks` float32 `[n, height, width]` (0 or 1) at the size of `pixel_values` (resized with
          nearest-exact as transformers does, zero on padding), one per box. Boxes are clipped to the image; objects
          left with no area are dropped, with their masks.
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
    format = "coco_detection"
    return_segmentation_masks = None

    @classmethod
    def from_dict(cls, image_processor_dict: dict[str, Any], **kwargs: Any) -> Any:
        """transformers' `from_dict` (which `from_pretrained` calls), which also takes the settings of a transformers
        `DetrImageProcessor` (its `preprocessor_config.json`, also the old `DetrFeatureExtractor`'s) and keeps how
        they preprocess: size, resize, rescale, normalization, padding. `format` must be `"coco_detection"`."""
        return super().from_dict(image_processor_dict_from_transformers(image_processor_dict), **kwargs)

    def _standardize_kwargs(self, size: Any = None, pad_size: Any = None, format: Any = None, **kwargs: Any) -> dict:
        size = _size_dict(size, "size", _SIZE_FORMS)
        pad_size = _size_dict(pad_size, "pad_size", _SIZE_FORMS[1:2])
        format = getattr(format, "value", format)  # an AnnotationFormat, as transformers takes it
        if format is not None and format not in _FORMATS:
            raise HfDetrInputError(f"`format` must be one of {_FORMATS}, got {format!r}.")
        return super()._standardize_kwargs(size=size, pad_size=pad_size, format=format, **kwargs)

    def preprocess(
        self,
        images: Any,
        annotations: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        masks_path: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Process `images` and their COCO `annotations`; any option of the class can be overridden per call.
        `masks_path`: the folder of the panoptic PNGs that `"file_name"` names (`format="coco_panoptic"`)."""
        if masks_path is not None and not isinstance(masks_path, (str, os.PathLike)):
            raise HfDetrInputTypeError(
                f"`masks_path` must be a folder path (str or Path), got {type(masks_path).__name__}."
            )
        return super().preprocess(images, annotations, masks_path, **kwargs)

    def _preprocess_image_like_inputs(
        self,
        images: Any,
        annotations: Any,
        masks_path: str | os.PathLike | None,
        *,
        do_rescale: bool,
        rescale_factor: float,
        input_data_format: str | ChannelDimension | None,
        device: str | torch.device | None,
        format: str,
        return_segmentation_masks: bool | None,
        **kwargs: Any,
    ) -> BatchFeature:
        white = 1.0 / rescale_factor if do_rescale else 1.0
        loaded = [_to_rgb_tensor(image, where, input_data_format, white) for image, where in _image_list(images)]
        if device is not None:
            loaded = [image.to(device) for image in loaded]
        if return_segmentation_masks is None:
            return_segmentation_masks = format == "coco_panoptic"
        image_sizes = [tuple(image.shape[-2:]) for image in loaded]
        return self._preprocess(
            loaded,
            _coco_targets(annotations, image_sizes, format, return_segmentation_masks, masks_path),
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
                    _labels(target, orig, resized, canvas or resized, do_convert_annotations, keep_crowd, device),
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
        return_masks: bool = False,
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
            return_masks: also return each detection's mask, from a segmentation model's `pred_masks` `[batch,
                queries, h, w]` (bool, at the target size; a pixel is in where the mask's probability exceeds 0.5).
                The masks span the whole padded input: post-process an unpadded batch (or each image's own region)
                so that they cover the image the boxes refer to.

        Returns:
            One dict per image: `scores` `[n]`, `labels` `[n]` (int64) and `boxes` `[n, 4]` (x0, y0, x1, y1); with
            `return_masks`, `masks` `[n, height, width]`.
        """
        logits, pred_boxes = _detection_outputs(outputs)
        mask_logits = None
        if return_masks:
            (mask_logits,) = _output_tensors(outputs, ("pred_masks",), "return_masks=True needs segmentation outputs")
            if mask_logits.ndim != 4 or mask_logits.shape[:2] != logits.shape[:2]:
                raise HfDetrInputError(
                    f"Expected `pred_masks` [batch, queries, height, width] for `logits` "
                    f"{tuple(logits.shape)}, got {tuple(mask_logits.shape)}."
                )
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise HfDetrInputError(f"`top_k` must be a positive int or None, got {top_k!r}.")
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
        sizes = None if target_sizes is None else _target_sizes(target_sizes, len(logits))
        if sizes is not None:
            boxes = denormalize_boxes(pred_boxes, "xyxy", sizes)
        else:
            boxes = box_convert(pred_boxes, "cxcywh", "xyxy")

        results = []
        for i, (image_scores, image_labels, image_boxes) in enumerate(zip(scores, labels, boxes)):
            keep = (image_scores >= threshold).nonzero()[:, 0]
            if top_k is not None:
                keep = keep[image_scores[keep].argsort(descending=True, stable=True)[:top_k]]
            results.append({"scores": image_scores[keep], "labels": image_labels[keep], "boxes": image_boxes[keep]})
            if mask_logits is not None:
                size = mask_logits.shape[-2:] if sizes is None else sizes[i]
                results[-1]["masks"] = query_masks(mask_logits[i, keep].float(), tuple(int(v) for v in size))
        return results

    def post_process_semantic_segmentation(
        self,
        outputs: Any,
        target_sizes: torch.Tensor | Sequence[Sequence[int]] | None = None,
        return_segmentation_scores: bool = False,
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        """Turn segmentation outputs into one class map per image, as transformers' `DetrImageProcessor` does.

        Args:
            outputs: any object with `logits` `[batch, queries, num_labels + 1]` and `pred_masks` `[batch, queries,
                h, w]` (mask logits).
            target_sizes: `[batch, 2]` (height, width) to resize each map to, or None to keep `(h, w)`.
            return_segmentation_scores: return `SemanticSegmentationPostProcessorOutput`s with the
                `[num_labels, height, width]` class scores too.

        Returns:
            Per image an int64 `[height, width]` map of label ids (pixels no query covers get the label with the
            highest score all the same).

        The masks cover the whole padded input, as in transformers: with `target_sizes`, an image padded in its
        batch is resized together with its padding (crop `pred_masks` to the image first, or predict it alone).
        """
        logits, mask_logits = _segmentation_outputs(outputs, "post_process_semantic_segmentation")
        return semantic_segmentation(
            logits, mask_logits, _segmentation_sizes(target_sizes, len(logits)), return_segmentation_scores
        )

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        target_sizes: torch.Tensor | Sequence[Sequence[int]] | None = None,
        return_coco_annotation: bool = False,
    ) -> list[dict[str, Any]]:
        """Turn segmentation outputs into non-overlapping instances, as transformers' `DetrImageProcessor` does
        (see `post_process_panoptic_segmentation`: the same without fusing).

        Args:
            return_coco_annotation: give `segmentation` as one COCO RLE dict (`{"size", "counts": str}`, readable by
                `pycocotools.mask.decode`) per entry of `segments_info`; transformers' option of this name gives
                row-major runs that pycocotools cannot read.

        Returns:
            Per image `{"segmentation": int32 [height, width] segment ids (or the RLEs), "segments_info": [{"id",
            "label_id", "was_fused": False, "score"}]}`.
        """
        logits, mask_logits = _segmentation_outputs(outputs, "post_process_instance_segmentation")
        _check_thresholds(threshold, mask_threshold, overlap_mask_area_threshold)
        return instance_segmentation(
            logits,
            mask_logits,
            threshold,
            mask_threshold,
            overlap_mask_area_threshold,
            _segmentation_sizes(target_sizes, len(logits)),
            return_coco_annotation,
        )

    def post_process_panoptic_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: Collection[int] | None = None,
        target_sizes: torch.Tensor | Sequence[Sequence[int]] | None = None,
    ) -> list[dict[str, Any]]:
        """Turn segmentation outputs into panoptic maps, as transformers' `DetrImageProcessor` does, except that
        a segment id is never given twice (transformers can reuse one after a fused class reappears).

        Args:
            outputs: any object with `logits` `[batch, queries, num_labels + 1]` and `pred_masks` `[batch, queries,
                h, w]` (mask logits).
            threshold: keep queries whose best class, "no object" included, is a real class with probability >
                `threshold`.
            mask_threshold: a kept query's pixels count as its mask where its probability times its score is >=
                `mask_threshold`.
            overlap_mask_area_threshold: a query is a segment only when the pixels it wins are more than this
                fraction of its mask.
            label_ids_to_fuse: labels whose queries merge into one segment per image ("stuff" such as sky).
            target_sizes: `[batch, 2]` (height, width) to resize each map to, or None to keep `(h, w)`. The masks
                cover the whole padded input, as in transformers: an image padded in its batch is resized together
                with its padding (crop `pred_masks` to the image first, or predict it alone).

        Returns:
            Per image `{"segmentation": int32 [height, width], "segments_info": [{"id": int, "label_id": int,
            "was_fused": bool, "score": float}]}`: segment ids from 1, 0 where no segment is; a map of -1 and no
            segments when no query passes `threshold` (as in transformers).
        """
        logits, mask_logits = _segmentation_outputs(outputs, "post_process_panoptic_segmentation")
        _check_thresholds(threshold, mask_threshold, overlap_mask_area_threshold)
        if label_ids_to_fuse is not None and (
            isinstance(label_ids_to_fuse, (str, bytes)) or not isinstance(label_ids_to_fuse, Collection)
        ):
            raise HfDetrInputTypeError(
                f"`label_ids_to_fuse` must be a set or list of label ids, got {label_ids_to_fuse!r}."
            )
        return panoptic_segmentation(
            logits,
            mask_logits,
            threshold,
            mask_threshold,
            overlap_mask_area_threshold,
            {_integer(label, "`label_ids_to_fuse` entries") for label in label_ids_to_fuse or ()},
            _segmentation_sizes(target_sizes, len(logits)),
        )


def _size_dict(size: Any, name: str, forms: Sequence[set[str]]) -> dict[str, int] | None:
    """Check that `size` is one of `forms` with positive int values; `SizeDict`s become plain dicts."""
    if size is None:
        return None
    if isinstance(size, SizeDict):
        size = {key: value for key, value in dict(size).items() if value is not None}
    allowed = " or ".join(str(sorted(form)) for form in forms)
    if not isinstance(size, Mapping) or set(size) not in forms:
        raise HfDetrInputError(f"`{name}` must be a dict with the keys {allowed}, got {size!r}.")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size.values()):
        raise HfDetrInputError(f"`{name}` values must be positive ints, got {dict(size)!r}.")
    return dict(size)


def _image_list(images: Any) -> list[tuple[Any, str]]:
    """Split `images` into single images, each with the name used in error messages (`images[i]`)."""
    if _is_array(images) and images.ndim == 4:
        if not any(_channel_axes(tuple(images.shape[1:]))):
            raise HfDetrInputError(
                f"`images` is a 4-D array of shape {tuple(images.shape)}, which is not a batch of images: a 4-D input "
                f"must be (batch, C, H, W) or (batch, H, W, C) with C in {_CHANNEL_COUNTS}."
            )
        return [(image, f"images[{i}]") for i, image in enumerate(images)]
    if isinstance(images, (list, tuple)):
        if not images:
            raise HfDetrInputError("`images` is empty; pass at least one image.")
        for i, image in enumerate(images):
            if isinstance(image, (list, tuple)):
                raise HfDetrInputTypeError(f"images[{i}] is a {type(image).__name__}; pass a flat list of images.")
            if _is_array(image) and image.ndim == 4:
                raise HfDetrInputError(
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
        raise HfDetrInputTypeError(
            f"{where} is a {type(image).__name__}; expected a PIL image, a numpy array, a torch tensor or a file path."
        )
    tensor = torch.from_numpy(image) if isinstance(image, np.ndarray) else image
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise HfDetrInputTypeError(f"{where} has dtype {tensor.dtype}; pass uint8 (0-255) or float pixel values.")
    if tensor.ndim == 2:
        tensor = tensor[None]
    elif tensor.ndim == 3:
        channels_last = _is_channels_last(tensor.shape, isinstance(image, np.ndarray), where, input_data_format)
        tensor = tensor.movedim(-1, 0) if channels_last else tensor
    else:
        raise HfDetrInputError(
            f"{where} has shape {tuple(tensor.shape)}; an image must be (H, W), (H, W, C) or (C, H, W)."
        )
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
        raise HfDetrInputError(f"{where}: cannot read the image file {path!r}: {error}") from error


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
            raise HfDetrInputError(
                f"{where} has shape {tuple(shape)}: with input_data_format={ChannelDimension(input_data_format).value} "
                f"its channel axis has size {channels}, expected one of {_CHANNEL_COUNTS}."
            )
        return channels_last
    first, last = _channel_axes(tuple(shape))
    if not (first or last):
        raise HfDetrInputError(
            f"{where} has shape {tuple(shape)}: neither its first nor its last axis has {_CHANNEL_COUNTS} channels."
        )
    return last and (not first or is_numpy)


def _check_not_empty(height_width: tuple[int, int], where: str) -> None:
    if min(height_width) < 1:
        raise HfDetrInputError(f"{where} is empty: height x width = {height_width[0]} x {height_width[1]}.")


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
                raise HfDetrInputError(
                    f"images[{i}] is {height} x {width} after resizing, larger than pad_size "
                    f"{pad_size.height} x {pad_size.width}; raise pad_size or resize to a smaller size."
                )
        return pad_size.height, pad_size.width
    if do_pad or len(set(sizes)) == 1:
        return max(h for h, _ in sizes), max(w for _, w in sizes)
    if return_tensors is not None:
        raise HfDetrInputError(
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
        raise HfDetrInputError(f"image_mean and image_std must be one float or 3 floats, got {mean!r} and {std!r}.")
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
        raise HfDetrInputError(
            f"`resample` must be a PILImageResampling filter (2: BILINEAR), got {resample!r}."
        ) from None


def _coco_targets(
    annotations: Any,
    image_sizes: list[tuple[int, int]],
    annotation_format: str,
    return_masks: bool,
    masks_path: str | os.PathLike | None,
) -> list[dict[str, torch.Tensor]] | None:
    """Validate COCO annotations; per image: `image_id` `[1]`, unclipped (x0, y0, x1, y1) `boxes` `[n, 4]` (float64,
    original pixels), `class_labels`, `area` and `iscrowd` `[n]`, with `return_masks` bool `masks` `[n, h, w]`."""
    if annotations is None:
        return None
    if isinstance(annotations, Mapping):
        annotations = [annotations]
    if not isinstance(annotations, (list, tuple)):
        raise HfDetrInputTypeError(
            f"`annotations` must be a dict or a list of dicts (one per image), got {type(annotations).__name__}."
        )
    if len(annotations) != len(image_sizes):
        raise HfDetrInputError(
            f"Got {len(annotations)} annotations for {len(image_sizes)} images; pass exactly one annotation dict per "
            "image, in the same order."
        )
    if annotation_format == "coco_panoptic":
        return [
            coco_panoptic_target(annotation, f"annotations[{i}]", size, return_masks, masks_path)
            for i, (annotation, size) in enumerate(zip(annotations, image_sizes))
        ]
    return [
        _coco_target(annotation, f"annotations[{i}]", size, return_masks)
        for i, (annotation, size) in enumerate(zip(annotations, image_sizes))
    ]


def _coco_target(
    annotation: Any, where: str, image_size: tuple[int, int], return_masks: bool
) -> dict[str, torch.Tensor]:
    if not isinstance(annotation, Mapping) or "image_id" not in annotation or "annotations" not in annotation:
        raise HfDetrInputError(
            f'{where} must be a COCO detection dict {{"image_id": int, "annotations": [...]}}, got {annotation!r:.200}.'
        )
    image_id = _integer(annotation["image_id"], f'{where}["image_id"]')
    objects = annotation["annotations"]
    if not isinstance(objects, (list, tuple)):
        raise HfDetrInputError(f'{where}["annotations"] must be a list of object dicts, got {type(objects).__name__}.')
    labels, crowd = [], []
    for j, obj in enumerate(objects):
        name = f'{where}["annotations"][{j}]'
        missing = [key for key in ("bbox", "category_id") if not isinstance(obj, Mapping) or key not in obj]
        if missing:
            raise HfDetrInputError(
                f'{name} has no {" or ".join(map(repr, missing))}: every object needs "bbox": [x, y, width, height] '
                'in pixels and an integer "category_id".'
            )
        labels.append(_integer(obj["category_id"], f'{name}["category_id"]'))
        crowd.append(_integer(obj.get("iscrowd", 0), f'{name}["iscrowd"]'))
    boxes = check_boxes([obj["bbox"] for obj in objects], lambda j: f'{where}["annotations"][{j}]["bbox"]', "xywh")
    areas = [float(obj.get("area", w * h)) for obj, (_, _, w, h) in zip(objects, boxes.tolist())]
    target = {
        "image_id": torch.tensor([image_id], dtype=torch.int64),
        "boxes": box_convert(boxes, "xywh", "xyxy"),
        "class_labels": torch.tensor(labels, dtype=torch.int64),
        "area": torch.tensor(areas, dtype=torch.float64),
        "iscrowd": torch.tensor(crowd, dtype=torch.int64),
    }
    if return_masks:
        masks = [
            object_mask(obj, f'{where}["annotations"][{j}]["segmentation"] (image_id {image_id})', image_size)
            for j, obj in enumerate(objects)
        ]
        target["masks"] = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, *image_size, dtype=torch.bool)
    return target


def object_mask(obj: Mapping[str, Any], name: str, image_size: tuple[int, int]) -> np.ndarray:
    """An object's COCO `segmentation` (polygons or RLE) as a bool `[height, width]` mask of its image."""
    segmentation = obj.get("segmentation")
    if isinstance(segmentation, Mapping):
        return rle_mask(segmentation, name, image_size)
    if isinstance(segmentation, (list, tuple)) and segmentation:
        return _polygon_mask(segmentation, name, image_size)
    what = "is missing" if segmentation is None else f"is {segmentation!r:.80}"
    raise HfDetrInputError(
        f"{name} {what}: with return_segmentation_masks=True every object needs COCO polygons [[x1, y1, x2, y2, ...], "
        '...] or an RLE {"size": [height, width], "counts": ...}.'
    )


def _polygon_mask(polygons: Sequence[Any], name: str, image_size: tuple[int, int]) -> np.ndarray:
    from pycocotools import mask as coco_mask

    kept = _checked_polygons(polygons, name, image_size)
    if not kept:
        return np.zeros(image_size, dtype=bool)
    return coco_mask.decode(coco_mask.frPyObjects(kept, *image_size)).any(axis=2)


def polygon_rle(polygons: Sequence[Any], name: str, image_size: tuple[int, int]) -> dict[str, Any]:
    """COCO polygons as the compressed RLE ``{"size", "counts": str}`` of their union, checked as `object_mask` checks
    them. The union is merged run by run, never drawn: equal to encoding `object_mask`'s pixels, 15x faster."""
    from pycocotools import mask as coco_mask

    kept = _checked_polygons(polygons, name, image_size)
    if not kept:
        rle = coco_mask.encode(np.zeros((*image_size, 1), dtype=np.uint8, order="F"))[0]
    else:
        rles = coco_mask.frPyObjects(kept, *image_size)
        rle = coco_mask.merge(rles) if len(rles) > 1 else rles[0]
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _checked_polygons(polygons: Sequence[Any], name: str, image_size: tuple[int, int]) -> list[list[float]]:
    """The polygons that enclose something, each checked: finite flat x, y pairs inside the image (1 pixel slack)."""
    height, width = image_size
    kept = []
    for p, polygon in enumerate(polygons):
        try:
            points = np.asarray(polygon, dtype=np.float64)
        except (TypeError, ValueError):
            points = np.empty((0, 0))
        if points.ndim != 1 or len(points) % 2 or not np.isfinite(points).all():
            raise HfDetrInputError(
                f"{name}[{p}] = {polygon!r:.80} is not a polygon: a flat list of finite x1, y1, x2, y2, ... in pixels."
            )
        xs, ys = points[0::2], points[1::2]
        outside = (xs < -_POLYGON_TOLERANCE) | (xs > width + _POLYGON_TOLERANCE)
        outside |= (ys < -_POLYGON_TOLERANCE) | (ys > height + _POLYGON_TOLERANCE)
        if outside.any():
            k = int(outside.argmax())
            raise HfDetrInputError(
                f"{name}[{p}] has the point (x, y) = ({xs[k]:g}, {ys[k]:g}), more than {_POLYGON_TOLERANCE:g} pixel "
                f"outside its {width} x {height} (width x height) image: is the polygon in another image's pixels?"
            )
        if len(points) >= 6:  # fewer than 3 points enclose nothing (and pycocotools would read 4 numbers as a box)
            kept.append(points.tolist())
    return kept


def rle_mask(rle: Mapping[str, Any], name: str, image_size: tuple[int, int]) -> np.ndarray:
    from pycocotools import mask as coco_mask

    height, width = image_size
    if "size" not in rle or "counts" not in rle:
        raise HfDetrInputError(
            f'{name} is an RLE dict without "size" or "counts"; COCO RLE is {{"size": [height, width], '
            '"counts": [int, ...] or str}.'
        )
    size = rle["size"]
    if not isinstance(size, (list, tuple)) or [*size] != [height, width]:
        raise HfDetrInputError(
            f'{name}["size"] = {size!r} differs from its image, [height, width] = [{height}, {width}]: the mask must '
            "cover the image it annotates."
        )
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        runs = _compressed_runs(counts, f'{name}["counts"]')
    elif isinstance(counts, (list, tuple)) and all(isinstance(c, (int, np.integer)) for c in counts):
        runs = [int(c) for c in counts]
    else:
        raise HfDetrInputError(f'{name}["counts"] must be a list of ints (uncompressed RLE) or a str (compressed RLE).')
    # pycocotools decodes counts unchecked: with too few pixels the rest of the mask is left undefined
    if any(run < 0 for run in runs) or sum(runs) != height * width:
        raise HfDetrInputError(
            f'{name}["counts"] does not decode to a {height} x {width} mask: its runs are {runs[:6]}'
            f"{'...' if len(runs) > 6 else ''} and sum to {sum(runs)} pixels, not {height * width}; runs are "
            "non-negative pixel counts, alternately background and mask, in column-major order."
        )
    return coco_mask.decode(coco_mask.frPyObjects({"size": [height, width], "counts": runs}, height, width)) > 0


def _compressed_runs(counts: str | bytes, name: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string, read as pycocotools' `rleFrString` reads them: each run is
    a little-endian sequence of 5-bit groups in characters 48 + value (bit 0x20: more groups follow, bit 0x10 of
    the last: negative), and from the third run on, the difference to the run two before."""
    try:
        data = counts.encode("ascii") if isinstance(counts, str) else counts
    except UnicodeEncodeError:
        raise HfDetrInputError(f"{name} has characters beyond ASCII, which no compressed COCO RLE holds.") from None
    runs: list[int] = []
    value = shift = 0
    for character in data:
        group = character - 48
        if not 0 <= group < 64:
            raise HfDetrInputError(f"{name} has the character {chr(character)!r}, which no compressed COCO RLE holds.")
        value |= (group & 0x1F) << shift
        shift += 5
        if group & 0x20:
            continue
        if group & 0x10:
            value |= -1 << shift
        runs.append(value + runs[-2] if len(runs) > 2 else value)
        value = shift = 0
    if shift:
        raise HfDetrInputError(f"{name} ends inside a run: the compressed RLE is truncated.")
    return runs


def coco_panoptic_target(
    annotation: Any,
    where: str,
    image_size: tuple[int, int],
    return_masks: bool,
    masks_path: str | os.PathLike | None,
) -> dict[str, torch.Tensor]:
    if not isinstance(annotation, Mapping) or "segments_info" not in annotation or "image_id" not in annotation:
        raise HfDetrInputError(
            f'{where} must be a COCO panoptic dict {{"image_id": int, "segments_info": [...], "file_name": str}}, got '
            f"{annotation!r:.200}."
        )
    image_id = _integer(annotation["image_id"], f'{where}["image_id"]')
    segments = annotation["segments_info"]
    if not isinstance(segments, (list, tuple)):
        raise HfDetrInputError(
            f'{where}["segments_info"] must be a list of segment dicts, got {type(segments).__name__}.'
        )
    ids, labels, crowd = [], [], []
    for j, segment in enumerate(segments):
        name = f'{where}["segments_info"][{j}]'
        if not isinstance(segment, Mapping) or "id" not in segment or "category_id" not in segment:
            raise HfDetrInputError(f'{name} needs an integer "id" and "category_id".')
        ids.append(_integer(segment["id"], f'{name}["id"]'))
        labels.append(_integer(segment["category_id"], f'{name}["category_id"]'))
        crowd.append(_integer(segment.get("iscrowd", 0), f'{name}["iscrowd"]'))
    if len(set(ids)) < len(ids):
        raise HfDetrInputError(f'{where}["segments_info"] (image_id {image_id}) lists a segment id twice: {ids}.')
    id_map = _panoptic_ids(annotation, where, image_id, image_size, masks_path)
    unlisted = sorted(set(torch.unique(id_map).tolist()) - set(ids) - {0})
    if unlisted:
        raise HfDetrInputError(
            f"{where} (image_id {image_id}): the panoptic PNG has segment ids {unlisted[:10]} (R + 256 G + 256^2 B) "
            'that "segments_info" does not list; is the PNG the one of this image? (id 0 is unlabeled, needs no entry.)'
        )
    masks = id_map == torch.tensor(ids, dtype=torch.int64).reshape(-1, 1, 1)
    target = {
        "image_id": torch.tensor([image_id], dtype=torch.int64),
        "boxes": masks_to_boxes(masks).to(torch.float64),  # an empty mask gets (0, 0, 0, 0), dropped later
        "class_labels": torch.tensor(labels, dtype=torch.int64),
        "area": torch.tensor(
            [float(s["area"]) if "area" in s else float(m.sum()) for s, m in zip(segments, masks)], dtype=torch.float64
        ),
        "iscrowd": torch.tensor(crowd, dtype=torch.int64),
    }
    if return_masks:
        target["masks"] = masks
    return target


def _panoptic_ids(
    annotation: Mapping[str, Any],
    where: str,
    image_id: int,
    image_size: tuple[int, int],
    masks_path: str | os.PathLike | None,
) -> torch.Tensor:
    """The int64 `[height, width]` segment ids of an image's panoptic PNG (R + 256 G + 256^2 B)."""
    if "panoptic_png" in annotation:
        png, name = annotation["panoptic_png"], f'{where}["panoptic_png"] (image_id {image_id})'
    elif masks_path is not None and "file_name" in annotation:
        png, name = Path(masks_path) / annotation["file_name"], f'{where}["file_name"] (image_id {image_id})'
    else:
        raise HfDetrInputError(
            f"{where} (image_id {image_id}) has no panoptic PNG: pass masks_path=<the folder of the PNGs> with a "
            '"file_name" in each annotation, or the PNG itself as "panoptic_png".'
        )
    if isinstance(png, (str, os.PathLike)):
        png = _open(png, name)
    if isinstance(png, PIL.Image.Image):
        if png.mode not in ("RGB", "RGBA", "P"):
            raise HfDetrInputError(f"{name} is a {png.mode!r} image; a panoptic PNG holds segment ids as RGB colors.")
        rgb = torch.from_numpy(np.array(png.convert("RGB")))
    elif _is_array(png):
        rgb = torch.as_tensor(png)
        if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != torch.uint8:
            raise HfDetrInputError(
                f"{name} has shape {tuple(rgb.shape)} and dtype {rgb.dtype}; panoptic PNG pixels are uint8 "
                "[height, width, 3] RGB."
            )
    else:
        raise HfDetrInputTypeError(
            f"{name} is a {type(png).__name__}; pass a path, a PIL image or [height, width, 3] pixels."
        )
    if tuple(rgb.shape[:2]) != tuple(image_size):
        raise HfDetrInputError(
            f"{name} is {rgb.shape[0]} x {rgb.shape[1]} (height x width), but its image is {image_size[0]} x "
            f"{image_size[1]}: the panoptic PNG must have the image's size."
        )
    rgb = rgb.to(torch.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _integer(value: Any, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise HfDetrInputError(f"{name} must be an int, got {value!r}.") from None


def _labels(
    target: dict[str, torch.Tensor],
    orig_size: tuple[int, int],
    size: tuple[int, int],
    canvas: tuple[int, int],
    do_convert_annotations: bool,
    keep_crowd: bool,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Model labels of one image from its COCO target, boxes clipped to the image and empty or crowd ones dropped
    (with their masks); masks resized to `size` and padded to `canvas`."""
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
    if "masks" in target:
        labels["masks"] = _label_masks(target["masks"][keep].to(device), size, canvas)
    return {key: value.to(device) for key, value in labels.items()}


def _label_masks(masks: torch.Tensor, size: tuple[int, int], canvas: tuple[int, int]) -> torch.Tensor:
    """Bool `[n, h, w]` masks resized to `size` and zero-padded to `canvas`, as float32 `[n, *canvas]`."""
    out = torch.zeros(len(masks), *canvas, device=masks.device)
    if not len(masks):  # an image without objects
        return out
    if tuple(masks.shape[-2:]) != tuple(size):
        # nearest-exact, transformers' NEAREST: a pixel takes the source pixel under its centre
        masks = tvF.resize(masks.to(torch.uint8), list(size), interpolation=tvF.InterpolationMode.NEAREST_EXACT)
    out[:, : size[0], : size[1]] = masks
    return out


def _output_tensors(outputs: Any, names: tuple[str, ...], needs: str) -> tuple[torch.Tensor, ...]:
    """The fields `names` of model `outputs` as tensors; a TypeError naming what is missing (`needs`: who needs
    them, e.g. "post_process_object_detection needs model outputs")."""
    missing = [name for name in names if getattr(outputs, name, None) is None]
    if missing:
        raise HfDetrInputTypeError(
            f"{needs} with {' and '.join(f'`{name}`' for name in names)}; "
            f"{type(outputs).__name__} has no {' or '.join(f'`{m}`' for m in missing)}."
        )
    return tuple(torch.as_tensor(getattr(outputs, name)) for name in names)


def _detection_outputs(outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    needs = "post_process_object_detection needs model outputs"
    logits, boxes = _output_tensors(outputs, ("logits", "pred_boxes"), needs)
    if logits.ndim != 3 or logits.shape[-1] < 2 or boxes.shape != (*logits.shape[:2], 4):
        raise HfDetrInputError(
            "Expected `logits` [batch, queries, num_labels + 1] and `pred_boxes` [batch, queries, 4], got shapes "
            f"{tuple(logits.shape)} and {tuple(boxes.shape)}."
        )
    return logits, boxes


def _target_sizes(target_sizes: Any, batch: int) -> torch.Tensor:
    sizes = torch.as_tensor(
        [[float(v) for v in pair] for pair in target_sizes] if not _is_array(target_sizes) else target_sizes
    )
    if sizes.shape != (batch, 2):
        raise HfDetrInputError(
            f"`target_sizes` must hold one (height, width) per image, shape ({batch}, 2); got {tuple(sizes.shape)}."
        )
    return sizes


def _segmentation_outputs(outputs: Any, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    needs = f"{method} needs segmentation outputs (HfDetrForSegmentation's)"
    logits, masks = _output_tensors(outputs, ("logits", "pred_masks"), needs)
    if logits.ndim != 3 or logits.shape[-1] < 2 or masks.ndim != 4 or masks.shape[:2] != logits.shape[:2]:
        raise HfDetrInputError(
            "Expected `logits` [batch, queries, num_labels + 1] and `pred_masks` [batch, queries, height, width], got "
            f"shapes {tuple(logits.shape)} and {tuple(masks.shape)}."
        )
    return logits, masks


def _segmentation_sizes(target_sizes: Any, batch: int) -> list[tuple[int, int]] | None:
    if target_sizes is None:
        return None
    sizes = _target_sizes(target_sizes, batch)
    if not (sizes == sizes.round()).all() or (sizes < 1).any():
        raise HfDetrInputError(f"`target_sizes` must be positive whole (height, width) pairs, got {sizes.tolist()}.")
    return [(int(height), int(width)) for height, width in sizes.tolist()]


def _check_thresholds(threshold: float, mask_threshold: float, overlap_mask_area_threshold: float) -> None:
    for name, value in [
        ("threshold", threshold),
        ("mask_threshold", mask_threshold),
        ("overlap_mask_area_threshold", overlap_mask_area_threshold),
    ]:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise HfDetrInputError(f"`{name}` must be a number in [0, 1], got {value!r}.")


def _register_with_pipelines() -> None:
    """Let `pipeline("object-detection")` and `pipeline("image-segmentation")` accept hf_detr's models without
    logging "not supported".

    Each pipeline checks the model's class name against a copy of transformers' built-in name tables, a copy that loses
    the models added with `AutoModelFor*.register`. The tables are the `_model_mapping` of the public
    `MODEL_FOR_*_MAPPING`s; the entries are added here because every pipeline loads this module, also when the code
    comes from a saved folder with `trust_remote_code`.
    """
    for mapping, name in (
        (MODEL_FOR_OBJECT_DETECTION_MAPPING, "HfDetrForObjectDetection"),
        (MODEL_FOR_IMAGE_SEGMENTATION_MAPPING, "HfDetrForSegmentation"),
    ):
        names = getattr(mapping, "_model_mapping", None)
        if isinstance(names, dict):
            names.setdefault("hf_detr", name)


_register_with_pipelines()

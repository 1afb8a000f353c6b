"""HfDetrImageProcessor: images and COCO detection or panoptic annotations in (with object masks on request), DETR
inputs and labels out; model outputs back to boxes in pixels and to segmentation maps.

The work is in its siblings, all of the remote-code set (`from .x import y`, so a saved folder carries them and loads
with `trust_remote_code`): `image_inputs` reads the images, `coco_annotations` (with the mask codec `coco_masks`)
turns the annotations into labels, `postprocessing_inputs` checks what post-processing reads and
`segmentation_postprocessing` computes the maps.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypedDict

import torch
from torchvision.ops import batched_nms, box_convert
from torchvision.transforms.v2 import functional as tvF
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
    pil_torch_interpolation_mapping,
)

from .boxes import denormalize_boxes
from .coco_annotations import checked_int, coco_targets, labels_from_target
from .errors import HfDetrInputError, HfDetrInputTypeError
from .image_inputs import image_list, to_rgb_tensor, upright_rgb
from .pipeline_registration import register_with_pipelines
from .postprocessing_inputs import (
    check_thresholds,
    checked_target_sizes,
    detection_outputs,
    output_tensors,
    segmentation_outputs,
    segmentation_sizes,
)
from .segmentation_postprocessing import (
    instance_segmentation,
    panoptic_segmentation,
    query_masks,
    semantic_segmentation,
)
from .transformers_detr import image_processor_dict_from_transformers

__all__ = ["HfDetrImageProcessor", "upright_rgb"]

_SIZE_FORMS = ({"shortest_edge", "longest_edge"}, {"height", "width"}, {"max_height", "max_width"})
_FORMATS = ("coco_detection", "coco_panoptic")


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
        loaded = [to_rgb_tensor(image, where, input_data_format, white) for image, where in image_list(images)]
        if device is not None:
            loaded = [image.to(device) for image in loaded]
        if return_segmentation_masks is None:
            return_segmentation_masks = format == "coco_panoptic"
        image_sizes = [tuple(image.shape[-2:]) for image in loaded]
        return self._preprocess(
            loaded,
            coco_targets(annotations, image_sizes, format, return_segmentation_masks, masks_path),
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
        """`images`: uint8 or float32 `[3, h, w]` tensors; `targets`: from `coco_targets`, in original pixels."""
        orig_sizes = [tuple(image.shape[-2:]) for image in images]
        sizes = [resized_size(orig, size) for orig in orig_sizes] if do_resize else orig_sizes
        canvas = _canvas_size(sizes, pad_size, do_pad, return_tensors)
        scale, bias = normalization_affine(
            do_rescale, rescale_factor, do_normalize, image_mean, image_std, images[0].device
        )
        interpolation = interpolation_mode(resample)

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
                    labels_from_target(
                        target, orig, resized, canvas or resized, do_convert_annotations, keep_crowd, device
                    ),
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
        nms_threshold: float | None = None,
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
            nms_threshold: a fallback for under-trained checkpoints that give one object several boxes: drop each
                kept detection whose box overlaps a higher-scored kept detection of its class at IoU above this
                (`torchvision.ops.batched_nms`), before `top_k`. A trained DETR needs none, and None (the default)
                applies none.

        Returns:
            One dict per image: `scores` `[n]`, `labels` `[n]` (int64) and `boxes` `[n, 4]` (x0, y0, x1, y1); with
            `return_masks`, `masks` `[n, height, width]`.
        """
        logits, pred_boxes = detection_outputs(outputs)
        mask_logits = None
        if return_masks:
            (mask_logits,) = output_tensors(outputs, ("pred_masks",), "return_masks=True needs segmentation outputs")
            if mask_logits.ndim != 4 or mask_logits.shape[:2] != logits.shape[:2]:
                raise HfDetrInputError(
                    f"Expected `pred_masks` [batch, queries, height, width] for `logits` "
                    f"{tuple(logits.shape)}, got {tuple(mask_logits.shape)}."
                )
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise HfDetrInputError(f"`top_k` must be a positive int or None, got {top_k!r}.")
        if nms_threshold is not None and not (isinstance(nms_threshold, (int, float)) and 0 <= nms_threshold <= 1):
            raise HfDetrInputError(f"`nms_threshold` must be an IoU in [0, 1] or None, got {nms_threshold!r}.")
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
        sizes = None if target_sizes is None else checked_target_sizes(target_sizes, len(logits))
        if sizes is not None:
            boxes = denormalize_boxes(pred_boxes, "xyxy", sizes)
        else:
            boxes = box_convert(pred_boxes, "cxcywh", "xyxy")

        results = []
        for i, (image_scores, image_labels, image_boxes) in enumerate(zip(scores, labels, boxes)):
            keep = (image_scores >= threshold).nonzero()[:, 0]
            if nms_threshold is not None:  # the survivors in query order, as without NMS
                survivors = batched_nms(image_boxes[keep], image_scores[keep], image_labels[keep], nms_threshold)
                keep = keep[survivors.sort().values]
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
        logits, mask_logits = segmentation_outputs(outputs, "post_process_semantic_segmentation")
        return semantic_segmentation(
            logits, mask_logits, segmentation_sizes(target_sizes, len(logits)), return_segmentation_scores
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
        logits, mask_logits = segmentation_outputs(outputs, "post_process_instance_segmentation")
        check_thresholds(threshold, mask_threshold, overlap_mask_area_threshold)
        return instance_segmentation(
            logits,
            mask_logits,
            threshold,
            mask_threshold,
            overlap_mask_area_threshold,
            segmentation_sizes(target_sizes, len(logits)),
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
        logits, mask_logits = segmentation_outputs(outputs, "post_process_panoptic_segmentation")
        check_thresholds(threshold, mask_threshold, overlap_mask_area_threshold)
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
            {checked_int(label, "`label_ids_to_fuse` entries") for label in label_ids_to_fuse or ()},
            segmentation_sizes(target_sizes, len(logits)),
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


def resized_size(height_width: tuple[int, int], size: SizeDict) -> tuple[int, int]:
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


def normalization_affine(
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


def interpolation_mode(resample: Any) -> tvF.InterpolationMode:
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


# Here, not where hf_detr registers its Auto classes: in a saved folder loaded with trust_remote_code this module is
# the code every pipeline imports, and hf_detr's own registration does not run there.
register_with_pipelines()

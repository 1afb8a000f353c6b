"""HfDetrImageProcessor. The work is in its siblings of the remote-code set: `image_inputs` reads the images,
`coco_annotations` (with the mask codec `coco_masks`) makes the labels, `postprocessing_inputs` checks what
post-processing reads and `segmentation_postprocessing` computes the maps."""

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
    Images and COCO annotations in, DETR inputs and labels out; outputs back to pixels. The defaults are DETR's
    evaluation preprocessing: shorter side 800, longer side at most 1333, bilinear antialiased resize, ImageNet
    normalization, zero padding (bottom, right) to the batch's largest image.

    Box convention (differs from `transformers.DetrImageProcessor` for padded batches): label `boxes` are normalized
    (center_x, center_y, width, height) relative to each image's resized size *before* padding, as in the original
    DETR, whose checkpoints were trained so. `DetrImageProcessor` renormalizes them to the padded canvas, so an
    image's labels change with the largest image of its batch and a model fine-tuned on them predicts drifting boxes.
    Without padding both agree.

    Args:
        size: `{"shortest_edge", "longest_edge"}` (aspect ratio kept, the longer side capped), `{"height",
            "width"}` (exact) or `{"max_height", "max_width"}` (largest size within the bounds, aspect ratio kept).
        rescale_factor: float inputs are scaled too: pass `do_rescale=False` for float images already in [0, 1].
        pad_size: `{"height", "width"}` to pad to instead of the batch's largest size.
        do_convert_annotations: with `False` the labels keep absolute (x0, y0, x1, y1) boxes of the resized image.
        keep_crowd: keep `iscrowd=1` objects (DETR drops them for detection; pass `True` for panoptic training, as
            DETR and transformers keep crowd segments there).
        return_segmentation_masks: add each object's mask to its labels; by default only for `"coco_panoptic"`.

    `images`: PIL images, arrays or tensors (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4, uint8 or float, paths
    or URLs, or a 4-D batch. Converted to RGB (transparency onto white); PIL images turned upright by their EXIF
    orientation, which the annotations refer to. A layout that is both (C, H, W) and (H, W, C) is read as (C, H, W)
    for tensors and (H, W, C) for numpy arrays unless `input_data_format` says otherwise.

    `annotations`, one dict per image, in `DetrImageProcessor`'s formats:
        - `"coco_detection"`: `{"image_id", "annotations": [{"bbox": [x, y, w, h] pixels, "category_id", "area"
          (default w * h), "iscrowd" (default 0), "segmentation"}]}`. `segmentation` (read with
          `return_segmentation_masks`) is COCO polygons in pixels (points at most 1 pixel outside the image; fewer
          than 3 points enclose nothing) or an RLE of the image's size, compressed or not.
        - `"coco_panoptic"`: `{"image_id", "segments_info": [{"id", "category_id", "iscrowd", "area"}], "file_name"}`
          with the PNG at `masks_path / file_name`, or the PNG itself as `"panoptic_png"` (path, PIL image or
          `[H, W, 3]` uint8). A pixel's id is R + 256 G + 256^2 B, 0 unlabeled; an unlisted id is an error, a
          listed segment without pixels is dropped. Boxes come from the masks (`masks_to_boxes`, as transformers);
          `area` defaults to the pixel count.

    Returns a `BatchFeature`: `pixel_values` float32 `[batch, 3, H, W]` (a list when unpadded sizes differ and
    `return_tensors=None`), `pixel_mask` int64 `[batch, H, W]` (1 on the image) when padding, and `labels`: per
    image `class_labels` `[n]`, `boxes` float32 `[n, 4]`, `area` (resized pixels), `iscrowd`, `image_id` `[1]`,
    `orig_size` and `size` (height, width of the upright input and of the resized image before padding), and with
    masks `masks` float32 0/1 `[n, H, W]` at the padded size (nearest-exact, as transformers). Boxes are clipped to
    the image; objects left without area are dropped with their masks.
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
        """Also takes a transformers `DetrImageProcessor`'s settings (or the old `DetrFeatureExtractor`'s) and keeps
        how they preprocess; their `format` must be `"coco_detection"`."""
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
        """`masks_path`: the folder of the panoptic PNGs that `"file_name"` names (`format="coco_panoptic"`)."""
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
        """`targets`: from `coco_targets`, in original pixels."""
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
        """Detections per image: `scores` `[n]` (softmax probability of the best real class), `labels` `[n]`,
        `boxes` `[n, 4]` (x0, y0, x1, y1; pixels of `target_sizes` (height, width) per image, else relative), and
        with `return_masks` `masks` `[n, height, width]`.

        Args:
            threshold: keeps scores >= `threshold` (transformers: >; they differ only on exact ties).
            top_k: the highest scores first; without it detections keep the query order (as transformers).
            return_masks: each detection's mask from `pred_masks` (probability > 0.5, bool, at the target size). The
                masks span the whole padded input: post-process an unpadded batch or each image's own region.
            nms_threshold: a fallback for under-trained checkpoints that give one object several boxes: class-wise
                NMS at this IoU (`batched_nms`) before `top_k`. A trained DETR needs none.
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
        """Per image an int64 `[height, width]` map of label ids, as transformers' `DetrImageProcessor` (pixels no
        query covers get the highest-scoring label all the same); with `return_segmentation_scores`,
        `SemanticSegmentationPostProcessorOutput`s with the `[num_labels, height, width]` scores too.

        The masks cover the whole padded input, as in transformers: with `target_sizes`, a padded image is resized
        with its padding (crop `pred_masks` to the image first, or predict it alone).
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
        """Non-overlapping instances, as transformers' `DetrImageProcessor` (panoptic without fusing): per image
        `{"segmentation": int32 [height, width] segment ids, "segments_info": [{"id", "label_id", "was_fused",
        "score"}]}`.

        `return_coco_annotation` gives one real COCO RLE per segment (transformers' option of this name gives
        row-major runs that pycocotools cannot read).
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
        """Panoptic maps, as transformers' `DetrImageProcessor`, except that a segment id is never given twice
        (transformers can reuse one after a fused class reappears).

        Args:
            threshold: keep queries whose best class, "no object" included, is real with probability > `threshold`.
            mask_threshold: a kept query's mask is where its probability times its score is >= this.
            overlap_mask_area_threshold: a query is a segment only when it wins more than this fraction of its mask.
            label_ids_to_fuse: labels merged into one segment per image ("stuff" such as sky).
            target_sizes: the masks cover the whole padded input, as in transformers: a padded image is resized with
                its padding (crop `pred_masks` to the image first, or predict it alone).

        Returns:
            Per image `{"segmentation": int32 [height, width], "segments_info": [{"id", "label_id", "was_fused",
            "score"}]}`: ids from 1, 0 where no segment is; all -1 and no segments when no query passes `threshold`.
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
    """transformers' arithmetic, so sizes agree with its processors."""
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
    """None for a list of differently sized images."""
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
    """Rescaling and normalization as one `x * scale + bias` (`[3, 1, 1]`); None where a part is a no-op."""
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

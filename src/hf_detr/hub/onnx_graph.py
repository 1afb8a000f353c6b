"""The end-to-end inference graph: uint8 images and their sizes in, post-processed detections out, as tensor code that
`torch.onnx.export(dynamo=True)` exports (`Preprocess` and `Postprocess`, joined around the model's graph by
`hub.export`; `EndToEndGraph` is the three in PyTorch).

The graph computes what `HfDetrImageProcessor` followed by the model and `post_process_object_detection(outputs,
threshold=0, top_k=max_detections, target_sizes=original sizes)` compute, with a segmentation model's masks taken from
each image's own (unpadded) region as `hf_detr.evaluation.evaluate` takes them. Where the processor works image by
image with Python control flow, the same arithmetic is written here as batched tensor operations (each tested equal
to the original in tests/test_export.py):

- `resized_sizes`: the processor's resize rule (`resized_size`, transformers' arithmetic) in float64.
- `resize_like_processor`: torchvision's antialiased bilinear resize of uint8 images, which the processor runs, as two
  matrix products per image with the kernel's own fixed-point weights and its rounding after each pass, so the
  resized pixels are the processor's (exactly while the products' partial sums stay below 2**24, i.e. when an image
  is shrunk by less than 4x; beyond that an odd pixel can be 1 off). Images of different sizes are resized to
  different sizes in one batch, which one ONNX `Resize` cannot do.
- `Postprocess`: the scores, top-k and pixel boxes of `post_process_object_detection`, batched.
- `own_region_masks`: the bilinear resize of each kept query's mask logits (`query_masks`) from the image's own region
  to its original size, as gathers of the two neighbouring rows and columns.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.ops import box_convert
from transformers.image_utils import SizeDict

from ..modeling.errors import HfDetrInputError
from ..modeling.image_processing_hf_detr import interpolation_mode, normalization_affine
from ..modeling.modeling_hf_detr import HfDetrForObjectDetection

__all__ = [
    "MAX_SIDE",
    "MIN_SIDE",
    "EndToEndGraph",
    "Postprocess",
    "Preprocess",
    "check_max_detections",
    "own_region_masks",
    "resize_like_processor",
    "resized_sizes",
]

# The sides of input images the end-to-end graph takes. Below MIN_SIDE an image holds nothing to detect; above
# MAX_SIDE the resize (a matrix product over every input pixel) would take gigabytes: downscale or tile such images.
MIN_SIDE, MAX_SIDE = 16, 8192
# torchvision's uint8 kernel: weights are int16 scaled by 2**precision, with precision < 22
_INT16_LIMIT, _MAX_PRECISION = 2**15, 22


def resized_sizes(sizes: torch.Tensor, size: SizeDict) -> torch.Tensor:
    """The processor's resized (height, width) `[batch, 2]` int64 of images of `sizes` `[batch, 2]` (height, width):
    `HfDetrImageProcessor`'s `resized_size` (transformers' `get_size_with_aspect_ratio` and
    `get_image_size_for_max_height_width`) in float64 tensor arithmetic, operation for operation."""
    height, width = sizes.to(torch.float64).unbind(-1)
    if size.shortest_edge is not None:  # the processor takes it only with longest_edge
        target = torch.full_like(height, float(size.shortest_edge))
        short, long = torch.minimum(height, width), torch.maximum(height, width)
        capped = long / short * target > size.longest_edge
        raw = torch.where(capped, size.longest_edge * short / long, target)
        target = torch.where(capped, raw.round(), target)  # Python's round: half to even, as torch's
        unchanged = ((height <= width) & (height == target)) | ((width <= height) & (width == target))
        portrait = width < height
        new_height = torch.where(portrait, (raw * height / width).floor(), target)
        new_width = torch.where(portrait, target, (raw * width / height).floor())
        new_height, new_width = torch.where(unchanged, height, new_height), torch.where(unchanged, width, new_width)
    elif size.max_height is not None:
        # a tensor divided, not a number: torch computes `number / tensor` as a reciprocal times the number
        scale = torch.minimum(
            torch.full_like(height, size.max_height) / height, torch.full_like(width, size.max_width) / width
        )
        new_height, new_width = (height * scale).floor(), (width * scale).floor()
    else:
        new_height, new_width = torch.full_like(height, size.height), torch.full_like(width, size.width)
    return torch.stack([new_height, new_width], -1).clamp(min=1).to(torch.int64)


def _antialias_weights(
    in_sizes: torch.Tensor, out_sizes: torch.Tensor, in_length: Any, out_length: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's (ATen's) antialiased bilinear weights of one axis for uint8 images, per image: float32
    `[batch, out_length, in_length]` integer-valued weights (zero outside each image's `in_sizes` x `out_sizes`) and
    the `[batch]` divisor 2**precision, both as ATen's `_compute_index_ranges_int16_weights` computes them."""
    source = in_sizes.to(torch.float64)[:, None, None]
    scale = source / out_sizes.to(torch.float64)[:, None, None]
    shrinking = scale >= 1.0
    support = torch.where(shrinking, scale, 1.0)  # the triangle filter widened by the scale when shrinking
    inverse = torch.where(shrinking, torch.ones_like(scale) / scale, 1.0)
    center = scale * (torch.arange(out_length, dtype=torch.float64, device=scale.device)[None, :, None] + 0.5)
    first = (center - support + 0.5).floor().clamp(min=0.0)
    end = torch.minimum((center + support + 0.5).floor(), source)
    index = torch.arange(in_length, dtype=torch.float64, device=scale.device)[None, None, :]
    weights = (1.0 - ((index - center + 0.5) * inverse).abs()).clamp(min=0.0) * ((index >= first) & (index < end))
    total = weights.sum(-1, keepdim=True)
    weights = torch.where(total > 0, weights / torch.where(total > 0, total, 1.0), weights)
    rows = torch.arange(out_length, device=scale.device)[None, :, None] < out_sizes[:, None, None]
    weights = weights * rows
    # ATen's loop over precisions p = 0, 1, ...: stop at the first p whose next power would overflow int16
    largest = weights.amax(dim=(1, 2))[:, None]
    next_powers = 2.0 ** torch.arange(1, _MAX_PRECISION + 1, dtype=torch.float64, device=scale.device)
    overflows = (largest * next_powers + 0.5).floor() >= _INT16_LIMIT
    precision = torch.where(overflows.any(-1), overflows.to(torch.int64).argmax(-1), _MAX_PRECISION)
    divisor = 2.0 ** precision.to(torch.float64)
    weights = (weights * divisor[:, None, None] + 0.5).floor()
    return weights.to(torch.float32), divisor.to(torch.float32)


def _fixed_point_round(sums: torch.Tensor, divisor: torch.Tensor) -> torch.Tensor:
    """ATen's `(sum + 2**(precision - 1)) >> precision`, saturated to uint8's range; the division by a power of two
    and the floor are exact in float32."""
    divisor = divisor[:, None, None, None]
    return ((sums + divisor / 2) / divisor).floor().clamp(0.0, 255.0)


def resize_like_processor(
    images: torch.Tensor, sizes: torch.Tensor, new_sizes: torch.Tensor, height: Any, width: Any
) -> torch.Tensor:
    """uint8 `images` `[batch, H, W, 3]` (image i in its top-left `sizes[i]`) resized to `new_sizes` as the processor
    resizes them (horizontal pass, rounding, vertical pass, rounding), placed in the top-left of a float32
    `[batch, 3, height, width]` canvas of pixel values 0..255, zero elsewhere."""
    columns, column_divisor = _antialias_weights(sizes[:, 1], new_sizes[:, 1], images.shape[2], width)
    rows, row_divisor = _antialias_weights(sizes[:, 0], new_sizes[:, 0], images.shape[1], height)
    pixels = images.permute(0, 3, 1, 2).to(torch.float32)
    pixels = _fixed_point_round(pixels @ columns.transpose(1, 2)[:, None], column_divisor)
    return _fixed_point_round(rows[:, None] @ pixels, row_divisor)


def _linear_taps(
    in_sizes: torch.Tensor, out_sizes: torch.Tensor, length: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image and output position of one axis, the two source indices and the weight of the second in ATen's
    bilinear resize (align_corners=False, no antialias) from `in_sizes` to `out_sizes`: `[batch, length]` each."""
    scale = (in_sizes.to(torch.float32) / out_sizes.to(torch.float32))[:, None]
    position = torch.arange(length, device=scale.device).to(torch.float32)[None]
    source = (scale * (position + 0.5) - 0.5).clamp(min=0.0)
    last = (in_sizes - 1)[:, None]
    first = torch.minimum(source.floor().to(torch.int64), last)
    second = first + (first < last).to(torch.int64)
    return first, second, (source - first).clamp(0.0, 1.0)


def own_region_masks(
    mask_logits: torch.Tensor,
    resized: torch.Tensor,
    canvas: tuple[Any, Any],
    sizes: torch.Tensor,
    height: Any,
    width: Any,
) -> torch.Tensor:
    """bool `[batch, k, height, width]`: each image's mask logits `[batch, k, h, w]` (at the model's mask stride over
    the padded `canvas`) cut to the image's own region (its `resized` size scaled to `(h, w)`, rounded up, as
    `evaluate` cuts them), resized bilinearly to its original `sizes` and thresholded at probability 0.5, as
    `post_process_object_detection(..., return_masks=True)` does; False outside each image's size."""
    batch, count, mask_height, mask_width = mask_logits.shape
    # ceil(resized * mask size / canvas), in integers
    region_rows = (resized[:, 0] * mask_height + canvas[0] - 1) // canvas[0]
    region_columns = (resized[:, 1] * mask_width + canvas[1] - 1) // canvas[1]
    top, bottom, down = _linear_taps(region_rows, sizes[:, 0], height)
    left, right, across = _linear_taps(region_columns, sizes[:, 1], width)

    def rows(index: torch.Tensor) -> torch.Tensor:
        return mask_logits.gather(2, index[:, None, :, None].expand(batch, count, -1, mask_width))

    maps = rows(top) * (1 - down)[:, None, :, None] + rows(bottom) * down[:, None, :, None]

    def columns(index: torch.Tensor) -> torch.Tensor:
        return maps.gather(3, index[:, None, None, :].expand(batch, count, maps.shape[2], -1))

    maps = columns(left) * (1 - across)[:, None, None, :] + columns(right) * across[:, None, None, :]
    inside_rows = torch.arange(height, device=sizes.device)[None] < sizes[:, :1]
    inside_columns = torch.arange(width, device=sizes.device)[None] < sizes[:, 1:]
    inside = inside_rows[:, :, None] & inside_columns[:, None, :]
    return (maps > 0) & inside[:, None]


class Preprocess(nn.Module):
    """`(images, sizes) -> (pixel_values, pixel_mask, sizes, resized)`: what `processor` makes of uint8 `images`
    `[batch, H, W, 3]` (RGB, image i in its top-left `sizes[i]` = (height, width), the rest padding of any value):
    resized, rescaled, normalized and padded to the batch's largest resized size (or the processor's `pad_size`),
    with the pixel mask; also the sizes (clamped to the array) and the resized sizes, for the post-processing."""

    def __init__(self, processor: Any) -> None:
        super().__init__()
        if interpolation_mode(processor.resample) != interpolation_mode(2):
            raise HfDetrInputError(
                f"the end-to-end graph resizes as the processor's default resample=2 (bilinear); this "
                f"processor has resample={processor.resample!r}: set resample=2 in its "
                "preprocessor_config.json, or export the raw graph."
            )
        self.size = processor.size if processor.do_resize else None
        pad = processor.pad_size
        self.pad_size = (pad.height, pad.width) if processor.do_pad and pad is not None else None
        scale, bias = normalization_affine(
            processor.do_rescale,
            processor.rescale_factor,
            processor.do_normalize,
            processor.image_mean,
            processor.image_std,
            torch.device("cpu"),
        )
        self.register_buffer("scale", torch.as_tensor(1.0 if scale is None else scale), persistent=False)
        self.register_buffer("bias", torch.as_tensor(0.0 if bias is None else bias), persistent=False)

    def forward(self, images: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _, height, width, _ = images.shape
        # sizes beyond the array (or below 1 pixel) would describe pixels that are not there: clamp them to it
        sizes = torch.stack([sizes[:, 0].clamp(1, height), sizes[:, 1].clamp(1, width)], -1)
        resized = resized_sizes(sizes, self.size) if self.size is not None else sizes
        canvas = self.pad_size or _largest(resized)  # the batch padded to its largest resized image
        pixels = resize_like_processor(images, sizes, resized, *canvas)
        inside_rows = torch.arange(canvas[0], device=sizes.device)[None] < resized[:, :1]
        inside_columns = torch.arange(canvas[1], device=sizes.device)[None] < resized[:, 1:]
        pixel_mask = inside_rows[:, :, None] & inside_columns[:, None, :]
        pixel_values = torch.where(pixel_mask[:, None], pixels * self.scale + self.bias, 0.0)
        return pixel_values, pixel_mask.to(torch.int64), sizes, resized


class Postprocess(nn.Module):
    """`(logits, pred_boxes, sizes, resized[, pred_masks]) -> (scores, labels, boxes[, masks])`:
    `post_process_object_detection(outputs, threshold=0, top_k=max_detections, target_sizes=sizes)` of a padded
    batch: the `max_detections` best-scoring queries of each image, best first, `scores` float32 `[batch, k]`,
    `labels` int64 `[batch, k]`, `boxes` float32 `[batch, k, 4]` (x0, y0, x1, y1 in the image's own pixels) of
    images of `sizes` resized to `resized` and, given the mask logits `pred_masks`, bool `masks` `[batch, k, H, W]`
    (H, W: the largest height and width of `sizes`; image i's in its top-left), each from its image's own region of
    the mask logits."""

    def __init__(self, max_detections: int, masks: bool) -> None:
        super().__init__()
        self.max_detections, self.masks = max_detections, masks

    def forward(
        self,
        logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        sizes: torch.Tensor,
        resized: torch.Tensor,
        pred_masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        # the best real class of each query, as post_process_object_detection scores it, best first
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
        scores, index = scores.topk(self.max_detections, dim=1)
        labels = labels.gather(1, index)
        boxes = pred_boxes.gather(1, index[..., None].expand(-1, -1, 4))
        # denormalize_boxes' arithmetic (convert, then scale); its shape test of `sizes` would fix the batch size
        height, width = sizes.to(boxes.dtype).unbind(1)
        boxes = box_convert(boxes, "cxcywh", "xyxy") * torch.stack([width, height, width, height], 1)[:, None]
        if pred_masks is None:
            return scores, labels, boxes
        picked = pred_masks.gather(1, index[:, :, None, None].expand(-1, -1, *pred_masks.shape[-2:]))
        canvas = resized.amax(0)
        return scores, labels, boxes, own_region_masks(picked, resized, (canvas[0], canvas[1]), sizes, *_largest(sizes))


class EndToEndGraph(nn.Module):
    """`(images, sizes) -> (scores, labels, boxes[, masks])` in PyTorch: `Preprocess`, the model, `Postprocess`, the
    three graphs that `hub.export.export_end_to_end` exports and joins into one ONNX graph."""

    def __init__(self, model: HfDetrForObjectDetection, processor: Any, max_detections: int) -> None:
        super().__init__()
        check_max_detections(max_detections, model.config.num_queries)
        self.preprocess, self.model = Preprocess(processor), model
        self.postprocess = Postprocess(max_detections, model.config.predicts_masks)

    def forward(self, images: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pixel_values, pixel_mask, sizes, resized = self.preprocess(images, sizes)
        outputs = self.model(pixel_values, pixel_mask)
        masks = outputs.pred_masks if self.postprocess.masks else None
        return self.postprocess(outputs.logits, outputs.pred_boxes, sizes, resized, masks)


def check_max_detections(max_detections: int, num_queries: int) -> None:
    """A ValueError unless `max_detections` is an int from 1 to the model's `num_queries`."""
    if isinstance(max_detections, bool) or not isinstance(max_detections, int) or not 0 < max_detections <= num_queries:
        raise HfDetrInputError(
            f"max_detections must be an int from 1 to the model's {num_queries} queries, got "
            f"{max_detections!r}; pass --max_detections {num_queries} or fewer."
        )


def _largest(sizes: torch.Tensor) -> tuple[Any, Any]:
    """The largest height and width of `sizes` `[batch, 2]`: a data-dependent shape for torch.export."""
    height, width = sizes[:, 0].max().item(), sizes[:, 1].max().item()
    if torch.compiler.is_exporting():
        # bounds for torch.export's shape reasoning; they are not checks of the ONNX graph, which runs any size
        for side in (height, width):
            torch._check(side >= 1)
            torch._check(side <= 2 * MAX_SIDE)
    return height, width

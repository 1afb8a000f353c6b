"""DETR segmentation outputs (class logits and per-query mask logits) to semantic, instance and panoptic maps, as
transformers' `DetrImageProcessor` computes them (its `post_process_*_segmentation`), with two corrections listed
in `panoptic_segmentation` and `instance_segmentation`. The inputs are checked by the caller
(`HfDetrImageProcessor`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput

from .errors import HfDetrInputError

__all__ = ["encode_rles", "instance_segmentation", "panoptic_segmentation", "query_masks", "semantic_segmentation"]

Size = tuple[int, int]


def semantic_segmentation(
    logits: torch.Tensor,
    mask_logits: torch.Tensor,
    target_sizes: Sequence[Size] | None,
    return_segmentation_scores: bool = False,
) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
    """Per image the int64 `[height, width]` map of the class maximizing sum_q p(class | q) * sigmoid(mask_q), the
    scores resized to `target_sizes` (bilinear); with `return_segmentation_scores` also the `[num_labels, height,
    width]` scores."""
    class_probs = logits.softmax(-1)[..., :-1]
    scores = torch.einsum("bqc,bqhw->bchw", class_probs, mask_logits.sigmoid())
    if target_sizes is not None:
        scores = [_resize(image_scores, size) for image_scores, size in zip(scores, target_sizes)]
    if not return_segmentation_scores:
        return [image_scores.argmax(0) for image_scores in scores]
    return [
        SemanticSegmentationPostProcessorOutput(
            data={"segmentation": image_scores.argmax(0), "segmentation_scores": image_scores}
        )
        for image_scores in scores
    ]


def instance_segmentation(
    logits: torch.Tensor,
    mask_logits: torch.Tensor,
    threshold: float,
    mask_threshold: float,
    overlap_mask_area_threshold: float,
    target_sizes: Sequence[Size] | None,
    return_coco_annotation: bool = False,
) -> list[dict[str, Any]]:
    """`panoptic_segmentation` without fusing. With `return_coco_annotation`, `segmentation` is one COCO RLE per
    entry of `segments_info` (`[]` without segments); transformers' option of the same name returns row-major
    (start, length) runs of every id, background included, which pycocotools cannot read."""
    results = panoptic_segmentation(
        logits, mask_logits, threshold, mask_threshold, overlap_mask_area_threshold, (), target_sizes
    )
    if return_coco_annotation:
        for result in results:
            result["segmentation"] = _coco_rles(result["segmentation"], result["segments_info"])
    return results


def panoptic_segmentation(
    logits: torch.Tensor,
    mask_logits: torch.Tensor,
    threshold: float,
    mask_threshold: float,
    overlap_mask_area_threshold: float,
    label_ids_to_fuse: Collection[int],
    target_sizes: Sequence[Size] | None,
) -> list[dict[str, Any]]:
    """One panoptic map per image, as transformers' `DetrImageProcessor.post_process_panoptic_segmentation`.

    Per image: queries whose best class (softmax over all classes, "no object" included) is a real class with a
    probability > `threshold` are kept; their mask probabilities (resized to the target size, bilinear) are
    weighted by that probability and each pixel goes to the query with the highest weighted probability. A query
    is a segment when it owns some pixels and they are > `overlap_mask_area_threshold` of its pixels whose
    weighted probability is >= `mask_threshold`. Segment ids count from 1 in query order; 0 marks pixels of no
    segment; queries of a class in `label_ids_to_fuse` share that class's id (each still has its entry in
    `segments_info`, with its own score).

    One correction: an id is never given twice. transformers continues counting from a fused class's id when
    that class reappears, so the next new segment can take an id that is already in use.

    An image with no kept query gets a map of -1 (as in transformers) and no segments.
    """
    scores, labels = logits.softmax(-1).max(-1)
    keep = (labels != logits.shape[-1] - 1) & (scores > threshold)
    mask_probs = mask_logits.sigmoid()
    fuse = set(label_ids_to_fuse)
    results = []
    for i in range(len(logits)):
        size = tuple(mask_logits.shape[-2:]) if target_sizes is None else target_sizes[i]
        if not keep[i].any():
            results.append(
                {"segmentation": torch.full(size, -1, dtype=torch.int32, device=logits.device), "segments_info": []}
            )
            continue
        probs = mask_probs[i, keep[i]]
        if target_sizes is not None:
            probs = _resize(probs, size)
        segmentation, segments = _segments(
            probs, scores[i, keep[i]], labels[i, keep[i]], mask_threshold, overlap_mask_area_threshold, fuse
        )
        results.append({"segmentation": segmentation, "segments_info": segments})
    return results


def _segments(
    probs: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask_threshold: float,
    overlap_mask_area_threshold: float,
    fuse: set[int],
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """One image's map from its kept queries' mask probabilities `[k, height, width]`."""
    weighted = probs * scores[:, None, None]
    owner = weighted.argmax(0)  # [height, width]: the query each pixel goes to
    owned = torch.bincount(owner.flatten(), minlength=len(weighted))
    confident = (weighted >= mask_threshold).flatten(1).sum(1)
    # the ratio in float32 and then compared in float64, as transformers does (`ratio.item() > threshold`):
    # a ratio such as 4 / 5 then passes a threshold of 0.8
    ratio = (owned / confident.clamp(min=1)).double()
    valid = ((owned > 0) & (confident > 0) & (ratio > overlap_mask_area_threshold)).tolist()

    ids = [0] * len(weighted)
    segments = []
    fused_ids: dict[int, int] = {}
    next_id = 0
    for k, (label, score) in enumerate(zip(labels.tolist(), scores.tolist())):
        if not valid[k]:
            continue
        if label not in fused_ids:
            next_id += 1
            if label in fuse:
                fused_ids[label] = next_id
        ids[k] = fused_ids.get(label, next_id)
        segments.append({"id": ids[k], "label_id": label, "was_fused": label in fuse, "score": round(score, 6)})
    lookup = torch.tensor(ids, dtype=torch.int32, device=owner.device)
    return lookup[owner], segments


def query_masks(mask_logits: torch.Tensor, size: Size) -> torch.Tensor:
    """Resized (bilinear), a pixel in where its probability exceeds 0.5, as in the original DETR's results."""
    if not len(mask_logits):
        return torch.zeros(0, *size, dtype=torch.bool, device=mask_logits.device)
    return _resize(mask_logits, size) > 0


def _resize(maps: torch.Tensor, size: Size) -> torch.Tensor:
    """Bilinear, as transformers resizes them."""
    return F.interpolate(maps[None], size=tuple(size), mode="bilinear", align_corners=False)[0]


def _coco_rles(segmentation: torch.Tensor, segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not segments:
        return []
    ids = torch.tensor([segment["id"] for segment in segments], dtype=segmentation.dtype, device=segmentation.device)
    return encode_rles(segmentation[None] == ids[:, None, None])


def encode_rles(masks: np.ndarray | torch.Tensor) -> list[dict[str, Any]]:
    """COCO compressed RLEs ``{"size": [height, width], "counts": str}``, counts as text so JSON and Arrow store
    them."""
    from pycocotools import mask as coco_mask  # imported only here: the rest of the module does not need it

    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise HfDetrInputError(f"masks must have shape [n, height, width], got {masks.shape}.")
    if not len(masks):
        return []
    # pycocotools encodes a Fortran-ordered [height, width, n] uint8 array
    rles = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]

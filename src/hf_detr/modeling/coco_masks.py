"""The COCO mask codec of the package: an object's `segmentation` (polygons, uncompressed or compressed RLE) and a
panoptic PNG's segment ids read and checked against their image, and polygons encoded as compressed RLE.

The data's loaders (`hf_detr.data.masks`) and the image processor's annotations use these, so a mask is checked
the same way wherever it enters; here in the remote-code set, so a saved folder's processor needs no data code.
Every check raises an `HfDetrInputError` naming the annotation (`name`) and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from .errors import HfDetrInputError, HfDetrInputTypeError
from .image_inputs import is_array, open_image

__all__ = ["object_mask", "panoptic_ids", "polygon_rle", "rle_mask"]

# how far (pixels) a polygon point may lie outside its image: annotation tools put border points on the pixel edge
# at x = width, and some a fraction beyond
_POLYGON_TOLERANCE = 1.0


def object_mask(obj: Mapping[str, Any], name: str, image_size: tuple[int, int]) -> np.ndarray:
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
    """The compressed RLE of the polygons' union, merged run by run, never drawn: equal to encoding `object_mask`'s
    pixels, 15x faster."""
    from pycocotools import mask as coco_mask

    kept = _checked_polygons(polygons, name, image_size)
    if not kept:
        rle = coco_mask.encode(np.zeros((*image_size, 1), dtype=np.uint8, order="F"))[0]
    else:
        rles = coco_mask.frPyObjects(kept, *image_size)
        rle = coco_mask.merge(rles) if len(rles) > 1 else rles[0]
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _checked_polygons(polygons: Sequence[Any], name: str, image_size: tuple[int, int]) -> list[list[float]]:
    """The polygons that enclose something: finite flat x, y pairs inside the image (1 pixel slack)."""
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


def panoptic_ids(
    annotation: Mapping[str, Any],
    where: str,
    image_id: int,
    image_size: tuple[int, int],
    masks_path: str | os.PathLike | None,
) -> torch.Tensor:
    """R + 256 G + 256^2 B."""
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
        png = open_image(png, name)
    if isinstance(png, PIL.Image.Image):
        if png.mode not in ("RGB", "RGBA", "P"):
            raise HfDetrInputError(f"{name} is a {png.mode!r} image; a panoptic PNG holds segment ids as RGB colors.")
        rgb = torch.from_numpy(np.array(png.convert("RGB")))
    elif is_array(png):
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

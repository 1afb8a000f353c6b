"""An image's upright size, read from its file header without decoding it, checked against the size its annotations
give (boxes in the wrong frame otherwise)."""

from __future__ import annotations

import io
import os
import typing
from typing import Any

import PIL.Image

from ..modeling.errors import HfDetrInputError

# EXIF tag 0x0112; orientations 5-8 store the image transposed (a quarter turn, perhaps mirrored)
_EXIF_ORIENTATION = 0x0112
_QUARTER_TURNS = (5, 6, 7, 8)

__all__ = ["checked_image_size"]


def checked_image_size(
    file: str | os.PathLike | typing.BinaryIO,
    where: str,
    width: int | None = None,
    height: int | None = None,
    declared_by: str = "the json",
) -> tuple[int, int]:
    """The upright size ``datasets.Image`` decodes (EXIF quarter turns applied), from the header; ``None``: not
    checked."""
    shown = file if isinstance(file, (str, os.PathLike)) else "the image"
    try:
        with PIL.Image.open(file) as image:
            size = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, PIL.UnidentifiedImageError) as error:
        raise HfDetrInputError(f"{where}: {shown} is not a readable image ({error}).") from error
    upright = ""
    if orientation in _QUARTER_TURNS:  # stored on its side: the upright image (what datasets.Image decodes) is turned
        size = size[::-1]
        upright = f" upright (EXIF orientation {orientation}; stored as {size[1]}x{size[0]})"
    if width is not None and size != (width, height):
        raise HfDetrInputError(
            f"{where}: {shown} is {size[0]}x{size[1]} pixels{upright} but {declared_by} says width={width}, "
            f"height={height}; boxes would be in the wrong frame."
        )
    return size


def _image_size(
    image: Any, where: str, width: int | None = None, height: int | None = None, declared_by: str = "the json"
) -> tuple[int, int]:
    """Of a decoded image, or of an undecoded one's bytes or path (its header only)."""
    if hasattr(image, "size") and hasattr(image, "mode"):  # decoded: datasets.Image applied the EXIF turn already
        return image.size
    file = io.BytesIO(image["bytes"]) if image and image.get("bytes") else (image or {}).get("path")
    if file is None:
        raise HfDetrInputError(f"{where}: no image (neither bytes nor a path).")
    return checked_image_size(file, where, width, height, declared_by)

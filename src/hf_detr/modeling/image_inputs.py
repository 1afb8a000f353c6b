"""Input images as DETR reads them: any image form (PIL, numpy, torch, a path or URL, a list or a 4-D batch) to an
upright `[3, h, w]` RGB tensor, with an error naming the image when it cannot be one."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from transformers.image_utils import ChannelDimension, load_image

from .errors import HfDetrInputError, HfDetrInputTypeError

__all__ = ["image_list", "is_array", "open_image", "to_rgb_tensor", "upright_rgb"]

_CHANNEL_COUNTS = (1, 3, 4)


def image_list(images: Any) -> list[tuple[Any, str]]:
    """Single images, each with its name in errors (`images[i]`)."""
    if is_array(images) and images.ndim == 4:
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
            if is_array(image) and image.ndim == 4:
                raise HfDetrInputError(
                    f"images[{i}] has 4 dimensions {tuple(image.shape)}; pass a list of single images or one 4-D batch."
                )
        return [(image, f"images[{i}]") for i, image in enumerate(images)]
    return [(images, "images[0]")]


def is_array(x: Any) -> bool:
    return isinstance(x, (np.ndarray, torch.Tensor))


def _channel_axes(shape: tuple[int, ...]) -> tuple[bool, bool]:
    """Whether the first / last axis of a 3-D image shape can be its channels."""
    return shape[0] in _CHANNEL_COUNTS, shape[-1] in _CHANNEL_COUNTS


def to_rgb_tensor(
    image: Any, where: str, input_data_format: str | ChannelDimension | None, white: float
) -> torch.Tensor:
    """`[3, h, w]` uint8 or float32, a view of the input when possible; `white`: a full-intensity float pixel's value,
    to composite transparent arrays onto white."""
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image, where)
    if isinstance(image, PIL.Image.Image):
        return _pil_to_tensor(image, where)
    if not is_array(image):
        raise HfDetrInputTypeError(
            f"{where} is a {type(image).__name__}; expected a PIL image, a numpy array, a torch tensor or a file path."
        )
    if isinstance(image, np.ndarray):
        with warnings.catch_warnings():  # a read-only array (np.asarray of a PIL image) is fine: it is never written
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(image)
    else:
        tensor = image
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


def open_image(path: str | os.PathLike, where: str) -> PIL.Image.Image:
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
    """The form every image takes, in training, evaluation and inference. EXIF orientation is applied (boxes are
    given in the upright frame annotation tools show and ``datasets.Image`` decodes); transparency is composited onto
    white; 16- and 32-bit integer grayscale is taken as 0..65535 and scaled to 0..255 (PIL's ``convert`` would clip
    every value above 255 to white). An upright RGB image is returned as it is."""
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
    """uint8 stays uint8 (rounded)."""
    pixels = rgba.to(torch.float32)
    alpha = pixels[3:] / white
    rgb = pixels[:3] * alpha + white * (1.0 - alpha)
    return rgb.round_().to(torch.uint8) if rgba.dtype == torch.uint8 else rgb

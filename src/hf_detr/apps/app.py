"""`hf-detr app`: a Gradio page for a saved model, the one a Space runs too (`hub.push_to_hub(..., space=True)`).

An image tab (upload a file or pick one of a data set's examples; the picture with its boxes and masks, the
detections as a table and as JSON) and a video tab for short clips (the annotated MP4 and the detections per frame),
with one score slider. The predictions are `apps.predict`'s: `detect` for an image, `predict` for a video, so the
page shows what `hf-detr predict` writes. Gradio (the `app` extra, `pip install 'hf_detr[app]'`) is imported only
when the page is built.

Bad input (a file that is no image, an image too small or too large, a video too long) ends in a message on the
page naming the problem and the fix, never in an exception that leaves the page without an answer.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..modeling import HfDetrImageProcessor
from ..modeling.errors import HfDetrInputError
from .extras import require_extra
from .predict import (
    VIDEO_EXTENSIONS,
    Detections,
    _drawn,
    detect,
    detection_records,
    load_model,
    open_image,
    predict,
    require_av,
)

# Smaller than this on a side, an image is upscaled more than 50x to DETR's 800-pixel input: nothing to detect.
MIN_SIDE = 16
# Larger images take seconds to decode and gigabytes to hold; `hf-detr predict --tile` is made for them.
MAX_PIXELS = 50_000_000
TABLE_HEADERS = ["label", "score", "xmin", "ymin", "xmax", "ymax"]


def require_gradio() -> Any:
    """The `gradio` module, or an ImportError saying how to install it (the `app` extra)."""
    return require_extra("gradio", "the app is a Gradio page", "app", "gradio")


@dataclass(frozen=True)
class ImageResult:
    """What the image tab shows: the `picture` with its detections drawn (uint8 `[H, W, 3]`), the `table` rows
    (`TABLE_HEADERS`), the `detections` as `hf-detr predict` prints them (label, score, box in pixels; a
    segmentation model's also "mask", a COCO RLE) and a one-line `message`; an error leaves all but `message` empty."""

    picture: np.ndarray | None
    table: list[list[Any]]
    detections: list[dict[str, Any]] | None
    message: str


@dataclass(frozen=True)
class VideoResult:
    """What the video tab shows: the annotated MP4's path, the detections per frame (`detection_records`: "video",
    "frame", "time", "detections") and a one-line `message`; an error leaves all but `message` empty."""

    video: str | None
    frames: list[dict[str, Any]] | None
    message: str


def read_image(path: str | os.PathLike) -> tuple[Image.Image, str]:
    """The image file at `path` as upright RGB (`predict.open_image`) and the PIL mode it is stored in (e.g. "LA",
    two channels: gray and alpha). Its size is checked from the header before the pixels are decoded: a ValueError
    names a side under `MIN_SIDE` or more than `MAX_PIXELS` pixels."""
    name = Path(path).name
    try:
        with Image.open(path) as header:
            (width, height), mode = header.size, header.mode
    except Image.DecompressionBombError:  # PIL's own limit, above MAX_PIXELS
        raise _too_large(name, f"more than {2 * Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels") from None
    except (UnidentifiedImageError, OSError) as error:
        raise HfDetrInputError(
            f"{name} could not be read as an image ({error}); give a JPEG, PNG, WebP, BMP or TIFF file"
        ) from None
    if min(width, height) < MIN_SIDE:
        raise HfDetrInputError(
            f"{name} is {width} x {height} pixels; the model needs at least {MIN_SIDE} pixels on each "
            "side (give the original, larger image)"
        )
    if width * height > MAX_PIXELS:
        raise _too_large(name, f"{width} x {height} pixels")
    return open_image(path), mode


def _too_large(name: str, size: str) -> ValueError:
    return ValueError(
        f"{name} is too large ({size}); the app takes at most {MAX_PIXELS // 1_000_000} megapixels: "
        "downscale it, or run `hf-detr predict MODEL IMAGE --tile 800`, which detects in tiles"
    )


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise HfDetrInputError(f"threshold must be a score in [0, 1], got {threshold!r}")


def _video_frames(av: Any, path: Path) -> int | None:
    """The frame count the video's header states or implies (None when it states neither, or cannot be read:
    `predict` then reads it, and names an unreadable file)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return stream.frames
            seconds = container.duration / 1_000_000 if container.duration else None
            return round(seconds * stream.average_rate) if seconds and stream.average_rate else None
    except (av.FFmpegError, IndexError):
        return None


class DetectionApp:
    """The page's two actions on a loaded model (`predict.load_model`), callable from Python: `image(path,
    threshold)` and `video(path, threshold)`. `max_video_frames` bounds a clip (CPU inference runs about a frame a
    second at DETR's 800 pixels). The files the page serves (examples, annotated videos) go to `workdir`, a
    temporary folder removed with this object."""

    def __init__(self, model: torch.nn.Module, processor: HfDetrImageProcessor, max_video_frames: int = 300) -> None:
        if isinstance(max_video_frames, bool) or not isinstance(max_video_frames, int) or max_video_frames < 1:
            raise HfDetrInputError(f"max_video_frames must be a positive int, got {max_video_frames!r}")
        self.model, self.processor, self.max_video_frames = model, processor, max_video_frames
        self._workdir = tempfile.TemporaryDirectory(prefix="hf_detr_app_")
        self.workdir = Path(self._workdir.name)

    def image(self, path: str | os.PathLike | None, threshold: float = 0.5) -> ImageResult:
        """Detect in the image file at `path`; bad input gives an `ImageResult` with only its `message`."""
        try:
            _check_threshold(threshold)
            if path is None:
                raise HfDetrInputError("no image given: upload one, or pick an example")
            picture, mode = read_image(path)
            ((_, _, found),) = detect(self.model, self.processor, [picture], threshold)
        except (ValueError, TypeError) as error:
            return ImageResult(None, [], None, f"Error: {error}")
        id2label = self.model.config.id2label
        (record,) = detection_records([Detections.of(Path(path).name, picture, found)], id2label)
        table = [[d["label"], d["score"], *d["box"].values()] for d in record["detections"]]
        # other modes (gray, alpha, 16-bit) are converted as training converted them (upright_rgb): said, not hidden
        converted = "" if mode == "RGB" else f", stored as {mode}: read as RGB, as in training"
        message = (
            f"{len(table)} detection(s) with score >= {threshold:.2f} in {Path(path).name} "
            f"({picture.width} x {picture.height} pixels{converted})"
        )
        return ImageResult(_drawn(picture, found, id2label), table, record["detections"], message)

    def video(self, path: str | os.PathLike | None, threshold: float = 0.5) -> VideoResult:
        """Detect in every frame of the video file at `path` (at most `max_video_frames`), writing the annotated MP4;
        bad input gives a `VideoResult` with only its `message`."""
        try:
            _check_threshold(threshold)
            if path is None:
                raise HfDetrInputError("no video given: upload a short clip")
            path = Path(path)
            if path.suffix.lower() not in VIDEO_EXTENSIONS:
                raise HfDetrInputError(
                    f"{path.name} is not a video file ({', '.join(sorted(VIDEO_EXTENSIONS))}); images go "
                    "in the Image tab"
                )
            frames = _video_frames(require_av(), path)
            if frames is not None and frames > self.max_video_frames:
                raise HfDetrInputError(
                    f"{path.name} has {frames} frames; the app takes clips of at most "
                    f"{self.max_video_frames} (`hf-detr app --max-video-frames`), or run "
                    "`hf-detr predict MODEL VIDEO --out DIR` for long videos"
                )
            out = Path(tempfile.mkdtemp(dir=self.workdir))
            detections = predict(self.model, self.processor, [path], threshold, out, progress=False)
        except (ValueError, TypeError, ImportError) as error:
            return VideoResult(None, None, f"Error: {error}")
        found = sum(len(d.scores) for d in detections)
        message = f"{found} detection(s) with score >= {threshold:.2f} in {len(detections)} frame(s) of {path.name}"
        # the clip by its name, not by the server's copy of the upload
        records = detection_records(detections, self.model.config.id2label)
        frames = [{**record, "video": path.name} for record in records]
        return VideoResult(str(out / f"{path.stem}.mp4"), frames, message)


def example_images(
    dataset: str, split: str, count: int, folder: str | os.PathLike, load_options: Mapping[str, Any] | None = None
) -> list[str]:
    """The first `count` images of `split` of `dataset` (anything `hf-detr train --dataset` reads, with the loader's
    `load_options`: its box policy) saved as PNG files in `folder`, for the page's examples."""
    from ..data.sources import load_data
    from ..modeling.image_processing_hf_detr import upright_rgb

    data = load_data(dataset, [split], **(load_options or {}))[split]
    if len(data) == 0:
        raise HfDetrInputError(f"split {split!r} of {dataset} has no images to show as examples")
    paths = []
    for index in range(min(count, len(data))):
        path = Path(folder) / f"{split}_{index}.png"
        upright_rgb(data[index]["image"]).save(path)
        paths.append(str(path))
    return paths


def build_app(
    app: DetectionApp, title: str, examples: Sequence[str] = (), threshold: float = 0.5
) -> Any:  # a gradio.Blocks; Any keeps gradio an optional import
    """The Gradio page of `app` (see the module docstring), its score slider starting at `threshold`; `.launch()`
    serves it."""
    _check_threshold(threshold)
    gr = require_gradio()
    with gr.Blocks(title=title, analytics_enabled=False) as page:
        gr.Markdown(
            f"# {title}\nDETR object detection with hf_detr. Upload an image or a short video; the slider "
            "sets the lowest score shown."
        )
        score = gr.Slider(0.0, 1.0, value=threshold, step=0.01, label="Score threshold", elem_id="threshold")
        with gr.Tab("Image"):
            with gr.Row():
                with gr.Column():
                    image_file = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="image-input")
                    if examples:
                        gr.Examples(
                            [[path] for path in examples], inputs=[image_file], label="Examples from the data set"
                        )
                    detect_button = gr.Button("Detect", variant="primary")
                picture = gr.Image(
                    label="Detections", type="numpy", format="png", interactive=False, elem_id="image-output"
                )
            image_status = gr.Markdown(elem_id="image-status")
            table = gr.Dataframe(headers=TABLE_HEADERS, label="Detections", interactive=False, elem_id="image-table")
            image_json = gr.JSON(label="JSON", elem_id="image-json")
        with gr.Tab("Video"):
            with gr.Row():
                with gr.Column():
                    video_file = gr.Video(
                        label=f"Video (at most {app.max_video_frames} frames)",
                        sources=["upload"],
                        elem_id="video-input",
                    )
                    video_button = gr.Button("Detect", variant="primary")
                annotated = gr.Video(label="Detections", interactive=False, elem_id="video-output")
            video_status = gr.Markdown(elem_id="video-status")
            video_json = gr.JSON(label="JSON (per frame)", elem_id="video-json")

        def on_image(path: str | None, threshold: float) -> tuple[Any, ...]:
            result = app.image(path, threshold)
            return result.picture, result.table, result.detections, result.message

        def on_video(path: str | None, threshold: float) -> tuple[Any, ...]:
            result = app.video(path, threshold)
            return result.video, result.frames, result.message

        image_outputs = [picture, table, image_json, image_status]
        image_file.change(on_image, [image_file, score], image_outputs)
        detect_button.click(on_image, [image_file, score], image_outputs)
        score.release(on_image, [image_file, score], image_outputs)
        video_button.click(on_video, [video_file, score], [annotated, video_json, video_status])
    return page


def create_app(
    model: str | os.PathLike,
    dataset: str | None = None,
    split: str = "validation",
    examples: int = 8,
    threshold: float = 0.5,
    max_video_frames: int = 300,
    task: str | None = None,
    load_options: Mapping[str, Any] | None = None,
) -> Any:  # a gradio.Blocks
    """The page of `hf-detr app` and of a Space: `model` loaded by `predict.load_model`, the first `examples` images
    of `split` of `dataset` to pick from (`example_images`)."""
    require_gradio()  # the install hint before the model loads
    _check_threshold(threshold)
    app = DetectionApp(*load_model(model, task), max_video_frames=max_video_frames)
    paths = example_images(dataset, split, examples, app.workdir, load_options) if dataset is not None else []
    title = Path(model).name if Path(model).is_dir() else str(model)
    return build_app(app, title, paths, threshold)

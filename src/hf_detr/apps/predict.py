"""Detect objects with a saved model: image files, folders of images, videos, and large images cut into tiles.

`predict` runs a model on files, folders and videos; `detection_records` and `coco_results` are `hf-detr predict`'s
two JSON formats.

Batches hold images of one resized size only, so nothing is padded. DETR's pixel mask keeps padding out of the
transformer, but not out of the backbone: the convolutions near the image's right and bottom border see padded
pixels instead of their own zero padding, and the feature map's cells fall differently, so padding an image changes
its detections (by up to 0.06 in the logits and 0.4 % of the image's side in the boxes on the tests' tiny model).
Batching by size gives each image the detections it gets alone, whatever the batch size or the other images; a
video's frames and an image's tiles all share one size, and photographs of one camera do too.

Videos are read and written with PyAV (the `video` extra, `pip install 'hf_detr[video]'`), imported only when a
video is given.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.ops import box_convert, box_iou
from tqdm.auto import tqdm

from ..modeling import HfDetrImageProcessor
from ..modeling.errors import HfDetrInputError
from ..modeling.image_processing_hf_detr import upright_rgb
from ..modeling.segmentation_postprocessing import encode_rles
from .extras import require_extra
from .visualize import draw_detections

# found in folders (case-insensitive); an image file given by name may have any extension PIL reads
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})

# Images wait for others of their resized size up to this many batches in all; then the fullest size runs as a
# smaller batch, so that a folder of many different sizes holds a bounded number of images in memory.
_MAX_WAITING_BATCHES = 4

# post-processed: "scores" [n], "labels" [n] int64, "boxes" [n, 4] (x0, y0, x1, y1); a segmentation model's also
# "masks" [n, H, W] bool, at the picture's size
Found = dict[str, torch.Tensor]
Detector = Callable[[Iterable[Image.Image]], Iterator[tuple[int, Image.Image, Found]]]  # `detect` or `detect_tiled`


@dataclass(frozen=True)
class Detections:
    """What the model found in one image or video frame: `scores` `[n]`, `labels` `[n]` (int64) and `boxes`
    `[n, 4]` (x0, y0, x1, y1) in the pixels of the `height` x `width` image; a segmentation model's `masks`, one COCO
    RLE (`{"size": [height, width], "counts": str}`, `pycocotools.mask.decode` reads it) per detection, else None;
    `frame` (from 0) and `time` (seconds) for a video's frames, None for images."""

    source: str
    height: int
    width: int
    scores: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    masks: list[dict[str, Any]] | None = None
    frame: int | None = None
    time: float | None = None

    @classmethod
    def of(cls, source: str, picture: Image.Image, found: Found, **where: Any) -> Detections:
        """The detections `found` in `picture` (its masks, if any, encoded as RLEs: a folder's or a video's pixels
        would not fit in memory)."""
        masks = found.get("masks")
        fields = {name: found[name] for name in ("scores", "labels", "boxes")}
        return cls(
            source,
            picture.height,
            picture.width,
            **fields,
            masks=None if masks is None else encode_rles(masks),
            **where,
        )


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as upright RGB (`upright_rgb`: EXIF orientation, grayscale, 16-bit, transparency), as
    training saw its images; missing or unreadable files name the path."""
    path = Path(path)
    if not path.is_file():
        raise HfDetrInputError(f"image {path} does not exist or is not a file")
    try:
        with Image.open(path) as image:
            image.load()  # the pixels, before the file closes (an upright RGB image is returned as it is)
            return upright_rgb(image)
    except (UnidentifiedImageError, OSError) as error:
        raise HfDetrInputError(f"image {path} could not be read as an image: {error}") from error


def require_av() -> Any:
    """The `av` module (PyAV), or an ImportError saying how to install it (the `video` extra)."""
    return require_extra("av", "videos are read and written with PyAV", "video", "av")


def load_model(source: str | os.PathLike, task: str | None = None) -> tuple[Any, HfDetrImageProcessor]:
    """The model of `source` in eval mode, `hf_detr.create_model(source, task)`, and the image processor saved with
    it, checked first (inference must preprocess as training did): a missing one is an error saying how to save it."""
    # imported at the call: the one place a model is built, which tests replace
    from ..builder import create_image_processor, create_model

    processor = create_image_processor(source, required=True)
    return create_model(source, task).eval(), processor


def detect(
    model: torch.nn.Module,
    processor: HfDetrImageProcessor,
    pictures: Iterable[Image.Image],
    threshold: float = 0.5,
    batch_size: int = 1,
    nms_threshold: float | None = None,
) -> Iterator[tuple[int, Image.Image, Found]]:
    """Run the model on RGB `pictures` in batches of images of one resized size (none padded, see the module's
    docstring); yields `(index, picture, found)` as each batch completes, boxes in the picture's own pixels.

    The order is the input order when all pictures share one resized size (a video's frames, one image's tiles);
    otherwise a picture may wait for others of its size.
    """
    waiting: dict[tuple[int, int], list[tuple[int, Image.Image, Any]]] = {}
    for index, picture in enumerate(pictures):
        inputs = processor(images=picture, return_tensors="pt")
        size = tuple(inputs["pixel_values"].shape[-2:])
        waiting.setdefault(size, []).append((index, picture, inputs))
        if len(waiting[size]) == batch_size:
            yield from _run_batch(model, processor, waiting.pop(size), threshold, nms_threshold)
        elif sum(map(len, waiting.values())) > _MAX_WAITING_BATCHES * batch_size:
            largest = waiting.pop(max(waiting, key=lambda s: len(waiting[s])))
            yield from _run_batch(model, processor, largest, threshold, nms_threshold)
    for group in waiting.values():
        yield from _run_batch(model, processor, group, threshold, nms_threshold)


def _run_batch(
    model: torch.nn.Module,
    processor: HfDetrImageProcessor,
    group: list[tuple[int, Image.Image, Any]],
    threshold: float,
    nms_threshold: float | None = None,
) -> Iterator[tuple[int, Image.Image, Found]]:
    """One forward pass on same-size processed images; post-processed with each image's own (height, width), the
    masks too for a segmentation model (the batch is unpadded, so its masks cover the images exactly)."""
    indices, pictures, inputs = zip(*group)
    pixel_values = torch.cat([x["pixel_values"] for x in inputs]).to(model.device)
    pixel_mask = torch.cat([x["pixel_mask"] for x in inputs]).to(model.device)
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values, pixel_mask=pixel_mask)
    found = processor.post_process_object_detection(
        outputs,
        threshold=threshold,
        target_sizes=[(p.height, p.width) for p in pictures],
        nms_threshold=nms_threshold,
        return_masks=getattr(outputs, "pred_masks", None) is not None,
    )
    for index, picture, image_found in zip(indices, pictures, found):
        yield index, picture, {name: value.cpu() for name, value in image_found.items()}


def check_tiling(tile: int, overlap: float) -> None:
    """Raise a ValueError naming `tile` (a positive int) or `overlap` (a fraction in [0, 1)) when invalid."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise HfDetrInputError(f"tile must be a positive number of pixels (the side of a square tile), got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0.0 <= overlap < 1.0:
        raise HfDetrInputError(f"overlap must be a fraction of the tile in [0, 1) (e.g. 0.2), got {overlap!r}")


def tile_origins(length: int, tile: int, overlap: float) -> list[int]:
    """Where tiles of `tile` pixels start along a side of `length` pixels: the first at 0, the last at the border,
    spread evenly, so that neighbours share at least `overlap` of a tile. One tile at 0 when the side fits in one
    (the tile is then cut to `length`)."""
    check_tiling(tile, overlap)
    if length <= tile:
        return [0]
    stride = max(1, math.floor(tile * (1 - overlap)))
    gaps = math.ceil((length - tile) / stride)
    return [round(i * (length - tile) / gaps) for i in range(gaps + 1)]


def merge_tiles(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, tiles: torch.Tensor, iou_threshold: float = 0.5
) -> torch.Tensor:
    """Which detections of overlapping tiles to keep (indices, best score first): non-maximum suppression in which a
    detection is suppressed only by a kept, better-scoring one of the same label from ANOTHER tile whose IoU with it
    exceeds `iou_threshold`.

    boxes `[n, 4]` (x0, y0, x1, y1, one frame), scores `[n]`, labels `[n]`, tiles `[n]` (which tile found each).
    Within one tile, DETR's set prediction already gives each object one query, so two overlapping boxes of one tile
    are two objects and both stay; a duplicate can only come from two tiles seeing the same object. batched_nms cannot
    say this: boxes with equal keys meet, and "equal key" is transitive where "from different tiles" is not.
    """
    order = scores.argsort(descending=True, stable=True)
    boxes, labels, tiles = boxes[order], labels[order], tiles[order]
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if suppressed[i]:
            continue
        duplicates = box_iou(boxes[i : i + 1], boxes[i + 1 :])[0] > iou_threshold
        suppressed[i + 1 :] |= duplicates & (labels[i + 1 :] == labels[i]) & (tiles[i + 1 :] != tiles[i])
    return order[~suppressed]


def detect_tiled(
    model: torch.nn.Module,
    processor: HfDetrImageProcessor,
    pictures: Iterable[Image.Image],
    tile: int,
    overlap: float = 0.2,
    threshold: float = 0.5,
    batch_size: int = 1,
    iou_threshold: float = 0.5,
    nms_threshold: float | None = None,
) -> Iterator[tuple[int, Image.Image, Found]]:
    """`detect` on `tile` x `tile` crops of each picture (`tile_origins` on both sides, batched), the boxes moved
    back to the picture's pixels and merged across tiles by `merge_tiles`; yields `(index, picture, found)` in input
    order, best score first.

    Small objects are seen at the tile's resolution instead of the whole image's. An object larger than the overlap
    can be cut by a tile border, and its parts in two tiles may overlap too little to merge. A segmentation model's
    masks are placed in the picture at their tile's position.
    """
    for index, picture in enumerate(pictures):
        width, height = min(tile, picture.width), min(tile, picture.height)
        origins = [
            (x, y)
            for y in tile_origins(picture.height, tile, overlap)
            for x in tile_origins(picture.width, tile, overlap)
        ]
        crops = (picture.crop((x, y, x + width, y + height)) for x, y in origins)
        found = sorted(detect(model, processor, crops, threshold, batch_size, nms_threshold), key=lambda item: item[0])
        shifts = torch.tensor(origins, dtype=torch.float32).repeat(1, 2)  # [tiles, 4]: (x, y, x, y)
        boxes = torch.cat([f["boxes"] + shifts[t] for t, _, f in found])
        scores = torch.cat([f["scores"] for _, _, f in found])
        labels = torch.cat([f["labels"] for _, _, f in found])
        tiles = torch.cat([torch.full((len(f["scores"]),), t) for t, _, f in found])
        keep = merge_tiles(boxes, scores, labels, tiles, iou_threshold)
        merged = {"scores": scores[keep], "labels": labels[keep], "boxes": boxes[keep]}
        if found and "masks" in found[0][2]:  # only the kept detections' masks are placed in picture-sized maps
            tile_masks = torch.cat([f["masks"] for _, _, f in found])
            merged["masks"] = torch.zeros(len(keep), picture.height, picture.width, dtype=torch.bool)
            for placed, k in zip(merged["masks"], keep.tolist()):
                x, y = origins[tiles[k]]
                placed[y : y + height, x : x + width] = tile_masks[k]
        yield index, picture, merged


@dataclass(frozen=True)
class _Input:
    path: Path
    video: bool
    name: Path  # its path under out_dir, without the suffix

    @property
    def output(self) -> Path:
        """Its annotated copy's path under out_dir (`name` may hold dots: "a.v2" gives "a.v2.png")."""
        return self.name.with_name(self.name.name + (".mp4" if self.video else ".png"))


def collect_inputs(paths: Sequence[str | os.PathLike]) -> list[_Input]:
    """Files in the order given; a folder's images (by extension, searched recursively) in sorted order, named by
    their path inside the folder; videos by extension. Missing paths and empty folders raise a ValueError."""
    inputs = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            if not files:
                raise HfDetrInputError(f"folder {path} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            inputs += [_Input(f, False, f.relative_to(path).with_suffix("")) for f in files]
        elif path.is_file():
            inputs.append(_Input(path, path.suffix.lower() in VIDEO_EXTENSIONS, Path(path.stem)))
        else:
            raise HfDetrInputError(
                f"image {path} does not exist or is not a file (give image or video files, or folders)"
            )
    return inputs


def _check_readable(av: Any, item: _Input) -> None:
    """Fail on an unreadable file before the model runs (reads the image's header, or the video's streams)."""
    if not item.video:
        try:
            Image.open(item.path).close()
        except (UnidentifiedImageError, OSError) as error:
            raise HfDetrInputError(f"image {item.path} could not be read as an image: {error}") from error
        return
    try:
        with av.open(str(item.path)) as container:
            if not container.streams.video:
                raise HfDetrInputError(f"video {item.path} has no video stream")
    except av.FFmpegError as error:
        raise HfDetrInputError(f"video {item.path} could not be read as a video: {error}") from error


def _check_outputs(inputs: list[_Input]) -> None:
    """Two inputs must not write the same picture (e.g. a/x.jpg and b/x.png, both given by name)."""
    seen: dict[Path, Path] = {}
    for item in inputs:
        name = item.output
        if name in seen:
            raise HfDetrInputError(
                f"{seen[name]} and {item.path} would both be written to {name} in the output folder; "
                "predict them in separate runs, or give the folder that holds both"
            )
        seen[name] = item.path


def predict(
    model: torch.nn.Module,
    processor: HfDetrImageProcessor,
    paths: Sequence[str | os.PathLike],
    threshold: float = 0.5,
    out_dir: str | os.PathLike | None = None,
    batch_size: int = 1,
    tile: int | None = None,
    overlap: float = 0.2,
    tile_iou: float = 0.5,
    progress: bool | None = None,
    nms_threshold: float | None = None,
) -> list[Detections]:
    """Detections of every image and video frame of `paths` (see `collect_inputs`), in that order; with `tile`, each
    image or frame is cut into tiles (`detect_tiled`).

    `model` needs `config.id2label` and `device`, and returns `logits` and `pred_boxes` (an
    `HfDetrForObjectDetection`, see `load_model`), and `pred_masks` for masks (an `HfDetrForSegmentation`). With
    `out_dir`: `<name>.png` per image and `<stem>.mp4` per video (an image of a folder keeps its sub-folders),
    `results.json` (`coco_results`) and `images.json` (its images and categories). `progress` None: a bar when stderr
    is a terminal. `nms_threshold`: `post_process_object_detection`'s class-wise NMS fallback (None: none, as DETR).
    """
    if not 0.0 <= threshold <= 1.0:
        raise HfDetrInputError(f"threshold must be in [0, 1], got {threshold}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise HfDetrInputError(f"batch_size must be a positive int, got {batch_size!r}")
    if tile is not None:
        check_tiling(tile, overlap)
    if not 0.0 <= tile_iou <= 1.0:
        raise HfDetrInputError(f"tile_iou must be in [0, 1], got {tile_iou}")
    inputs = collect_inputs(paths)
    av = require_av() if any(item.video for item in inputs) else None
    for item in inputs:  # every path is checked before the model runs
        _check_readable(av, item)
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        _check_outputs(inputs)
        out.mkdir(parents=True, exist_ok=True)
    id2label = model.config.id2label
    disable = None if progress is None else not progress

    def run(pictures: Iterable[Image.Image]) -> Iterator[tuple[int, Image.Image, Found]]:
        if tile is None:
            return detect(model, processor, pictures, threshold, batch_size, nms_threshold)
        return detect_tiled(model, processor, pictures, tile, overlap, threshold, batch_size, tile_iou, nms_threshold)

    results: list[list[Detections]] = [[] for _ in inputs]
    images = [i for i, item in enumerate(inputs) if not item.video]
    with tqdm(total=len(images), unit="image", disable=True if not images else disable) as bar:
        for k, picture, found in run(open_image(inputs[i].path) for i in images):
            item = inputs[images[k]]
            results[images[k]] = [Detections.of(str(item.path), picture, found)]
            if out is not None:
                target = out / item.output
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_drawn(picture, found, id2label)).save(target)
            bar.update()
    for i, item in enumerate(inputs):
        if item.video:
            target = None if out is None else out / item.output
            results[i] = _predict_video(av, run, item.path, target, id2label, disable)
    detections = [found for per_input in results for found in per_input]
    if out is not None:
        coco = coco_results(detections, id2label)
        (out / "results.json").write_text(json.dumps(coco["results"]))
        (out / "images.json").write_text(json.dumps({"images": coco["images"], "categories": coco["categories"]}))
    return detections


def _drawn(picture: Image.Image, found: Found, id2label: Mapping[int, str]) -> Any:
    """The picture with its detections (and masks) drawn, as a uint8 `[H, W, 3]` array."""
    drawn = draw_detections(
        picture, found["boxes"], found["labels"].tolist(), id2label, found["scores"], masks=found.get("masks")
    )
    return drawn.permute(1, 2, 0).numpy()


def _predict_video(
    av: Any,
    run: Detector,
    path: Path,
    target: Path | None,
    id2label: Mapping[int, str],
    disable: bool | None,
) -> list[Detections]:
    """Detections per frame of the first video stream; with `target`, the annotated frames as an H.264 MP4 of the
    same size and frame rate (frames numbered in order: a variable frame rate becomes its average)."""
    results: list[Detections] = []
    with ExitStack() as stack:
        source = stack.enter_context(av.open(str(path)))
        stream = source.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        times: list[float | None] = []

        def frames() -> Iterator[Image.Image]:
            # every frame at the stream's size, so all share one batch size and come back in order
            for frame in source.decode(stream):
                times.append(frame.time)
                yield frame.to_image(width=width, height=height)

        if target is not None:
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise HfDetrInputError(f"video {path} states no frame rate, so its annotated copy cannot keep it")
            writer = stack.enter_context(av.open(str(target), "w"))
            encoder = writer.add_stream("h264", rate=rate)
            encoder.width, encoder.height = width, height
            # 4:2:0 (what every player reads) needs even sides; odd ones keep full chroma
            encoder.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        with tqdm(total=stream.frames or None, unit="frame", desc=path.name, disable=disable) as bar:
            for index, picture, found in run(frames()):
                results.append(Detections.of(str(path), picture, found, frame=index, time=times[index]))
                if target is not None:
                    frame = av.VideoFrame.from_ndarray(_drawn(picture, found, id2label), format="rgb24")
                    writer.mux(encoder.encode(frame))
                bar.update()
        if target is not None:
            writer.mux(encoder.encode(None))  # the frames the encoder still holds
    return results


def _rounded(values: Iterable[float], digits: int) -> list[float]:
    return [round(float(v), digits) for v in values]


def detection_records(detections: Sequence[Detections], id2label: Mapping[int, str]) -> list[dict[str, Any]]:
    """`hf-detr predict`'s default JSON: per image `{"image": path, "detections": [{"label", "score", "box": {"xmin",
    "ymin", "xmax", "ymax"}}]}` (a segmentation model's detections also with `"mask"`, a COCO RLE), per video frame
    `{"video": path, "frame", "time", "detections"}`."""
    records = []
    for found in detections:
        where = (
            {"image": found.source}
            if found.frame is None
            else {"video": found.source, "frame": found.frame, "time": found.time}
        )
        items = [
            {
                "label": id2label.get(int(label), str(int(label))),
                "score": round(float(score), 4),
                "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), _rounded(box, 2))),
            }
            for score, label, box in zip(found.scores, found.labels, found.boxes)
        ]
        for item, mask in zip(items, found.masks or ()):
            item["mask"] = mask
        records.append({**where, "detections": items})
    return records


def coco_results(detections: Sequence[Detections], id2label: Mapping[int, str]) -> dict[str, list[dict[str, Any]]]:
    """The detections in COCO's results format: `{"images": [{"id", "file_name", "height", "width"} (+ "frame" for a
    video's frames)], "categories": [{"id", "name"}] (the model's id2label), "results": [{"image_id", "category_id",
    "bbox": [x, y, width, height], "score"}]}` (with a segmentation model's masks also `"segmentation"`, a COCO RLE);
    image ids count from 1 in the order of `detections`, and "results" alone is what pycocotools' `COCO.loadRes`
    reads (for `iouType="bbox"`, and `"segm"` with masks)."""
    images, results = [], []
    for image_id, found in enumerate(detections, start=1):
        entry = {"id": image_id, "file_name": found.source, "height": found.height, "width": found.width}
        images.append(entry if found.frame is None else {**entry, "frame": found.frame})
        found_results = [
            {"image_id": image_id, "category_id": int(label), "bbox": _rounded(box, 2), "score": round(float(score), 4)}
            for score, label, box in zip(found.scores, found.labels, box_convert(found.boxes, "xyxy", "xywh"))
        ]
        for result, mask in zip(found_results, found.masks or ()):
            result["segmentation"] = mask
        results += found_results
    categories = [{"id": int(i), "name": name} for i, name in sorted(id2label.items())]
    return {"images": images, "categories": categories, "results": results}

"""The README.md of an export folder: its files, each graph's inputs and outputs, and how to run them with
onnxruntime."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .onnx_graph import MAX_SIDE, MIN_SIDE

__all__ = ["export_readme"]


def _size_rule(processor: Any) -> str:
    size = processor.size
    if not processor.do_resize:
        return "not resized"
    if size.shortest_edge is not None:
        return f"resized to a shorter side of {size.shortest_edge} pixels, the longer side at most {size.longest_edge}"
    if size.max_height is not None:
        return f"resized to fit {size.max_height} x {size.max_width} pixels (height x width), aspect ratio kept"
    return f"resized to {size.height} x {size.width} pixels (height x width)"


def _table(rows: list[tuple[str, str, str, str]]) -> str:
    """A Markdown table of a graph's inputs and outputs."""
    lines = ["| | name | type and shape | meaning |", "|---|---|---|---|"]
    return "\n".join(lines + [f"| {kind} | `{name}` | {shape} | {meaning} |" for kind, name, shape, meaning in rows])


def _raw_section(file: str, masks: bool) -> str:
    rows = [
        (
            "input",
            "pixel_values",
            "float32 `[batch, 3, height, width]`",
            "images resized, normalized and padded by the image processor (`preprocessor_config.json`)",
        ),
        ("input", "pixel_mask", "int64 `[batch, height, width]`", "1 on image pixels, 0 on padding"),
        ("output", "logits", "float32 `[batch, queries, classes + 1]`", 'class logits; the last class is "no object"'),
        (
            "output",
            "pred_boxes",
            "float32 `[batch, queries, 4]`",
            "boxes (center x, center y, width, height) relative to each image's resized size before padding",
        ),
    ]
    if masks:
        rows.append(
            (
                "output",
                "pred_masks",
                "float32 `[batch, queries, height / 4, width / 4]`",
                "mask logits of each query (probability = sigmoid)",
            )
        )
    return f"""## `{file}`: the model

{_table(rows)}

Batch size, height and width are dynamic. With hf_detr installed, the image processor prepares the inputs and turns
the outputs into detections:

```python
import onnxruntime
import torch
from PIL import Image
from hf_detr import HfDetrImageProcessor
from hf_detr.evaluation.metrics import PostProcessInputs

processor = HfDetrImageProcessor.from_pretrained("this_folder")
session = onnxruntime.InferenceSession("this_folder/{file}")
images = [Image.open("street.jpg").convert("RGB")]
inputs = processor(images=images, return_tensors="np")
names = [output.name for output in session.get_outputs()]
outputs = dict(zip(names, session.run(None, dict(inputs))))
detections = processor.post_process_object_detection(
    PostProcessInputs(logits=torch.from_numpy(outputs["logits"]), pred_boxes=torch.from_numpy(outputs["pred_boxes"])),
    threshold=0.5, target_sizes=[image.size[::-1] for image in images],
)
```
"""


def _end_to_end_section(file: str, processor: Any, masks: bool, max_detections: int) -> str:
    rows = [
        (
            "input",
            "images",
            "uint8 `[batch, H, W, 3]`",
            "RGB images, image i in the top-left `sizes[i]` of the array (the rest is ignored)",
        ),
        ("input", "sizes", "int64 `[batch, 2]`", f"each image's (height, width), from {MIN_SIDE} to {MAX_SIDE} pixels"),
        (
            "output",
            "scores",
            "float32 `[batch, k]`",
            f"the k = {max_detections} best detections of each image, best first",
        ),
        ("output", "labels", "int64 `[batch, k]`", "class ids (`id2label` in `config.json`)"),
        ("output", "boxes", "float32 `[batch, k, 4]`", "(x0, y0, x1, y1) in the image's own pixels"),
    ]
    if masks:
        rows.append(
            (
                "output",
                "masks",
                "bool `[batch, k, H, W]`",
                "each detection's mask; image i's in its top-left "
                "`sizes[i]`, H and W the largest height and width of `sizes`",
            )
        )
    mask_read, mask_key = (", masks", ', "masks"') if masks else ("", "")
    return f"""## `{file}`: images in, detections out

The image processor's preprocessing (images {_size_rule(processor)}, antialiased bilinear as the processor does it,
rescaled, normalized, padded to the batch's largest image with the pixel mask) and the post-processing
(`post_process_object_detection` with `top_k={max_detections}`) are inside the graph: a deployment needs no Python
preprocessing.

{_table(rows)}

Keep the detections whose score passes your threshold. The graph does not check its inputs: sides outside
{MIN_SIDE}-{MAX_SIDE} pixels or other than 3 channels are for the caller to refuse (`OnnxDetector` below does).

```python
import json
import numpy as np
import onnxruntime
from PIL import Image

session = onnxruntime.InferenceSession("this_folder/{file}")
id2label = json.load(open("this_folder/config.json"))["id2label"]
paths = ["street.jpg", "park.png"]
pictures = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
sizes = np.array([picture.shape[:2] for picture in pictures], dtype=np.int64)
images = np.zeros((len(pictures), *sizes.max(0), 3), dtype=np.uint8)  # padded to the largest
for image, picture in zip(images, pictures):
    image[: picture.shape[0], : picture.shape[1]] = picture
scores, labels, boxes{mask_read} = session.run(None, {{"images": images, "sizes": sizes}})
for i, path in enumerate(paths):
    for score, label, box in zip(scores[i], labels[i], boxes[i]):
        if score >= 0.5:
            print(path, id2label[str(label)], round(float(score), 3), box.round(1).tolist())
```

With hf_detr installed, `OnnxDetector` does the batching and checks each image:

```python
from hf_detr.hub.onnx_runtime import OnnxDetector

detector = OnnxDetector("this_folder/{file}")
detections = detector([Image.open("street.jpg")], threshold=0.5)  # per image: {{"scores", "labels", "boxes"{mask_key}}}
```
"""


def export_readme(
    model: Any, processor: Any, files: Mapping[str, str], dtype: str, max_detections: int, fp32_ops: Sequence[str]
) -> str:
    """The README of an export folder holding the graphs `files` (`{"raw": file name[, "end_to_end": file name]}`)
    of `model` in `dtype`, float16 ones with `fp32_ops` kept in float32."""
    masks = model.config.predicts_masks
    listing = [
        f"- `{files['raw']}`: the model, `(pixel_values, pixel_mask) -> (logits, pred_boxes"
        f"{', pred_masks' if masks else ''})`."
    ]
    sections = [_raw_section(files["raw"], masks)]
    if "end_to_end" in files:
        listing.append(
            f"- `{files['end_to_end']}`: preprocessing, model and post-processing in one graph, "
            f"`(images, sizes) -> (scores, labels, boxes{', masks' if masks else ''})`."
        )
        sections.append(_end_to_end_section(files["end_to_end"], processor, masks, max_detections))
    listing += [
        "- `config.json`: the model's configuration, with the class names (`id2label`).",
        "- `preprocessor_config.json`: the image processor (`HfDetrImageProcessor.from_pretrained(this_folder)`).",
        "- `validation.json`: the graphs under onnxruntime against the PyTorch model: largest differences of the "
        "outputs on a batch of images of mixed sizes and, when validated on a data set, COCO mAP of both (the "
        "end-to-end graph against the model kept to as many detections).",
    ]
    precision = (
        "float32"
        if dtype == "fp32"
        else (
            "float16 weights and arithmetic, except the operators that lose accuracy in half precision "
            f"({', '.join(fp32_ops)}), which run in float32 behind casts, as do the end-to-end graph's "
            "preprocessing and post-processing; inputs and outputs keep their types. onnxruntime's CPU provider runs "
            "most float16 operators through casts to float32: use a GPU provider (CUDAExecutionProvider) for its speed"
        )
    )
    return "\n".join(
        [
            f"# {type(model).__name__} exported to ONNX",
            "",
            f"Written by `hf-detr export` ({dtype}: {precision}). {model.config.num_labels} classes, "
            f"{model.config.num_queries} queries.",
            "",
            *listing,
            "",
            *sections,
        ]
    )

"""ONNX export with `torch.onnx.export(dynamo=True)`, dynamic batch and image size: the raw graph
`(pixel_values, pixel_mask) -> (logits, pred_boxes[, pred_masks])` and the end-to-end graph of
`onnx_graph.EndToEndGraph` (uint8 images in, detections out), in float32 or float16, and the export folder that
`hf-detr export` writes (the graphs, the model's config and image processor, a README).

The end-to-end graph is the raw graph joined with the preprocessing and the post-processing, each exported on its
own: the model is exported once for both graphs, and the data-dependent padded size of a batch stays out of the
model's export. A float16 model is the float32 export converted by onnxruntime's converter, with the operators that
lose accuracy in half precision (`FP32_OPS`: normalizations, softmax, the sigmoid of the boxes, top-k) kept in
float32 behind casts and its inputs and outputs float32; the preprocessing and post-processing around it stay
float32 (their pixel and box arithmetic must be exact).
"""

from __future__ import annotations

import collections
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..modeling.errors import HfDetrInputError
from ..modeling.modeling_hf_detr import HfDetrForObjectDetection
from .export_readme import export_readme
from .onnx_graph import MAX_SIDE, MIN_SIDE, EndToEndGraph, check_max_detections

__all__ = [
    "DTYPES",
    "END_TO_END_FILE",
    "FP32_OPS",
    "RAW_FILE",
    "ExportInfo",
    "export_end_to_end",
    "export_folder",
    "export_onnx",
    "graph_metadata",
    "to_float16",
]

DTYPES = ("fp32", "fp16")
# what float16 loses: normalization statistics, exponentials, the boxes' sigmoid, the order of close scores
FP32_OPS = ("LayerNormalization", "GroupNormalization", "InstanceNormalization", "Softmax", "Sigmoid", "TopK")
RAW_FILE, END_TO_END_FILE = "model.onnx", "model_end_to_end.onnx"
# the keys of the graph's metadata (onnxruntime: session.get_modelmeta().custom_metadata_map)
METADATA_PREFIX = "hf_detr."


class _InferenceGraph(nn.Module):
    """`(pixel_values, pixel_mask) -> (logits, pred_boxes[, pred_masks])`: the part of the model a deployment runs."""

    def __init__(self, model: HfDetrForObjectDetection) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(pixel_values, pixel_mask)
        masks = (outputs.pred_masks,) if getattr(outputs, "pred_masks", None) is not None else ()
        return outputs.logits, outputs.pred_boxes, *masks


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise HfDetrInputError(f"dtype must be one of {DTYPES} (--dtype), got {dtype!r}.")


def export_onnx(
    model: HfDetrForObjectDetection,
    path: str | os.PathLike,
    example_size: tuple[int, int] = (512, 512),
    max_side: int = 4096,
    dtype: str = "fp32",
    source: str | None = None,
) -> str:
    """The raw graph of `model` saved at `path`: inputs `pixel_values` float32 `[batch, channels, height, width]` and
    `pixel_mask` int64 `[batch, height, width]`; outputs `logits` `[batch, queries, num_labels + 1]`, `pred_boxes`
    `[batch, queries, 4]` and, for a segmentation model, `pred_masks` `[batch, queries, height / 4, width / 4]`, all
    float32 (also with `dtype="fp16"`, whose weights and arithmetic are float16 but for `FP32_OPS`). Batch size,
    height and width are dynamic (sides from 64 to `max_side` pixels). `source` (the model's folder or Hub id) goes
    into the graph's metadata (`graph_metadata`). Needs the `onnx` extra (`pip install hf_detr[onnx]`).
    """
    _check_dtype(dtype)
    raw = _raw_graph(model, dtype, example_size, max_side)
    return _save(*raw, path, {"graph": "raw", "dtype": dtype, "source": source})


def _raw_graph(
    model: HfDetrForObjectDetection, dtype: str, example_size: tuple[int, int] = (512, 512), max_side: int = 4096
) -> tuple[Any, dict[str, int]]:
    """The raw graph's ModelProto (float16 for `dtype="fp16"`) and the operators it keeps in float32."""
    height, width = example_size
    pixel_values = torch.zeros(2, model.config.num_channels, height, width)
    pixel_mask = torch.ones(2, height, width, dtype=torch.long)
    pixel_mask[1, :, width // 2 :] = 0  # trace the padded path, not a constant all-ones mask
    batch = torch.export.Dim("batch", min=1, max=1024)
    dim_h = torch.export.Dim("height", min=64, max=max_side)
    dim_w = torch.export.Dim("width", min=64, max=max_side)
    proto = _export(
        _InferenceGraph(model).eval(),
        (pixel_values, pixel_mask),
        ["pixel_values", "pixel_mask"],
        ["logits", "pred_boxes"] + (["pred_masks"] if model.config.predicts_masks else []),
        {"pixel_values": {0: batch, 2: dim_h, 3: dim_w}, "pixel_mask": {0: batch, 1: dim_h, 2: dim_w}},
    )
    return to_float16(proto) if dtype == "fp16" else (proto, {})


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    inputs: list[str],
    outputs: list[str],
    dynamic_shapes: dict[str, dict[int, Any]],
) -> Any:
    return torch.onnx.export(
        module, args, input_names=inputs, output_names=outputs, dynamo=True, dynamic_shapes=dynamic_shapes
    ).model_proto


def export_end_to_end(
    model: HfDetrForObjectDetection,
    processor: Any,
    path: str | os.PathLike,
    max_detections: int = 100,
    dtype: str = "fp32",
    source: str | None = None,
) -> str:
    """`onnx_graph.EndToEndGraph(model, processor, max_detections)` saved at `path` as one graph: inputs `images`
    uint8 `[batch, height, width, 3]` (RGB, each image in the top-left of the padded array) and `sizes` int64
    `[batch, 2]` (each image's height and width, from `MIN_SIDE` to `MAX_SIDE`); outputs `scores` float32
    `[batch, max_detections]`, `labels` int64, `boxes` float32 `[batch, max_detections, 4]` (x0, y0, x1, y1 pixels of
    each image) and, for a segmentation model, `masks` bool `[batch, max_detections, H, W]` (H, W: the largest height
    and width of `sizes`).
    """
    _check_dtype(dtype)
    check_max_detections(max_detections, model.config.num_queries)
    graph = _end_to_end_graph(model, processor, _raw_graph(model, dtype), max_detections)
    return _save(*graph, path, _end_to_end_metadata(dtype, source, max_detections))


def _end_to_end_metadata(dtype: str, source: str | None, max_detections: int) -> dict[str, Any]:
    return {
        "graph": "end_to_end",
        "dtype": dtype,
        "source": source,
        "max_detections": max_detections,
        "min_side": MIN_SIDE,
        "max_side": MAX_SIDE,
    }


def _end_to_end_graph(
    model: HfDetrForObjectDetection, processor: Any, raw: tuple[Any, dict[str, int]], max_detections: int
) -> tuple[Any, dict[str, int]]:
    """The end-to-end ModelProto: `Preprocess` and `Postprocess` exported on their own (float32: pixel and box
    arithmetic) and joined to the `raw` graph, so the model is exported once for both graphs; and the operators kept
    in float32."""
    from onnx import compose

    graph = EndToEndGraph(model, processor, max_detections).eval()
    masks = graph.postprocess.masks
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 128, 128, 3), dtype=torch.uint8, generator=generator)
    sizes = torch.tensor([[96, 128], [128, 80]])
    batch = torch.export.Dim("batch", min=1, max=1024)
    side = {name: torch.export.Dim(name, min=MIN_SIDE, max=MAX_SIDE) for name in ("height", "width")}
    pre = _export(
        graph.preprocess,
        (images, sizes),
        ["images", "sizes"],
        ["pixel_values", "pixel_mask", "clamped_sizes", "resized"],
        {"images": {0: batch, 1: side["height"], 2: side["width"]}, "sizes": {0: batch}},
    )

    with torch.no_grad():
        pixel_values, pixel_mask, sizes, resized = graph.preprocess(images, sizes)
        model_outputs = _InferenceGraph(model)(pixel_values, pixel_mask)
    names = ["logits", "pred_boxes", "sizes", "resized"] + (["pred_masks"] if masks else [])
    dynamic: dict[str, dict[int, Any]] = {name: {0: batch} for name in names}
    if masks:
        dynamic["pred_masks"] = {0: batch, 2: torch.export.Dim("mask_height"), 3: torch.export.Dim("mask_width")}
    post = _export(
        graph.postprocess,
        (*model_outputs[:2], sizes, resized, *model_outputs[2:]),
        names,
        ["scores", "labels", "boxes"] + (["masks"] if masks else []),
        dynamic,
    )

    pre = compose.add_prefix(pre, "preprocess/", rename_inputs=False)
    model_proto = _prefix_dims(compose.add_prefix(raw[0], "model/"), "model/")
    named = {}
    if masks:  # the masks' data-dependent sides, named for what they are
        dims = post.graph.output[3].type.tensor_type.shape.dim
        named = {dims[2].dim_param: "max_height", dims[3].dim_param: "max_width"}
    post = _prefix_dims(compose.add_prefix(post, "postprocess/", rename_outputs=False), "postprocess/", named)
    joined = compose.merge_models(
        pre, model_proto, io_map=[(f"preprocess/{name}", f"model/{name}") for name in ("pixel_values", "pixel_mask")]
    )
    sources = {"sizes": "preprocess/clamped_sizes", "resized": "preprocess/resized"}
    io_map = [(sources.get(name, f"model/{name}"), f"postprocess/{name}") for name in names]
    kept = dict(raw[1])
    if kept:  # a float16 model: the preprocessing and post-processing around it stayed float32
        around = [*pre.graph.node, *post.graph.node]
        kept = collections.Counter(kept) + collections.Counter(n.op_type for n in around if n.op_type in FP32_OPS)
        kept = {**dict(sorted(kept.items())), "preprocessing and post-processing nodes": len(around)}
    return compose.merge_models(joined, post, io_map=io_map), kept


def _prefix_dims(proto: Any, prefix: str, named: dict[str, str] | None = None) -> Any:
    """`proto` with `prefix` before its symbolic dimension names (or the name `named` gives) but the batch's: each
    graph names its own sizes (height, width, data-dependent ones), and onnxruntime takes equal names in the joined
    graph for equal sizes."""
    graph, named = proto.graph, named or {}
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param and dim.dim_param != "batch":
                dim.dim_param = named.get(dim.dim_param, prefix + dim.dim_param)
    return proto


def _save(proto: Any, kept: dict[str, int], path: str | os.PathLike, metadata: dict[str, Any]) -> str:
    """Save `proto` at `path` with `metadata` and the operators `kept` in float32 under `METADATA_PREFIX` keys."""
    import onnx

    for key, value in {**metadata, "fp32_layers": kept}.items():
        proto.metadata_props.add(key=METADATA_PREFIX + key, value=json.dumps(value))
    onnx.save(proto, str(path))
    return str(path)


def to_float16(proto: Any) -> tuple[Any, dict[str, int]]:
    """`proto` (a graph of the model alone) with float16 weights and arithmetic, except the `FP32_OPS` nodes, which
    stay float32 behind casts; inputs and outputs keep their types. Returns the graph and the number of nodes of each
    operator type kept in float32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxscript import ir

    kept = collections.Counter(node.op_type for node in proto.graph.node if node.op_type in FP32_OPS)
    converted = ir.from_proto(
        convert_float_to_float16(proto, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP32_OPS])
    )
    converted.graph.sort()  # the converter appends its casts at the end; ONNX wants producers before consumers
    return ir.to_proto(converted), dict(sorted(kept.items()))


@dataclass(frozen=True)
class ExportInfo:
    """What `export_folder` wrote: the folder, its graphs (`"raw"`, and `"end_to_end"` when asked) and their dtype."""

    out_dir: Path
    graphs: dict[str, Path]
    dtype: str


def export_folder(
    model: HfDetrForObjectDetection,
    processor: Any,
    out_dir: str | os.PathLike,
    *,
    dtype: str = "fp32",
    end_to_end: bool = False,
    max_detections: int = 100,
    source: str | None = None,
) -> ExportInfo:
    """Write `out_dir`: the raw graph `model.onnx` and, with `end_to_end`, `model_end_to_end.onnx` (the same model
    exported once, inside both), `config.json` (the model's labels and settings), `preprocessor_config.json` and a
    `README.md` saying how to run the graphs with onnxruntime. `source` (the model's folder or Hub id) is recorded in
    the graphs' metadata, so that `hf-detr export --validate` finds the PyTorch model to compare with."""
    _check_dtype(dtype)
    if end_to_end:  # before the slow export
        check_max_detections(max_detections, model.config.num_queries)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    raw = _raw_graph(model, dtype)
    graphs = {}
    if end_to_end:  # joined before the raw graph gets its metadata, which the joined graph would inherit
        joined = _end_to_end_graph(model, processor, raw, max_detections)
        graphs["end_to_end"] = Path(
            _save(*joined, out / END_TO_END_FILE, _end_to_end_metadata(dtype, source, max_detections))
        )
    graphs = {"raw": Path(_save(*raw, out / RAW_FILE, {"graph": "raw", "dtype": dtype, "source": source})), **graphs}
    if not end_to_end:  # an earlier export's, which validation would take for this one's
        (out / END_TO_END_FILE).unlink(missing_ok=True)
    # the JSON files alone: save_pretrained would also copy the model's Python code, which no graph needs
    model.config.to_json_file(out / "config.json")
    processor.to_json_file(out / "preprocessor_config.json")
    files = {kind: path.name for kind, path in graphs.items()}
    (out / "README.md").write_text(export_readme(model, processor, files, dtype, max_detections, FP32_OPS))
    return ExportInfo(out, graphs, dtype)


def graph_metadata(session: Any) -> dict[str, Any]:
    """The hf_detr metadata of an onnxruntime session's graph (graph kind, dtype, max_detections, source, ...)."""
    metadata = session.get_modelmeta().custom_metadata_map
    return {
        key[len(METADATA_PREFIX) :]: json.loads(value)
        for key, value in metadata.items()
        if key.startswith(METADATA_PREFIX)
    }

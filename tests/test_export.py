"""hf-detr export: the raw and end-to-end ONNX graphs (float32 and float16) of the demo-size detector and segmenter
under onnxruntime against PyTorch, the traceable re-implementations of the processor and the post-processing against
the originals, validation (and its failure on a broken graph) and the errors of bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from hf_detr import HfDetrForObjectDetection, HfDetrForSegmentation, HfDetrImageProcessor, create_model, presets
from hf_detr.apps.cli import build_parser, main
from hf_detr.evaluation.evaluate import own_region
from hf_detr.evaluation.metrics import PostProcessInputs
from hf_detr.hub.export import END_TO_END_FILE, RAW_FILE, export_folder, export_onnx
from hf_detr.hub.onnx_graph import Postprocess, Preprocess, resized_sizes
from hf_detr.hub.onnx_runtime import OnnxDetector, OnnxModel, end_to_end_inputs
from hf_detr.hub.validate import compare_detections, reference_detections, validate_export
from hf_detr.modeling.image_processing_hf_detr import resized_size

CLASSES = ("circle", "rectangle", "triangle")
# the graphs under test have the size of `make demo`'s models (its preset); the error tests use the tiny one
DEMO = presets.get("demo")
# three sizes and aspect ratios (landscape, portrait, square) around the demo preset's 128-pixel shorter side
SIZES = ((144, 192), (200, 120), (128, 128))
STEPS, MASK_STEPS = 70, 40


def _images(sizes=SIZES, seed=0):
    generator = np.random.default_rng(seed)
    return [generator.integers(0, 256, (height, width, 3), dtype=np.uint8) for height, width in sizes]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four generated images of three classes, as a save_to_disk folder (train = validation)."""
    from hf_detr.data.synthetic import make_synthetic_dataset

    folder = tmp_path_factory.mktemp("shapes")
    splits = make_synthetic_dataset(
        4, 4, 1, image_size=(112, 160), classes=CLASSES, max_objects=3, empty_fraction=0.0, seed=3, masks=True
    )
    splits.save_to_disk(folder)
    return folder, splits["validation"]


@pytest.fixture(scope="module")
def processor():
    return DEMO.image_processor()


def _overfit(model, data, processor, steps, trainable=lambda name: True):
    """`steps` of AdamW on the four images, one batch, on one thread (a shared machine)."""
    from hf_detr.data.collate import DetectionCollator, DetectionDataset

    split = DetectionDataset(data[1])
    batch = DetectionCollator(processor, do_resize=True)([split[i] for i in range(len(split))])
    optimizer = torch.optim.AdamW([p for name, p in model.named_parameters() if trainable(name)], lr=2e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for _ in range(steps):
        loss = model(batch["pixel_values"], batch["pixel_mask"], labels=batch["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def detector_dir(data, processor, tmp_path_factory):
    """The demo-size detector (plain DETR, as `make demo` saves it) overfit on the four images (box mAP about 0.76:
    what a broken graph would lose), saved."""
    torch.manual_seed(0)
    model = HfDetrForObjectDetection(DEMO.config(id2label=dict(enumerate(CLASSES))))
    _overfit(model, data, processor, STEPS)
    folder = tmp_path_factory.mktemp("detector")
    model.to_plain_detr().eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def detector(detector_dir):
    return HfDetrForObjectDetection.from_pretrained(detector_dir).eval()


@pytest.fixture(scope="module")
def detector_export(detector, processor, detector_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("detector_onnx")
    export_folder(detector, processor, out, end_to_end=True, max_detections=10, source=str(detector_dir))
    return out


@pytest.fixture(scope="module")
def segmenter_dir(detector_dir, data, processor, tmp_path_factory):
    """The trained detector with a mask head trained on the same images, the detector frozen, saved."""
    torch.manual_seed(0)
    model = HfDetrForSegmentation.from_pretrained(detector_dir)
    _overfit(model.train(), data, processor, MASK_STEPS, lambda name: name.startswith(("mask_head", "bbox_attention")))
    folder = tmp_path_factory.mktemp("segmenter")
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def segmenter(segmenter_dir):
    return HfDetrForSegmentation.from_pretrained(segmenter_dir).eval()


@pytest.fixture(scope="module")
def segmenter_export(segmenter, processor, segmenter_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("segmenter_onnx")
    export_folder(segmenter, processor, out, end_to_end=True, max_detections=10, source=str(segmenter_dir))
    return out


# --- the traceable re-implementations against the originals (no export) ---


def test_resize_rule_equals_the_processors():
    generator = torch.Generator().manual_seed(0)
    sizes = torch.cat(
        [
            torch.randint(1, 4000, (3000, 2), generator=generator),
            torch.tensor([[800, 1066], [1066, 800], [800, 800], [64, 107], [1, 1], [16, 8192], [8192, 16]]),
        ]
    )
    for size in (
        {"shortest_edge": 800, "longest_edge": 1333},
        {"shortest_edge": 64, "longest_edge": 107},
        {"max_height": 100, "max_width": 120},
        {"height": 50, "width": 70},
    ):
        rule = HfDetrImageProcessor(size=size).size
        expected = torch.tensor([resized_size(tuple(pair), rule) for pair in sizes.tolist()])
        assert torch.equal(resized_sizes(sizes, rule), expected), size


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"size": {"max_height": 100, "max_width": 120}},
        {"size": {"height": 50, "width": 70}},
        {"do_resize": False, "do_normalize": False},
        {"pad_size": {"height": 112, "width": 128}},
    ],
    ids=["shortest-longest", "max-height-width", "height-width", "no-resize", "pad-size"],
)
def test_preprocessing_equals_the_processor_pixel_for_pixel(settings):
    processor = HfDetrImageProcessor(**{"size": {"shortest_edge": 64, "longest_edge": 107}, **settings})
    # shrinking by less than 4x: the fixed-point resize is then exact (see onnx_graph's docstring)
    images = _images(((72, 96), (100, 60), (64, 64), (40, 30), (200, 150), (17, 250)))
    inputs = end_to_end_inputs(images)
    pixel_values, pixel_mask, sizes, _ = Preprocess(processor)(
        torch.from_numpy(inputs["images"]), torch.from_numpy(inputs["sizes"])
    )
    expected = processor(images=images, return_tensors="pt")
    assert torch.equal(pixel_mask, expected["pixel_mask"])
    assert torch.equal(pixel_values, expected["pixel_values"])
    assert sizes.tolist() == [list(image.shape[:2]) for image in images]


def test_postprocessing_equals_post_process_object_detection_on_own_regions(processor):
    generator = torch.Generator().manual_seed(0)
    sizes, resized = torch.tensor([[72, 96], [100, 60], [64, 64]]), torch.tensor([[64, 85], [107, 64], [64, 64]])
    canvas = resized.amax(0).tolist()
    logits = torch.randn(3, 10, 4, generator=generator) * 3
    pred_boxes = torch.rand(3, 10, 4, generator=generator) * 0.5 + 0.25
    pred_masks = torch.randn(3, 10, (canvas[0] + 3) // 4, (canvas[1] + 3) // 4, generator=generator)
    pixel_mask = torch.zeros(3, *canvas, dtype=torch.long)
    for mask, (height, width) in zip(pixel_mask, resized.tolist()):
        mask[:height, :width] = 1
    scores, labels, boxes, masks = Postprocess(6, masks=True)(logits, pred_boxes, sizes, resized, pred_masks)
    for i, (height, width) in enumerate(sizes.tolist()):
        own = own_region(pred_masks[i], pixel_mask[i])[None]
        single = PostProcessInputs(logits=logits[i : i + 1], pred_boxes=pred_boxes[i : i + 1], pred_masks=own)
        expected = processor.post_process_object_detection(
            single, 0.0, target_sizes=[(height, width)], top_k=6, return_masks=True
        )[0]
        assert torch.equal(scores[i], expected["scores"]) and torch.equal(labels[i], expected["labels"])
        assert torch.equal(boxes[i], expected["boxes"])
        assert torch.equal(masks[i, :, :height, :width], expected["masks"])
        assert not masks[i, :, height:].any() and not masks[i, :, :, width:].any()


def test_every_option_takes_dashes_and_underscores():
    parser = build_parser()
    common = ["export", "model", "out", "--dtype", "fp16", "--format", "onnx", "--dataset", "d", "--split", "s"]
    dashed = parser.parse_args([*common, "--end-to-end", "--max-detections", "5", "--per-device-eval-batch-size", "2"])
    underscored = parser.parse_args(
        [*common, "--end_to_end", "--max_detections", "5", "--per_device_eval_batch_size", "2"]
    )
    assert {**vars(dashed), "run": None} == {**vars(underscored), "run": None}
    assert (dashed.end_to_end, dashed.max_detections, dashed.per_device_eval_batch_size) == (True, 5, 2)
    with pytest.warns(FutureWarning, match="--batch-size is deprecated: use --per_device_eval_batch_size"):
        assert parser.parse_args([*common, "--batch-size", "2"]).per_device_eval_batch_size == 2


# --- bad input ---


def test_a_folder_without_an_image_processor_is_a_clear_error(tmp_path, capsys):
    create_model("tiny").save_pretrained(tmp_path / "model")
    assert main(["export", str(tmp_path / "model"), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "no image processor" in error and "save_pretrained" in error
    assert not (tmp_path / "out").exists()


def test_an_unknown_dtype_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["export", "model", str(tmp_path), "--dtype", "int8"])
    assert stopped.value.code == 2
    assert "argument --dtype: invalid choice: 'int8' (choose from" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"dtype must be one of \('fp32', 'fp16'\)"):
        export_onnx(create_model("tiny"), tmp_path / "model.onnx", dtype="int8")


def test_a_split_with_other_labels_stops_before_the_export(data, tmp_path, capsys):
    model_dir = tmp_path / "model"
    create_model("tiny").save_pretrained(model_dir)  # circle, square, triangle: the data has rectangles
    presets.get("tiny").image_processor().save_pretrained(model_dir)
    assert main(["export", str(model_dir), str(tmp_path / "out"), "--dataset", str(data[0])]) == 1
    error = capsys.readouterr().err
    assert "['rectangle'] are not classes of the model" in error and "fine-tune" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (np.zeros((1, 1, 3), np.uint8), ValueError, r"images\[1\] is 1 x 1 pixels .* sides of 16 to 8192"),
        # 20000 x 20000 pixels without allocating them: the check reads the shape only
        (
            np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3)),
            ValueError,
            r"images\[1\] is 20000 x 20000 pixels .* downscale it first, or cut it into tiles",
        ),
        (np.zeros((40, 40, 2), np.uint8), ValueError, r"images\[1\] has shape \(40, 40, 2\) \(2 channels\).*RGB"),
        (np.zeros((40, 40, 3), np.float32), TypeError, r"images\[1\] has dtype float32; .* uint8"),
    ],
    ids=["1x1", "20000x20000", "2 channels", "float"],
)
def test_images_the_end_to_end_graph_cannot_take_are_clear_errors(image, error, message):
    with pytest.raises(error, match=message):
        end_to_end_inputs([np.zeros((40, 50, 3), np.uint8), image])


# --- the graphs under onnxruntime ---


def _assert_end_to_end_agrees(path, model, processor, images):
    found = OnnxDetector(path)(images)
    comparison = compare_detections(found, reference_detections(model, processor, images, 10))
    assert comparison["same_labels"], comparison
    assert comparison["max_abs_error_scores"] < 1e-4, comparison
    assert comparison["max_abs_error_boxes_px"] < 0.5, comparison
    return comparison


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_detector_graphs_agree_with_pytorch(detector_export, detector, processor, batch):
    images = _images(SIZES[:batch])
    inputs = processor(images=images, return_tensors="pt")
    found = OnnxModel(detector_export / RAW_FILE, detector.config)(inputs["pixel_values"], inputs["pixel_mask"])
    with torch.no_grad():
        expected = detector(inputs["pixel_values"], inputs["pixel_mask"])
    assert (found.logits - expected.logits).abs().max() < 1e-4
    assert (found.pred_boxes - expected.pred_boxes).abs().max() < 1e-4
    _assert_end_to_end_agrees(detector_export / END_TO_END_FILE, detector, processor, images)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_segmentation_graphs_agree_with_pytorch(segmenter_export, segmenter, processor, batch):
    images = _images(SIZES[:batch], seed=1)
    inputs = processor(images=images, return_tensors="pt")
    found = OnnxModel(segmenter_export / RAW_FILE, segmenter.config)(inputs["pixel_values"], inputs["pixel_mask"])
    with torch.no_grad():
        expected = segmenter(inputs["pixel_values"], inputs["pixel_mask"])
    for name in ("logits", "pred_boxes", "pred_masks"):
        assert (getattr(found, name) - getattr(expected, name)).abs().max() < 1e-4, name
    comparison = _assert_end_to_end_agrees(segmenter_export / END_TO_END_FILE, segmenter, processor, images)
    assert comparison["max_fraction_of_mask_pixels_differing"] < 1e-3


@pytest.mark.slow
def test_the_end_to_end_graph_refuses_bad_images_before_running(detector_export):
    detector = OnnxDetector(detector_export / END_TO_END_FILE)
    with pytest.raises(ValueError, match=r"images\[0\] has shape \(30, 40, 2\) \(2 channels\)"):
        detector([np.zeros((30, 40, 2), np.uint8)])
    found = detector(_images(((16, 8192),)), threshold=0.0)  # the extremes of the accepted sizes run
    assert found[0]["boxes"].shape == (10, 4) and (found[0]["boxes"][:, 2] <= 8192 + 1e-3).all()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["detector", "segmenter"])
def test_fp16_export_keeps_the_fp32_map_and_lists_its_fp32_layers(kind, request, data, tmp_path, capsys):
    export, model_dir = request.getfixturevalue(f"{kind}_export"), request.getfixturevalue(f"{kind}_dir")
    # the float32 graphs' numbers on the same split, as `hf-detr export --validate` gives them
    assert main(["export", "--validate", str(export), "--dataset", str(data[0])]) == 0
    fp32 = json.loads((export / "validation.json").read_text())
    out = tmp_path / "fp16"
    status = main(["export", str(model_dir), str(out), "--dtype", "fp16", "--end_to_end", "--dataset", str(data[0])])
    assert status == 0, capsys.readouterr().err
    fp16 = json.loads((out / "validation.json").read_text())
    assert fp16["passed"] and fp16["dtype"] == "fp16" and fp16["map_tolerance"] == 0.01
    maps = ("map", "segm_map") if kind == "segmenter" else ("map",)
    for name in maps:  # trained models: mAP that a broken graph would lose
        assert fp32["dataset"]["pytorch"][name] > 0.3, (name, fp32["dataset"])
        for graph in ("raw", "end_to_end"):
            assert abs(fp16["dataset"][graph][name] - fp32["dataset"][graph][name]) <= 0.01, (name, graph)
    layers = fp16["fp32_layers"]
    assert {"LayerNormalization", "Softmax", "Sigmoid", "TopK"} <= layers.keys()
    assert layers["LayerNormalization"] > 0 and layers["preprocessing and post-processing nodes"] > 0
    assert (out / "README.md").read_text().count("float16 weights and arithmetic") == 1


@pytest.mark.slow
def test_an_end_to_end_graph_keeping_fewer_detections_is_compared_with_the_model_keeping_as_many(
    detector, processor, detector_dir, data, tmp_path
):
    export_folder(detector, processor, tmp_path, end_to_end=True, max_detections=1, source=str(detector_dir))
    report = validate_export(tmp_path, detector, processor, data[1])
    maps = {name: numbers["map"] for name, numbers in report["dataset"].items() if isinstance(numbers, dict)}
    # one detection per image misses the images' other objects: against the whole model the graph would fail
    assert maps["end_to_end"] < maps["pytorch"] - 0.05, maps
    assert report["passed"] and abs(maps["end_to_end"] - maps["pytorch_end_to_end"]) <= 0.002, report["failures"]
    assert maps["raw"] == pytest.approx(maps["pytorch"], abs=0.002)


@pytest.mark.slow
def test_validation_fails_with_the_numbers_on_a_broken_graph(detector_export, data, tmp_path, capsys):
    import onnx
    from onnx import numpy_helper

    broken = tmp_path / "broken"
    shutil.copytree(detector_export, broken)
    graph = onnx.load(str(broken / RAW_FILE))
    (bias,) = [tensor for tensor in graph.graph.initializer if tensor.name == "model.bbox_embed.layers.2.bias"]
    # the boxes' last layer shifted: every box moves and grows (its sigmoid's argument + 0.5)
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.5, bias.name))
    onnx.save(graph, str(broken / RAW_FILE))
    assert main(["export", "--validate", str(broken), "--dataset", str(data[0])]) == 1
    error = capsys.readouterr().err
    assert "validation of" in error and "raw graph: map" in error and "vs PyTorch's" in error
    report = json.loads((broken / "validation.json").read_text())
    assert not report["passed"]  # the end-to-end graph, untouched, still agrees
    assert abs(report["dataset"]["end_to_end"]["map"] - report["dataset"]["pytorch_end_to_end"]["map"]) <= 0.002


@pytest.mark.slow
def test_the_readme_examples_run(detector_export, tmp_path, monkeypatch):
    import re

    from PIL import Image

    monkeypatch.chdir(tmp_path)
    (tmp_path / "this_folder").symlink_to(detector_export)
    for name, image in zip(("street.jpg", "park.png"), _images(SIZES[:2])):
        Image.fromarray(image).save(name)
    examples = re.findall(r"```python\n(.*?)```", (detector_export / "README.md").read_text(), re.S)
    assert len(examples) == 3  # the raw graph, the end-to-end graph, OnnxDetector
    namespace = {}  # one after the other, as a reader runs them
    for example in examples:
        exec(example, namespace)
    assert len(namespace["detections"]) == 1 and namespace["detections"][0]["boxes"].shape[1] == 4


@pytest.mark.slow
def test_validate_refuses_export_options_that_disagree_with_the_folder(detector_export, capsys):
    # the folder holds a float32 export with the end-to-end graph at 10 detections
    assert main(["export", "--validate", str(detector_export), "--dtype", "fp16", "--max_detections", "5"]) == 1
    error = capsys.readouterr().err
    assert "--dtype fp16 and --max_detections 5 with --validate" in error
    assert "(it holds a fp32 export, 10 detections per image); drop the option" in error

"""HfDetrImageProcessor against transformers' DetrImageProcessor (the oracle where it is right), its batch-invariant
box normalization, post-processing, save/load and input errors."""

from __future__ import annotations

import io
import json
import types
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision.ops import box_convert
from transformers import AutoImageProcessor, DetrImageProcessor

import hf_detr  # noqa: F401  (registers the Auto classes)
from hf_detr import HfDetrImageProcessor

# (height, width) pairs: landscape, portrait, wider and taller than the 1333/800 bound, odd sides, square.
IMAGE_SIZES = [(48, 64), (64, 48), (30, 90), (90, 30), (37, 53), (40, 40)]
SIZE_FORMS = {
    "default 800/1333": None,
    "shortest/longest": {"shortest_edge": 40, "longest_edge": 72},
    "height/width": {"height": 36, "width": 52},
    "max_height/max_width": {"max_height": 50, "max_width": 60},
}


def _image(rng: np.random.Generator, height: int, width: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _annotation(rng: np.random.Generator, image_id: int, height: int, width: int, count: int = 8) -> dict:
    """Random COCO objects, some crossing the border (clipped), one outside the image (dropped after clipping),
    one with zero width (dropped) and one crowd (dropped by default)."""
    objects = []
    for k in range(count):
        w, h = rng.uniform(2, width * 0.6), rng.uniform(2, height * 0.6)
        x, y = rng.uniform(-0.2 * width, width - 1), rng.uniform(-0.2 * height, height - 1)
        objects.append(
            {"bbox": [x, y, w, h], "category_id": int(rng.integers(0, 91)), "area": w * h * 0.7, "iscrowd": int(k == 3)}
        )
    objects.append({"bbox": [width + 5.0, 2.0, 4.0, 4.0], "category_id": 1, "area": 16.0, "iscrowd": 0})
    objects.append({"bbox": [3.0, 3.0, 0.0, 5.0], "category_id": 2, "area": 0.0, "iscrowd": 0})
    return {"image_id": image_id, "annotations": objects}


def _assert_matches_reference(ours, theirs, check_labels: bool = True) -> None:
    torch.testing.assert_close(ours["pixel_values"], theirs["pixel_values"], atol=1e-4, rtol=0)
    assert ("pixel_mask" in ours) == ("pixel_mask" in theirs)
    if "pixel_mask" in theirs:
        assert torch.equal(ours["pixel_mask"], theirs["pixel_mask"])
    if not check_labels:
        return
    assert len(ours["labels"]) == len(theirs["labels"])
    for mine, ref in zip(ours["labels"], theirs["labels"]):
        for key in ("class_labels", "iscrowd", "image_id", "orig_size", "size"):
            assert torch.equal(mine[key], ref[key]), key
        torch.testing.assert_close(mine["boxes"], ref["boxes"], atol=1e-5, rtol=0)
        torch.testing.assert_close(mine["area"], ref["area"], atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("size", SIZE_FORMS.values(), ids=SIZE_FORMS.keys())
def test_matches_transformers_on_unpadded_batches(size):
    rng = np.random.default_rng(0)
    kwargs = {} if size is None else {"size": size}
    ours, reference = HfDetrImageProcessor(**kwargs), DetrImageProcessor(**kwargs)
    images = [_image(rng, h, w) for h, w in IMAGE_SIZES]
    annotations = [_annotation(rng, i, h, w) for i, (h, w) in enumerate(IMAGE_SIZES)]
    assert any(len(a["annotations"]) > 0 for a in annotations)

    for image, annotation in zip(images, annotations):  # a batch of one is never padded
        expected = reference(images=image, annotations=annotation, return_tensors="pt")
        _assert_matches_reference(ours(images=image, annotations=annotation, return_tensors="pt"), expected)
        if size is None:
            continue  # the array forms below take the same path; at 800 px they only cost time
        # numpy HWC, numpy CHW and torch CHW inputs take the same path as PIL in both processors
        array = np.array(image)
        for same in (array, array.transpose(2, 0, 1).copy(), torch.from_numpy(array).permute(2, 0, 1)):
            _assert_matches_reference(ours(images=same, return_tensors="pt"), reference(images=same), False)

    # several images of one size: stacked, not padded
    h, w = IMAGE_SIZES[0]
    batch = [_image(rng, h, w) for _ in range(3)]
    batch_annotations = [_annotation(rng, 10 + i, h, w) for i in range(3)]
    _assert_matches_reference(
        ours(images=batch, annotations=batch_annotations, return_tensors="pt"),
        reference(images=batch, annotations=batch_annotations, return_tensors="pt"),
    )


def test_matches_transformers_on_mixed_sizes_resized_to_one_size():
    rng = np.random.default_rng(1)
    images = [_image(rng, h, w) for h, w in IMAGE_SIZES]
    annotations = [_annotation(rng, i, h, w) for i, (h, w) in enumerate(IMAGE_SIZES)]
    kwargs = {"size": {"height": 36, "width": 52}}
    for do_pad in (True, False):
        _assert_matches_reference(
            HfDetrImageProcessor(**kwargs)(images=images, annotations=annotations, do_pad=do_pad, return_tensors="pt"),
            DetrImageProcessor(**kwargs)(images=images, annotations=annotations, do_pad=do_pad, return_tensors="pt"),
        )


def test_unconverted_annotations_match_transformers():
    """do_convert_annotations=False: absolute (x0, y0, x1, y1) boxes in the resized image."""
    rng = np.random.default_rng(2)
    image, annotation = _image(rng, 37, 53), _annotation(rng, 7, 37, 53)
    kwargs = {"size": {"shortest_edge": 40, "longest_edge": 72}, "do_convert_annotations": False}
    ours = HfDetrImageProcessor(**kwargs)(images=image, annotations=annotation, return_tensors="pt")
    expected = DetrImageProcessor(**kwargs)(images=image, annotations=annotation, return_tensors="pt")
    _assert_matches_reference(ours, expected)
    assert ours["labels"][0]["boxes"].max() > 1.5  # pixels, not normalized


def test_clipping_dropping_and_crowd():
    image = PIL.Image.new("RGB", (100, 50))
    objects = [
        {"bbox": [-10, 5, 30, 20], "category_id": 1, "area": 600, "iscrowd": 0},  # clipped to x in [0, 20]
        {"bbox": [90, 40, 30, 30], "category_id": 2, "area": 900, "iscrowd": 0},  # clipped to [90, 100] x [40, 50]
        {"bbox": [120, 10, 5, 5], "category_id": 3, "area": 25, "iscrowd": 0},  # outside: dropped
        {"bbox": [10, 10, 10, 10], "category_id": 4, "area": 100, "iscrowd": 1},  # crowd
        {"bbox": [50, 10, 20, 20], "category_id": 5},  # area defaults to w * h, iscrowd to 0
    ]
    processor = HfDetrImageProcessor(do_resize=False)
    labels = processor(images=image, annotations={"image_id": 3, "annotations": objects})["labels"][0]
    assert labels["class_labels"].tolist() == [1, 2, 5]
    expected_xyxy = torch.tensor([[0, 5, 20, 25], [90, 40, 100, 50], [50, 10, 70, 30]], dtype=torch.float32)
    normalized = box_convert(expected_xyxy, "xyxy", "cxcywh") / torch.tensor([100, 50, 100, 50])
    torch.testing.assert_close(labels["boxes"], normalized)
    assert labels["area"].tolist() == [600, 900, 400]
    assert labels["orig_size"].tolist() == labels["size"].tolist() == [50, 100]

    kept = processor(images=image, annotations={"image_id": 3, "annotations": objects}, keep_crowd=True)["labels"][0]
    assert kept["class_labels"].tolist() == [1, 2, 4, 5]
    assert kept["iscrowd"].tolist() == [0, 0, 1, 0]


def test_labels_do_not_depend_on_the_batch_and_map_back_to_pixels():
    rng = np.random.default_rng(3)
    small, large = _image(rng, 40, 60), _image(rng, 90, 70)
    small_annotation, large_annotation = _annotation(rng, 0, 40, 60), _annotation(rng, 1, 90, 70)
    kwargs = {"size": {"shortest_edge": 40, "longest_edge": 100}}
    processor = HfDetrImageProcessor(**kwargs)

    alone = processor(images=small, annotations=small_annotation, return_tensors="pt")
    batched = processor(images=[small, large], annotations=[small_annotation, large_annotation], return_tensors="pt")
    height, width = alone["pixel_values"].shape[-2:]
    assert batched["pixel_values"].shape[-2:] != (height, width)  # the small image is padded in the batch
    for key, value in alone["labels"][0].items():
        assert torch.equal(batched["labels"][0][key], value), key
    assert torch.equal(batched["pixel_values"][0, :, :height, :width], alone["pixel_values"][0])
    assert batched["pixel_values"][0, :, height:].abs().sum() == 0
    assert batched["pixel_mask"][0].sum() == height * width

    # A model that predicts the labels exactly gets boxes on the original pixels back.
    objects = [o for o in small_annotation["annotations"] if o["iscrowd"] == 0]
    clipped = box_convert(torch.tensor([o["bbox"] for o in objects]), "xywh", "xyxy")
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, 60)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, 40)
    expected = clipped[(clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])]
    labels = batched["labels"][0]

    def boxes_back(normalized_boxes: torch.Tensor) -> torch.Tensor:
        logits = torch.full((1, len(labels["class_labels"]), 92), -20.0)
        logits[0, torch.arange(len(logits[0])), labels["class_labels"]] = 20.0
        outputs = types.SimpleNamespace(logits=logits, pred_boxes=normalized_boxes[None])
        return processor.post_process_object_detection(outputs, 0.5, target_sizes=[(40, 60)])[0]["boxes"]

    assert len(expected) == len(labels["boxes"]) > 0
    assert (boxes_back(labels["boxes"]) - expected).abs().max() < 1.0
    # The check can fail: transformers' labels of the same batch, normalized to the padded canvas, miss by far more.
    reference = DetrImageProcessor(**kwargs)(
        images=[small, large], annotations=[small_annotation, large_annotation], return_tensors="pt"
    )
    assert (boxes_back(reference["labels"][0]["boxes"]) - expected).abs().max() > 5.0


def test_pad_size_and_unpadded_lists():
    rng = np.random.default_rng(4)
    images = [_image(rng, 30, 40), _image(rng, 20, 50)]
    processor = HfDetrImageProcessor(do_resize=False)
    padded = processor(images=images, pad_size={"height": 32, "width": 64}, return_tensors="pt")
    reference = DetrImageProcessor(do_resize=False)(images=images, pad_size={"height": 32, "width": 64})
    _assert_matches_reference(padded, reference, check_labels=False)
    assert padded["pixel_values"].shape == (2, 3, 32, 64)

    unpadded = processor(images=images, do_pad=False)
    assert "pixel_mask" not in unpadded
    assert [tuple(p.shape) for p in unpadded["pixel_values"]] == [(3, 30, 40), (3, 20, 50)]
    for i in range(2):
        height, width = images[i].height, images[i].width
        assert torch.equal(unpadded["pixel_values"][i], padded["pixel_values"][i, :, :height, :width])


def test_every_input_form_gives_the_same_pixels(tmp_path):
    rng = np.random.default_rng(5)
    array = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    processor = HfDetrImageProcessor(size={"shortest_edge": 30, "longest_edge": 50})
    expected = processor(images=PIL.Image.fromarray(array), return_tensors="pt")["pixel_values"]
    path = tmp_path / "image.png"
    PIL.Image.fromarray(array).save(path)
    tensor = torch.from_numpy(array)
    forms = {
        "numpy HWC": array,
        "numpy CHW": np.ascontiguousarray(array.transpose(2, 0, 1)),
        "torch CHW": tensor.permute(2, 0, 1).contiguous(),
        "torch HWC": tensor,
        "path": path,
        "str path": str(path),
        "list": [array],
        "4-D batch": array[None],
    }
    for name, image in forms.items():
        pixels = processor(images=image, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(pixels, expected, atol=0, rtol=0, msg=name)
    paletted = PIL.Image.fromarray(array).quantize(64)  # quantizing changes colors: compare with its own RGB
    as_rgb = np.array(paletted.convert("RGB"))
    torch.testing.assert_close(processor(images=paletted)["pixel_values"], processor(images=as_rgb)["pixel_values"])
    floats = processor(images=array.astype(np.float32), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(floats, expected, atol=0.02, rtol=0)  # uint8 resize rounds, float resize does not
    unit = processor(images=array.astype(np.float64) / 255, do_rescale=False)["pixel_values"]
    torch.testing.assert_close(unit, floats, atol=1e-5, rtol=0)


def test_grayscale_and_transparency_become_rgb():
    rng = np.random.default_rng(6)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    processor = HfDetrImageProcessor(do_resize=False)
    as_rgb = processor(images=np.repeat(gray[..., None], 3, axis=-1))["pixel_values"]
    for image in (PIL.Image.fromarray(gray), gray, gray[None], torch.from_numpy(gray)[..., None]):
        torch.testing.assert_close(processor(images=image)["pixel_values"], as_rgb, atol=0, rtol=0)

    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    alpha = np.where(rng.random((20, 30, 1)) < 0.5, 0, 255).astype(np.uint8)
    on_white = np.where(alpha == 255, rgb, 255).astype(np.uint8)
    expected = processor(images=on_white)["pixel_values"]
    rgba = np.concatenate([rgb, alpha], axis=-1)
    for image in (PIL.Image.fromarray(rgba, mode="RGBA"), rgba, torch.from_numpy(rgba).permute(2, 0, 1)):
        torch.testing.assert_close(processor(images=image)["pixel_values"], expected, atol=0, rtol=0)
    # float RGBA: full intensity is 255 with do_rescale, 1 without
    half = np.concatenate([np.zeros((20, 30, 3)), np.full((20, 30, 1), 127.5)], axis=-1)
    grey = processor(images=half)["pixel_values"]
    torch.testing.assert_close(processor(images=half / 255, do_rescale=False)["pixel_values"], grey)
    torch.testing.assert_close(processor(images=np.full((20, 30, 3), 127.5))["pixel_values"], grey)


def test_ambiguous_layout_follows_convention_or_input_data_format():
    """(3, 5, 3) is both CHW and HWC: numpy arrays are read as HWC, tensors as CHW, unless told."""
    array = np.random.default_rng(9).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    processor = HfDetrImageProcessor(do_resize=False)
    assert processor(images=array)["pixel_values"].shape == (1, 3, 3, 5)
    assert processor(images=torch.from_numpy(array))["pixel_values"].shape == (1, 3, 5, 3)
    as_chw = processor(images=array, input_data_format="channels_first")["pixel_values"]
    assert torch.equal(as_chw, processor(images=torch.from_numpy(array))["pixel_values"])


@pytest.mark.parametrize("via_path", [False, True])
def test_exif_orientation_is_honoured(tmp_path, via_path):
    rng = np.random.default_rng(7)
    stored = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    buffer = io.BytesIO()
    PIL.Image.fromarray(stored).save(buffer, format="PNG", exif=exif)
    path = tmp_path / "rotated.png"
    path.write_bytes(buffer.getvalue())
    image = path if via_path else PIL.Image.open(io.BytesIO(buffer.getvalue()))

    upright = np.ascontiguousarray(np.rot90(stored, k=-1))  # 30 x 20
    annotation = {"image_id": 1, "annotations": [{"bbox": [2, 20, 10, 5], "category_id": 1, "area": 50}]}
    processor = HfDetrImageProcessor(do_resize=False)
    ours = processor(images=image, annotations=annotation)
    torch.testing.assert_close(ours["pixel_values"], processor(images=upright)["pixel_values"], atol=0, rtol=0)
    assert ours["labels"][0]["orig_size"].tolist() == [30, 20]
    torch.testing.assert_close(ours["labels"][0]["boxes"], torch.tensor([[7 / 20, 22.5 / 30, 10 / 20, 5 / 30]]))


def _outputs(batch: int, queries: int, classes: int, seed: int) -> types.SimpleNamespace:
    generator = torch.Generator().manual_seed(seed)
    return types.SimpleNamespace(
        logits=torch.randn(batch, queries, classes + 1, generator=generator) * 3,
        pred_boxes=torch.rand(batch, queries, 4, generator=generator) * 0.6 + 0.2,
    )


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7])
def test_post_processing_matches_transformers(threshold):
    outputs = _outputs(batch=3, queries=20, classes=5, seed=0)
    sizes = [(480, 640), (37, 91), (800, 600)]
    ours, reference = HfDetrImageProcessor(), DetrImageProcessor()
    for target_sizes in (None, torch.tensor(sizes), sizes):
        mine = ours.post_process_object_detection(outputs, threshold, target_sizes=target_sizes)
        theirs = reference.post_process_object_detection(outputs, threshold, target_sizes=target_sizes)
        assert len(mine) == 3
        for a, b in zip(mine, theirs):
            assert torch.equal(a["labels"], b["labels"])
            torch.testing.assert_close(a["scores"], b["scores"])
            torch.testing.assert_close(a["boxes"], b["boxes"])
    assert sum(len(r["scores"]) for r in mine) > 0
    if threshold == 0.0:
        assert all(len(r["scores"]) == 20 for r in mine)

    top = ours.post_process_object_detection(outputs, threshold, target_sizes=sizes, top_k=4)
    for a, b in zip(top, reference.post_process_object_detection(outputs, threshold, target_sizes=sizes)):
        order = b["scores"].argsort(descending=True)[:4]
        assert torch.equal(a["labels"], b["labels"][order])
        torch.testing.assert_close(a["scores"], b["scores"][order])
        torch.testing.assert_close(a["boxes"], b["boxes"][order])


def test_save_and_auto_load_round_trip(tmp_path):
    processor = HfDetrImageProcessor(size={"max_height": 64, "max_width": 96}, keep_crowd=True, image_mean=[0.5] * 3)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "HfDetrImageProcessor"
    assert saved["size"] == {"max_height": 64, "max_width": 96}
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_hf_detr.HfDetrImageProcessor"}

    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is HfDetrImageProcessor
    assert loaded.to_dict() == processor.to_dict()
    rng = np.random.default_rng(8)
    image, annotation = _image(rng, 50, 70), _annotation(rng, 0, 50, 70)
    a, b = processor(images=image, annotations=annotation), loaded(images=image, annotations=annotation)
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert a["pixel_values"].shape[-2:] == (64, 89)  # 70 * 64 / 50 = 89.6, floored
    assert torch.equal(a["labels"][0]["iscrowd"], b["labels"][0]["iscrowd"]) and a["labels"][0]["iscrowd"].sum() == 1


def _write(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


_GOOD = {"bbox": [1, 2, 3, 4], "category_id": 1, "area": 12, "iscrowd": 0}


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda p: p(images=np.zeros((0, 10, 3), np.uint8)), ValueError, r"images\[0\] is empty"),
        (
            lambda p: p(images=[np.zeros((8, 8, 3), np.uint8), PIL.Image.new("RGB", (0, 5))]),
            ValueError,
            r"images\[1\] is empty",
        ),
        (lambda p: p(images=[]), ValueError, r"`images` is empty"),
        (
            lambda p: p(images=np.zeros((2, 5, 8, 8), np.uint8)),
            ValueError,
            r"4-D array of shape \(2, 5, 8, 8\).*not a batch",
        ),
        (
            lambda p: p(images=[np.zeros((8, 8, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8)]),
            ValueError,
            r"images\[1\] has 4 dimensions",
        ),
        (lambda p: p(images=np.zeros((8, 8, 7), np.uint8)), ValueError, r"images\[0\] has shape \(8, 8, 7\)"),
        (lambda p: p(images=[np.zeros((8, 8, 3), np.uint8), 42]), TypeError, r"images\[1\] is a int"),
        (lambda p: p(images=np.zeros((8, 8, 3), bool)), TypeError, r"images\[0\] has dtype torch.bool"),
        (
            lambda p: p(
                images=[np.zeros((8, 8, 3), np.uint8)] * 2,
                annotations=[{"image_id": i, "annotations": []} for i in range(3)],
            ),
            ValueError,
            r"3 annotations for 2 images",
        ),
        (
            lambda p: p(
                images=[np.zeros((8, 8, 3), np.uint8)] * 2,
                annotations=[
                    {"image_id": 0, "annotations": [_GOOD]},
                    {"image_id": 1, "annotations": [_GOOD, {**_GOOD, "bbox": [1, 1, -2, 3]}]},
                ],
            ),
            ValueError,
            r'annotations\[1\]\["annotations"\]\[1\]\["bbox"\].*negative width or height',
        ),
        (
            lambda p: p(
                images=np.zeros((8, 8, 3), np.uint8),
                annotations={"image_id": 0, "annotations": [{**_GOOD, "bbox": [1, float("nan"), 2, 3]}]},
            ),
            ValueError,
            r'annotations\[0\]\["annotations"\]\[0\].*NaN',
        ),
        (
            lambda p: p(
                images=np.zeros((8, 8, 3), np.uint8),
                annotations={"image_id": 0, "annotations": [_GOOD, {"category_id": 1}]},
            ),
            ValueError,
            r"""annotations\[0\]\["annotations"\]\[1\] has no 'bbox'""",
        ),
        (
            lambda p: p(
                images=np.zeros((8, 8, 3), np.uint8),
                annotations={"image_id": 0, "annotations": [{**_GOOD, "bbox": [1, 2, 3]}]},
            ),
            ValueError,
            r'annotations\[0\]\["annotations"\]\[0\]\["bbox"\] = \[1, 2, 3\] is not 4 numbers',
        ),
        (
            lambda p: p(images=np.zeros((8, 8, 3), np.uint8), annotations={"annotations": []}),
            ValueError,
            r"annotations\[0\] must be a COCO detection dict",
        ),
        (
            lambda p: p(images=np.zeros((8, 8, 3), np.uint8), annotations={"image_id": "a.jpg", "annotations": []}),
            ValueError,
            r'annotations\[0\]\["image_id"\] must be an int',
        ),
        (
            lambda p: p(images=np.zeros((8, 8, 3), np.uint8), pad_size={"height": 4, "width": 4}, do_resize=False),
            ValueError,
            r"images\[0\] is 8 x 8 after resizing, larger than pad_size",
        ),
        (
            lambda p: p(
                images=[np.zeros((8, 8, 3), np.uint8), np.zeros((8, 4, 3), np.uint8)],
                do_pad=False,
                do_resize=False,
                return_tensors="pt",
            ),
            ValueError,
            r"different sizes after resizing",
        ),
        (
            lambda p: p(images=np.zeros((8, 8, 3), np.uint8), size={"height": 10}),
            ValueError,
            r"`size` must be a dict with the keys",
        ),
        (lambda p: p(images=np.zeros((8, 8, 3), np.uint8), crop_size=3), TypeError, r"crop_size"),
        (
            lambda p: p.post_process_object_detection(types.SimpleNamespace(logits=torch.zeros(1, 3, 4))),
            TypeError,
            r"no `pred_boxes`",
        ),
        (
            lambda p: p.post_process_object_detection(_outputs(2, 3, 4, 0), target_sizes=[(10, 10)]),
            ValueError,
            r"`target_sizes` must hold one \(height, width\) per image",
        ),
        (lambda p: p.post_process_object_detection(_outputs(2, 3, 4, 0), top_k=0), ValueError, r"`top_k`"),
    ],
)
def test_bad_input_errors_name_the_culprit(call, error, message):
    with pytest.raises(error, match=message):
        call(HfDetrImageProcessor(size={"height": 16, "width": 16}))


def test_bad_size_at_construction():
    with pytest.raises(ValueError, match="`size` must be a dict with the keys"):
        HfDetrImageProcessor(size={"shortest_edge": 800})
    with pytest.raises(ValueError, match="`size` values must be positive ints"):
        HfDetrImageProcessor(size={"height": 0, "width": 10})


@pytest.mark.parametrize("content", [b"definitely not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_corrupt_file_names_its_path(tmp_path, content):
    path = _write(tmp_path, "broken.png", content)
    with pytest.raises(ValueError, match=rf"images\[1\]: cannot read the image file '{path}'"):
        HfDetrImageProcessor()(images=[np.zeros((8, 8, 3), np.uint8), str(path)])


def test_a_read_only_array_gives_no_warning_and_the_same_pixels():
    """`np.asarray(pil_image)` is read-only; torch warns on wrapping such an array, and the processor never writes."""
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    array = np.asarray(image)
    assert not array.flags.writeable
    processor = HfDetrImageProcessor(size={"shortest_edge": 32, "longest_edge": 64})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_array = processor(images=array, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(from_array, processor(images=image, return_tensors="pt")["pixel_values"])

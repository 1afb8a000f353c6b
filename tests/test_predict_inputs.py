"""`hf-detr predict` on folders (batched), videos, tiled large images, and its COCO results format."""

from __future__ import annotations

import fractions
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from hf_detr import HfDetrForObjectDetection, HfDetrImageProcessor
from hf_detr.apps.cli import main
from hf_detr.apps.predict import (
    Detections,
    coco_results,
    detect,
    detection_records,
    merge_tiles,
    open_image,
    predict,
    tile_origins,
)


@pytest.fixture(scope="module")
def tiny(model_dir):
    return HfDetrForObjectDetection.from_pretrained(model_dir).eval(), HfDetrImageProcessor.from_pretrained(model_dir)


def _save_random(path, height, width, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def _alone(model, processor, picture):
    """The reference: one image through the processor and the model, as the first `hf-detr predict` did."""
    inputs = processor(images=picture, return_tensors="pt")
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"])
    return processor.post_process_object_detection(outputs, 0.0, target_sizes=[(picture.height, picture.width)])[0]


def _batch_sizes(model):
    """Records the batch size of every forward pass."""
    sizes = []
    handle = model.register_forward_pre_hook(
        lambda _, args, kwargs: sizes.append(len(kwargs["pixel_values"])), with_kwargs=True
    )
    return sizes, handle


def test_a_folder_in_batches_gives_each_image_its_detections_alone(tiny, tmp_path):
    model, processor = tiny
    root = tmp_path / "photos"
    # (height, width): 90x120, 60x80 and 96x128 all resize to 128x170, 64x64 and 100x100 to 128x128
    layout = {
        "a.png": (90, 120),
        "d.PNG": (60, 80),
        "sub/b.jpg": (96, 128),
        "sub/deeper/c.png": (64, 64),
        "sub/e.v2.png": (100, 100),
    }
    for seed, (name, size) in enumerate(layout.items()):
        _save_random(root / name, *size, seed)
    (root / "sub" / "notes.txt").write_text("not an image")
    sizes, handle = _batch_sizes(model)
    try:
        found = predict(model, processor, [root], threshold=0.0, out_dir=tmp_path / "out", batch_size=2)
    finally:
        handle.remove()
    # sorted, recursively, by extension in any case
    assert [f.source for f in found] == [
        str(root / name) for name in ("a.png", "d.PNG", "sub/b.jpg", "sub/deeper/c.png", "sub/e.v2.png")
    ]
    # a, d (128x170); c, e (128x128); b waited for a partner of its size until the end
    assert sizes == [2, 2, 1]
    for detections in found:
        picture = open_image(detections.source)
        assert (detections.height, detections.width) == (picture.height, picture.width)
        expected = _alone(model, processor, picture)
        assert len(detections.scores) == 10  # threshold 0: every query
        torch.testing.assert_close(detections.scores, expected["scores"], rtol=0, atol=1e-4)
        assert torch.equal(detections.labels, expected["labels"])
        torch.testing.assert_close(detections.boxes, expected["boxes"], rtol=0, atol=1e-4)
    # the pictures keep the folder's tree; the sizes are the originals
    assert Image.open(tmp_path / "out" / "sub" / "deeper" / "c.png").size == (64, 64)
    assert Image.open(tmp_path / "out" / "d.png").size == (80, 60)
    assert Image.open(tmp_path / "out" / "sub" / "e.v2.png").size == (100, 100)  # only the suffix is replaced
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())) == 50


def test_same_named_images_would_overwrite_each_other(tiny, tmp_path):
    model, processor = tiny
    _save_random(tmp_path / "a" / "x.png", 32, 32, 0)
    _save_random(tmp_path / "b" / "x.jpg", 32, 32, 1)
    with pytest.raises(ValueError, match=r"a/x.png and .*b/x.jpg would both be written to x.png"):
        predict(model, processor, [tmp_path / "a" / "x.png", tmp_path / "b" / "x.jpg"], out_dir=tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"folder .*empty holds no image files"):
        predict(model, processor, [tmp_path / "empty"])


def _write_video(path, frames, fps):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))


def _read_video(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame.to_image() for frame in container.decode(stream)], stream.average_rate


def test_a_video_gives_one_result_per_frame_and_an_annotated_mp4(tiny, model_dir, tmp_path, capsys):
    model, processor = tiny
    rng = np.random.default_rng(0)
    video = tmp_path / "clip.mp4"
    _write_video(video, [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(6)], fractions.Fraction(10))
    found = predict(model, processor, [video], threshold=0.0, out_dir=tmp_path / "out", batch_size=4)
    frames, rate = _read_video(video)
    assert [f.frame for f in found] == list(range(6))
    assert [f.time for f in found] == pytest.approx([i / 10 for i in range(6)])
    for detections, frame in zip(found, frames):  # each frame's own detections, in order
        expected = _alone(model, processor, frame)
        torch.testing.assert_close(detections.scores, expected["scores"], rtol=0, atol=1e-4)
        torch.testing.assert_close(detections.boxes, expected["boxes"], rtol=0, atol=1e-4)
    annotated, annotated_rate = _read_video(tmp_path / "out" / "clip.mp4")
    assert len(annotated) == 6 and {a.size for a in annotated} == {(64, 48)} and annotated_rate == rate == 10
    # the boxes are drawn (each frame differs from its source far more than the codec's loss)
    assert all(np.abs(np.asarray(a, int) - np.asarray(f, int)).max() > 100 for a, f in zip(annotated, frames))

    assert main(["predict", str(model_dir), str(video), "--threshold", "0", "--disable_tqdm"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["video"], r["frame"]) for r in records] == [(str(video), i) for i in range(6)]
    assert all(len(r["detections"]) == 10 for r in records)


def test_a_video_without_pyav_names_the_extra(tiny, model_dir, tmp_path, monkeypatch, capsys):
    model, processor = tiny
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'hf_detr\[video\]'"):
        predict(model, processor, [video])
    assert main(["predict", str(model_dir), str(video)]) == 1
    assert "pip install 'hf_detr[video]'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "expected"),
    [
        (100, 40, 0.25, [0, 30, 60]),  # stride 30 fits exactly
        (101, 40, 0.25, [0, 20, 41, 61]),  # 3 gaps of 20.3 <= 30, the last tile on the border
        (80, 40, 0.0, [0, 40]),
        (512, 128, 0.25, [0, 96, 192, 288, 384]),
        (30, 40, 0.5, [0]),  # the side fits in one (cut) tile
    ],
)
def test_tiles_cover_the_side_and_overlap_at_least_the_fraction(length, tile, overlap, expected):
    assert tile_origins(length, tile, overlap) == expected


@pytest.mark.parametrize(
    ("tile", "overlap", "message"),
    [
        (0, 0.2, "tile must be a positive"),
        (-8, 0.2, "tile must be a positive"),
        (1.5, 0.2, "tile must be"),
        (True, 0.2, "tile must be"),
        (64, 1.0, r"overlap must be a fraction of the tile in \[0, 1\)"),
        (64, -0.1, "overlap must be"),
    ],
)
def test_bad_tiling_is_named(tiny, tmp_path, tile, overlap, message):
    model, processor = tiny
    _save_random(tmp_path / "x.png", 16, 16, 0)
    with pytest.raises(ValueError, match=message):
        predict(model, processor, [tmp_path / "x.png"], tile=tile, overlap=overlap)


def test_bad_options_on_the_command_line(model_dir, tmp_path, capsys):
    _save_random(tmp_path / "x.png", 16, 16, 0)
    assert main(["predict", str(model_dir), str(tmp_path / "x.png"), "--tile", "0"]) == 1
    assert "tile must be a positive number of pixels" in capsys.readouterr().err
    assert main(["predict", str(model_dir), str(tmp_path / "x.png"), "--per_device_eval_batch_size", "0"]) == 1
    assert "batch_size must be a positive int, got 0" in capsys.readouterr().err


def test_merge_suppresses_only_across_tiles():
    boxes = torch.tensor(
        [
            [0, 0, 10, 10],  # A tile 0: kept (best)
            [1, 0, 11, 10],  # B tile 1: IoU 0.82 with A -> A seen again by another tile
            [1, 1, 11, 11],  # C tile 0: IoU 0.68 with A but A's own tile: another object, kept
            [0, 0, 10, 10],  # D tile 1: A's box with another label: kept
            [2, 0, 12, 10],  # E tile 1: IoU 0.67 with A -> suppressed
            [2, 2, 12, 12],  # F tile 2: IoU 0.47 with A, 0.68 with C (kept, other tile) -> suppressed by C
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = torch.tensor([0, 0, 0, 1, 0, 0])
    tiles = torch.tensor([0, 1, 0, 1, 1, 2])
    assert merge_tiles(boxes, scores, labels, tiles, 0.5).tolist() == [0, 2, 3]
    # a suppressed box suppresses nothing: B (0.82 with A) would have removed E (0.82 with B) had it been kept
    assert merge_tiles(
        boxes[[0, 1, 4]], scores[[0, 1, 4]], labels[[0, 1, 4]], torch.tensor([0, 1, 2]), 0.7
    ).tolist() == [0, 2]
    # all in one tile, nothing is merged
    assert merge_tiles(boxes, scores, labels, torch.zeros(6, dtype=torch.long), 0.5).tolist() == [0, 1, 2, 3, 4, 5]


class BlobDetector(torch.nn.Module):
    """A stand-in detector that finds every bright blob of at least `min_side` pixels in the (resized) input: what
    it finds depends on the resolution the image reaches it at, as a real detector's small objects do."""

    def __init__(self, min_side=6, num_queries=10):
        super().__init__()
        self.config = SimpleNamespace(id2label={0: "square"})
        self.device = torch.device("cpu")
        self.min_side, self.num_queries = min_side, num_queries
        self.batches, self.found = [], 0

    def forward(self, pixel_values, pixel_mask):
        batch, _, height, width = pixel_values.shape
        logits = torch.tensor([-10.0, 10.0]).repeat(batch, self.num_queries, 1)  # "no object"
        boxes = torch.full((batch, self.num_queries, 4), 0.5)
        for b in range(batch):
            blobs, _ = ndimage.label((pixel_values[b, 0] > 0).numpy())
            q = 0
            for rows, cols in ndimage.find_objects(blobs):
                if min(rows.stop - rows.start, cols.stop - cols.start) >= self.min_side:
                    logits[b, q] = torch.tensor([10.0, -10.0])
                    x0, x1, y0, y1 = cols.start / width, cols.stop / width, rows.start / height, rows.stop / height
                    boxes[b, q] = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])
                    q += 1
            self.found += q
        self.batches.append(batch)
        return SimpleNamespace(logits=logits, pred_boxes=boxes)


# (x0, y0, x1, y1) of 12-pixel squares on a 512 x 512 image. Tiles of 128 overlapping by 0.25 start at 0, 96, 192,
# 288 and 384 on both sides; no square crosses a tile's border: the first lies in 2 tiles, the second in 1, the third
# in 4. The 40-pixel square is also large enough at the model's 128-pixel input.
SMALL = [(100, 140, 112, 152), (240, 240, 252, 252), (300, 300, 312, 312)]
LARGE = (440, 20, 480, 60)


def test_tiles_find_the_small_objects_the_whole_image_misses(tmp_path):
    canvas = np.zeros((512, 512, 3), dtype=np.uint8)
    for x0, y0, x1, y1 in [*SMALL, LARGE]:
        canvas[y0:y1, x0:x1] = 255
    Image.fromarray(canvas).save(tmp_path / "large.png")
    processor = HfDetrImageProcessor(size={"shortest_edge": 128, "longest_edge": 128})

    whole = BlobDetector()
    (untiled,) = predict(whole, processor, [tmp_path / "large.png"])
    # downscaled 4x, each small square is 3 pixels: only the large one is found, at its place
    torch.testing.assert_close(untiled.boxes, torch.tensor([LARGE], dtype=torch.float32), rtol=0, atol=2.0)

    tiled_model = BlobDetector()
    (tiled,) = predict(
        tiled_model, processor, [tmp_path / "large.png"], out_dir=tmp_path / "out", batch_size=8, tile=128, overlap=0.25
    )
    assert tiled_model.batches == [8, 8, 8, 1]  # 25 tiles
    assert tiled_model.found == 2 + 1 + 4 + 1  # every sighting, before the merge
    # one box per object, in the large image's pixels (the tiles reach the model unscaled)
    expected = sorted([*SMALL, LARGE])
    assert sorted(tuple(box) for box in tiled.boxes.round().int().tolist()) == expected
    torch.testing.assert_close(
        tiled.boxes.sort(0).values, torch.tensor(expected, dtype=torch.float32).sort(0).values, rtol=0, atol=1e-3
    )

    # the COCO results written next to the picture: [x, y, width, height], the model's category ids
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(r["bbox"] for r in results) == sorted([x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in expected)
    assert {(r["image_id"], r["category_id"]) for r in results} == {(1, 0)}
    images = json.loads((tmp_path / "out" / "images.json").read_text())
    assert images == {
        "images": [{"id": 1, "file_name": str(tmp_path / "large.png"), "height": 512, "width": 512}],
        "categories": [{"id": 0, "name": "square"}],
    }


def test_coco_format_agrees_with_the_default_and_loads_in_pycocotools(model_dir, tmp_path, capsys):
    from pycocotools.coco import COCO

    for seed, name in enumerate(("one.png", "two.png")):
        _save_random(tmp_path / "in" / name, 40 + 10 * seed, 60, seed)
    arguments = [
        "predict",
        str(model_dir),
        str(tmp_path / "in"),
        "--threshold",
        "0.2",
        "--per_device_eval_batch_size",
        "2",
    ]
    assert main(arguments) == 0
    default = json.loads(capsys.readouterr().out)
    assert main([*arguments, "--format", "coco", "--out", str(tmp_path / "out")]) == 0
    coco = json.loads(capsys.readouterr().out)
    assert [(i["id"], i["file_name"], i["height"]) for i in coco["images"]] == [
        (1, str(tmp_path / "in" / "one.png"), 40),
        (2, str(tmp_path / "in" / "two.png"), 50),
    ]
    label_names = {c["id"]: c["name"] for c in coco["categories"]}
    assert label_names == {0: "circle", 1: "square", 2: "triangle"}
    converted = [
        (image_id, d["label"], d["score"], d["box"]["xmin"], d["box"]["ymin"])
        for image_id, record in enumerate(default, start=1)
        for d in record["detections"]
    ]
    assert len(converted) > 0
    assert [
        (r["image_id"], label_names[r["category_id"]], r["score"], *r["bbox"][:2]) for r in coco["results"]
    ] == converted
    widths = [d["box"]["xmax"] - d["box"]["xmin"] for record in default for d in record["detections"]]
    assert [r["bbox"][2] for r in coco["results"]] == pytest.approx(widths, abs=0.011)
    # results.json is what COCO.loadRes reads, against ground truth with the images of images.json
    ground_truth = COCO()
    ground_truth.dataset = {**json.loads((tmp_path / "out" / "images.json").read_text()), "annotations": []}
    ground_truth.createIndex()
    loaded = ground_truth.loadRes(str(tmp_path / "out" / "results.json"))
    assert len(loaded.getAnnIds()) == len(coco["results"])


def test_records_and_coco_name_video_frames():
    empty = {"scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}
    one = {
        "scores": torch.tensor([0.91234]),
        "labels": torch.tensor([2]),
        "boxes": torch.tensor([[1.0, 2.0, 4.5, 8.0]]),
    }
    found = [
        Detections("v.mp4", 48, 64, **empty, frame=0, time=0.0),
        Detections("v.mp4", 48, 64, **one, frame=1, time=0.04),
    ]
    records = detection_records(found, {2: "triangle"})
    assert records == [
        {"video": "v.mp4", "frame": 0, "time": 0.0, "detections": []},
        {
            "video": "v.mp4",
            "frame": 1,
            "time": 0.04,
            "detections": [
                {"label": "triangle", "score": 0.9123, "box": {"xmin": 1.0, "ymin": 2.0, "xmax": 4.5, "ymax": 8.0}}
            ],
        },
    ]
    coco = coco_results(found, {2: "triangle"})
    assert coco["images"][1] == {"id": 2, "file_name": "v.mp4", "height": 48, "width": 64, "frame": 1}
    assert coco["results"] == [{"image_id": 2, "category_id": 2, "bbox": [1.0, 2.0, 3.5, 6.0], "score": 0.9123}]


def test_images_of_many_sizes_wait_a_bounded_number(tiny):
    model, processor = tiny
    rng = np.random.default_rng(0)
    # 40 pixels wide, each taller than the last: ten different resized sizes, none with a partner
    pictures = [Image.fromarray(rng.integers(0, 256, (40 + 2 * k, 40, 3), dtype=np.uint8)) for k in range(10)]
    events = []

    def read():
        for i, picture in enumerate(pictures):
            events.append(("read", i))
            yield picture

    def run(_, args, kwargs):
        events.append(("run", len(kwargs["pixel_values"])))

    handle = model.register_forward_pre_hook(run, with_kwargs=True)
    try:
        found = list(detect(model, processor, read(), threshold=0.0, batch_size=2))
    finally:
        handle.remove()
    # at most 4 batches (8 images) wait: the 9th image makes the fullest size (ties: the oldest) run alone
    assert events[:10] == [("read", i) for i in range(9)] + [("run", 1)]
    assert [index for index, _, _ in found] == list(range(10))
    assert [event for event in events if event[0] == "run"] == [("run", 1)] * 10
    assert all(picture is pictures[index] for index, picture, _ in found)

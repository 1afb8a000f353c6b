"""The scale benchmark's data (benchmarks/scale_data.py) loads as written, with its out-of-image boxes clipped, and
the benchmarks (bench_scale, bench_data_loader) run at a tiny size and report their numbers. No speed targets."""

from __future__ import annotations

import json
import sys

import pytest

from helpers import ROOT

if str(ROOT) not in sys.path:  # the benchmarks package, also under a bare `pytest`
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_data_loader, bench_scale  # noqa: E402
from benchmarks.scale_data import CATEGORIES, OUTSIDE_PIXELS, WIDTH, write_coco_folder, write_hub_dataset  # noqa: E402
from hf_detr.data import coco_category_ids, id2label, load_data  # noqa: E402

N, VAL = 100, 10


@pytest.mark.parametrize("form", ["coco", "hub"])
def test_scale_data_loads_with_its_counts_and_the_outside_boxes_clipped(tmp_path, form):
    write = write_coco_folder if form == "coco" else write_hub_dataset
    written = write(tmp_path / form, N, seed=3, val=VAL)
    assert next(iter(written.values())).crowd > 0  # ~1% of the training objects
    names = {"train2017": "train", "val2017": "validation"} if form == "coco" else {}
    loaded = load_data(str(tmp_path / form), masks=True)
    assert sorted(loaded) == ["train", "validation"]
    for split_name, counts in written.items():
        split = loaded[names.get(split_name, split_name)]
        # 2% of the images, at least one, have one box 3 px outside
        assert len(counts.outside) == max(1, round(0.02 * counts.images)) == (2 if counts.images == N else 1)
        objects = split["objects"]
        assert len(split) == counts.images == (N if split_name in ("train", "train2017") else VAL)
        assert sum(len(o["bbox"]) for o in objects) == counts.boxes  # the policy clipped, dropped none
        assert sum(sum(o["iscrowd"]) for o in objects) == counts.crowd
        assert all(len(o["segmentation"]) == len(o["bbox"]) for o in objects)
        boxes = {i: box for o in objects for i, box in zip(o["id"], o["bbox"])}
        assert all(x >= 0 and y >= 0 and x + w <= WIDTH + 1 for x, y, w, _ in boxes.values())
        for object_id, (x, y, w, h) in counts.outside.items():
            assert x + w == pytest.approx(WIDTH + OUTSIDE_PIXELS)
            assert boxes[object_id] == pytest.approx([x, y, WIDTH - x, h])  # clipped to the right edge
        assert id2label(split) == dict(enumerate(CATEGORIES.values()))
        if form == "coco":
            assert coco_category_ids(split) == list(CATEGORIES)
            assert len(list((tmp_path / form / split_name).iterdir())) == counts.images  # a file per image


def test_scale_data_is_deterministic(tmp_path):
    for name in ("a", "b"):
        write_coco_folder(tmp_path / name, 5, seed=1)
    json_a, json_b = ((tmp_path / n / "annotations" / "instances_train2017.json").read_bytes() for n in "ab")
    assert json_a == json_b
    image = json.loads(json_a)["images"][4]["file_name"]
    assert (tmp_path / "a" / "train2017" / image).read_bytes() == (tmp_path / "b" / "train2017" / image).read_bytes()


@pytest.mark.slow
def test_bench_scale_reports_every_measurement(tmp_path, capsys):
    """One size, one source, 1 training process: the COCO folder goes through the same measurements, and the
    2-process runs and larger sizes are the benchmark's, not the test's."""
    out = tmp_path / "results.json"
    bench_scale.main(
        [
            "--sizes",
            "30",
            "--sources",
            "hub",
            "--train_processes",
            "1",
            "--evaluation",
            "boxes",
            "--eval_images",
            "20",
            "--eval_detections",
            "5",
            "--stream_images",
            "20",
            "--workdir",
            str(tmp_path),
            "--out",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    data, cases = report["runs"]["30"]["data"]["hub"], report["runs"]["30"]["results"]["hub"]
    assert data["images"] == 30 and data["outside"] == 1 and data["boxes"] > 30
    assert sorted(cases) == [
        "load boxes, first",
        "load boxes, second",
        "load masks, first",
        "load masks, second",
        "stream",
        "train 1 process",
        "train 1 process, streamed",
    ]
    for case, result in cases.items():
        if case.startswith("load"):
            assert (result["images"], result["boxes"]) == (data["images"], data["boxes"])
        assert result["written_mib"] >= 0  # a second load may write nothing
        assert all(value > 0 for key, value in result.items() if key not in ("written_mib", "over_baseline_mib"))
    assert cases["stream"]["images"] == 20
    assert all(len(row["values"]) == 1 and "train2017" not in row for row in report["rows"])  # one size: no fit
    for name in ("boxes", "boxes, numpy backend"):  # both COCOeval backends, by default
        assert report["evaluation"][name]["seconds"] > 0 and report["evaluation"][name]["peak_rss_mib"] > 0
    printed = capsys.readouterr().out
    assert "train2017" in printed and "Hub-schema" in printed and "load masks, second: written MiB" in printed


def test_bench_scale_extrapolates_the_least_squares_line():
    intercept, slope = bench_scale.linear_fit([1000, 5000, 20000], [3.0, 7.0, 22.0])
    assert (intercept, slope) == (pytest.approx(2.0), pytest.approx(0.001))
    runs = {
        str(n): {
            "results": {
                "coco": {"stream": {"images_per_second": 50.0, "setup_seconds": 1000 / n, "pass_seconds": 1 + n / 50}}
            }
        }
        for n in (1000, 5000)
    }
    rows = {row["field"]: row for row in bench_scale.table_rows(runs, [1000, 5000])}
    assert "train2017" not in rows["images_per_second"]  # a rate
    assert rows["pass_seconds"]["train2017"] == pytest.approx(1 + bench_scale.TRAIN2017 / 50)
    assert rows["pass_seconds"]["val2017"] == pytest.approx(1 + 5000 / 50)
    assert rows["setup_seconds"]["constant"] and rows["setup_seconds"]["train2017"] == pytest.approx(0.6)  # the mean


def test_bench_data_loader_reports_the_workers_a_gpu_needs(capsys):
    results = bench_data_loader.main(["--images", "8", "--batches", "2", "--workers", "0", "1"])
    assert sorted(results) == [0, 1]
    assert all(r["images_per_second"] > 0 and r["first_batch_seconds"] > 0 for r in results.values())
    assert "a GPU stepping at 10 it/s at batch 2 needs" in capsys.readouterr().out

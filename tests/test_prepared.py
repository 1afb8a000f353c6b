"""Prepared once, shared everywhere: a split is parsed, checked and encoded once, written beside nothing it copies,
and opened by every later load and every other process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from benchmarks.scale_data import OUTSIDE_PIXELS, WIDTH, write_coco_folder, write_hub_dataset
from hf_detr.data import coco, folders, hub_sources, load_detection_dataset
from hf_detr.training.loop import train
from test_train import tiny_config

TESTS = Path(__file__).parent


def folder_bytes(*folders: Path) -> int:
    return sum(f.stat().st_size for folder in folders if folder.exists() for f in folder.rglob("*") if f.is_file())


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache of prepared splits for this test (launched processes inherit it)."""
    folder = tmp_path / "prepared"
    monkeypatch.setenv("HF_DETR_CACHE", str(folder))
    return folder


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """How often the work a prepared split saves runs in this process: json parsing, mask encoding, conforming."""
    counts = {"parse": 0, "encode": 0, "conform": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(coco, "_read_coco_json", counted("parse", coco._read_coco_json))
    for module in (folders, hub_sources):  # the two callers of the mask encoder
        monkeypatch.setattr(module, "segmentation_rle", counted("encode", module.segmentation_rle))
    monkeypatch.setattr(hub_sources.SplitConformer, "__call__", counted("conform", hub_sources.SplitConformer.__call__))
    return counts


def test_a_hub_split_with_masks_writes_under_5_percent_of_its_size(tmp_path, cache, calls):
    saved = tmp_path / "hub"
    written = write_hub_dataset(saved, 40, seed=1, pool=8)["train"]
    assert written.outside  # the policy has boxes to clip
    size = folder_bytes(saved)
    ds = load_detection_dataset(saved, masks=True)["train"]

    assert folder_bytes(saved, cache) - size <= 0.05 * size
    assert calls["conform"] == 40 and calls["encode"] == written.boxes
    # the image column is the source's own: same bytes, nothing re-encoded
    assert ds.cache_files[0]["filename"].startswith(str(saved))
    assert len(ds) == 40 and sum(len(o["id"]) for o in ds["objects"]) == written.boxes
    boxes = {i: b for objects in ds["objects"] for i, b in zip(objects["id"], objects["bbox"])}
    for annotation_id, (x, y, w, h) in written.outside.items():  # clipped to the image by the default policy
        assert boxes[annotation_id] == pytest.approx([x, y, WIDTH - x, h])
        assert x + w == pytest.approx(WIDTH + OUTSIDE_PIXELS)
    # a mask is the polygon's pixels, as drawn by pycocotools
    example = ds[3]
    first = datasets.load_from_disk(str(saved))["train"][3]["objects"]["segmentation"][0]
    expected = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(first, example["height"], example["width"])))
    stored = example["objects"]["segmentation"][0]
    decoded = coco_mask.decode({"size": stored["size"], "counts": stored["counts"].encode()})
    assert decoded.sum() > 0 and np.array_equal(decoded, expected)


@pytest.mark.parametrize("source", ["coco", "hub"])
def test_a_second_load_and_a_second_process_open_the_prepared_split(tmp_path, cache, calls, source):
    path = tmp_path / source
    (write_coco_folder if source == "coco" else write_hub_dataset)(path, 12, seed=2, pool=4)
    first = load_detection_dataset(path, masks=True)["train"]
    assert calls["encode"] > 0 and (calls["parse"] == 1 if source == "coco" else calls["conform"] == 12)

    calls.update(parse=0, encode=0, conform=0)
    second = load_detection_dataset(path, masks=True)["train"]
    assert calls == {"parse": 0, "encode": 0, "conform": 0}
    assert second[:] == first[:]
    # another setting is another preparation
    load_detection_dataset(path, masks=False, box_policy="drop")
    assert calls["parse"] == 1 if source == "coco" else calls["conform"] == 12

    # a second process: the counting wrappers of the fixture, in a fresh interpreter
    script = f"""
import json, sys
sys.path.insert(0, {str(TESTS)!r})
from hf_detr.data import coco, folders, hub_sources, load_detection_dataset
from hf_detr.training.loop import train
from test_train import tiny_config
calls = {{"parse": 0, "encode": 0}}
for module, name, attribute in (
    (coco, "parse", "_read_coco_json"),
    (folders, "encode", "segmentation_rle"),
    (hub_sources, "encode", "segmentation_rle"),
):
    function = getattr(module, attribute)
    def wrapper(*args, _f=function, _n=name, **kwargs):
        calls[_n] += 1
        return _f(*args, **kwargs)
    setattr(module, attribute, wrapper)
rows = load_detection_dataset({str(path)!r}, masks=True)["train"][:]
print(json.dumps({{"calls": calls, "ids": rows["image_id"]}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    other = json.loads(done.stdout.splitlines()[-1])
    assert other == {"calls": {"parse": 0, "encode": 0}, "ids": first["image_id"]}


def test_a_missing_image_is_named_or_skipped_and_counted_by_drop(tmp_path, cache, caplog):
    root = tmp_path / "coco"
    write_coco_folder(root, 6, seed=3, pool=6)
    missing = sorted((root / "train2017").iterdir())[2]
    missing.unlink()
    message = rf"instances_train2017.json: image_id \d+ \('{missing.name}'\): image file not found"
    with pytest.raises(ValueError, match=message):
        load_detection_dataset(root)
    ds = load_detection_dataset(root, box_policy="drop")["train"]
    paths = [image["path"] for image in ds.cast_column("image", datasets.Image(decode=False))["image"]]
    assert len(paths) == 5 and str(missing) not in paths
    assert "1 of 6 images left out (missing or unreadable) by box_policy='drop', the first: " in caplog.text
    assert missing.name in caplog.text


@pytest.mark.parametrize("source", ["coco", "hub"])
def test_a_pool_of_workers_prepares_the_same_rows(tmp_path, cache, monkeypatch, source):
    root = tmp_path / source
    (write_coco_folder if source == "coco" else write_hub_dataset)(root, 30, seed=4, pool=5)
    alone = load_detection_dataset(root, masks=True, num_proc=1)["train"][:]
    monkeypatch.setenv("HF_DETR_CACHE", str(tmp_path / "other"))
    assert load_detection_dataset(root, masks=True, num_proc=2)["train"][:] == alone


@pytest.mark.slow
def test_two_processes_prepare_once_and_train_as_before(tmp_path, cache):
    from safetensors.torch import load_file

    from training_commands import TINY, command, free_port, launch_argv

    root = tmp_path / "coco"
    written = write_coco_folder(root, 8, seed=5, pool=4)["train2017"]
    env = {
        **os.environ,
        "ACCELERATE_CONFIG_FILE": str(tmp_path / "none.yaml"),
        "HF_HOME": str(tmp_path / "hf"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    args = [
        *TINY,
        "--dataset",
        str(root),
        "--task",
        "instance",
        "--eval_split",
        "none",
        "--max_steps",
        "2",
        "--save_steps",
        "0",
    ]

    def launch(name: str, *extra: str) -> list[str]:
        env["HF_DETR_TEST_CALLS"] = str(tmp_path / f"{name}.calls")
        Path(env["HF_DETR_TEST_CALLS"]).touch()
        argv = launch_argv(command("multi-gpu"), 2, free_port(), script=[str(TESTS / "count_preparation.py"), *extra])
        done = subprocess.run(
            [*argv, *args, "--output_dir", str(tmp_path / name)], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-4000:]
        return Path(env["HF_DETR_TEST_CALLS"]).read_text().split()

    first = launch("first")  # one process parses and encodes, the other waits and opens
    assert first.count("parse") == 1 and first.count("encode") == written.boxes
    assert len({pid for work, pid in zip(first[::2], first[1::2])}) == 1
    assert launch("second") == []  # a second start opens the prepared split
    before = launch("before", "--uncached")  # each process builds its own in-memory copy, as before the cache
    assert before.count("parse") == 2

    expected = load_file(tmp_path / "before" / "model.safetensors")
    for name in ("first", "second"):
        actual = load_file(tmp_path / name / "model.safetensors")
        assert actual.keys() == expected.keys()
        assert all(torch.equal(actual[key], expected[key]) for key in expected)


def test_an_image_deleted_after_preparing_is_named_or_left_out_by_drop(tmp_path, cache, caplog):
    root = tmp_path / "coco"
    write_coco_folder(root, 5, seed=6, pool=5)
    assert len(load_detection_dataset(root)["train"]) == 5
    assert len(load_detection_dataset(root, box_policy="drop")["train"]) == 5
    gone = sorted((root / "train2017").iterdir())[1]
    gone.unlink()
    with pytest.raises(
        ValueError,
        match=rf"instances_train2017.json: image file {gone} is missing, though it was "
        "there when the split was prepared; restore it, or load with "
        "box_policy='drop'",
    ):
        load_detection_dataset(root)
    assert len(load_detection_dataset(root, box_policy="drop")["train"]) == 4  # prepared again, without it
    assert "1 of 5 images left out (missing or unreadable) by box_policy='drop'" in caplog.text


def test_a_stream_read_undecoded_reads_no_pixel(tmp_path, cache, monkeypatch):
    import PIL.Image

    saved = tmp_path / "hub"
    write_hub_dataset(saved, 6, seed=7, pool=3)
    decoded = list(load_detection_dataset(saved, streaming=True, masks=True)["train"])
    opened = []
    monkeypatch.setattr(PIL.Image, "open", lambda *args, **kwargs: opened.append(args))
    undecoded = list(load_detection_dataset(saved, streaming=True, masks=True, decode=False)["train"])
    assert opened == [] and all(isinstance(row["image"]["bytes"], bytes) for row in undecoded)
    assert [{**row, "image": None} for row in undecoded] == [{**row, "image": None} for row in decoded]


def test_an_image_gone_or_broken_while_training_is_named(tmp_path, cache):
    from hf_detr.data.collate import DetectionDataset

    root = tmp_path / "coco"
    write_coco_folder(root, 4, seed=8, pool=4)
    split = load_detection_dataset(root)["train"]
    gone = Path(split.cast_column("image", datasets.Image(decode=False))[2]["image"]["path"])
    gone.unlink()  # after the split was opened: only reading it can tell
    with pytest.raises(
        ValueError,
        match=rf"example 2 \(image_id=\d+\): cannot decode the image {gone} \(.*No such "
        r"file.*\); restore or replace the file",
    ):
        DetectionDataset(split)[2]
    assert DetectionDataset(split)[1]["image"].size == (WIDTH, 480)

    # a stream whose image bytes are broken: training stops at that batch, mid-epoch, naming the image
    saved = tmp_path / "hub"
    write_hub_dataset(saved, 6, seed=9, pool=3)
    source = datasets.load_from_disk(str(saved))["train"]
    rows = source.cast_column("image", datasets.Image(decode=False)).to_list()
    rows[4]["image"] = {"bytes": b"not a jpeg", "path": "000000000005.jpg"}
    datasets.Dataset.from_list(rows, features=source.features).save_to_disk(str(tmp_path / "broken"))
    config = tiny_config(tmp_path, dataset=str(tmp_path / "broken"), streaming=True, shuffle=False, max_steps=3)
    with pytest.raises(ValueError, match=r"example 4 \(image_id=\d+\): cannot decode the image 000000000005.jpg"):
        train(config)
    assert json.loads((tmp_path / "run" / "train_log.jsonl").read_text().splitlines()[-1])["step"] == 2

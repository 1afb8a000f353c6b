"""`hf-detr demo` end to end on a tiny budget: the README's first command must keep working."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from transformers import pipeline

from hf_detr import HfDetrForObjectDetection, HfDetrImageProcessor, create_model, presets
from hf_detr.apps.cli import main
from hf_detr.data import SYNTHETIC, load_data
from hf_detr.data.loading import id2label
from hf_detr.data.synthetic import SHAPES
from hf_detr.evaluation import COCO_STAT_NAMES, evaluate
from hf_detr.evaluation.duplicates import DUPLICATE_IOU, DUPLICATE_STAT_NAMES
from hf_detr.training.setup import cpu_has_fast_bf16

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_trained_for_the_budget(metrics: dict, run_dir, time_budget: float) -> None:
    """The reported steps are the training run's (its log ends at that step) and it trained for the whole budget."""
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert metrics["steps"] == log[-1]["step"] >= 1
    assert time_budget <= metrics["train_seconds"] <= metrics["total_seconds"]


def assert_saved_model_scores(metrics: dict, model_dir, test_split) -> None:
    """The metrics the demo reports are those of the model folder it saved, with its image processor, on `test_split`:
    what a user re-scoring the folder gets."""
    model = HfDetrForObjectDetection.from_pretrained(model_dir).eval()
    processor = HfDetrImageProcessor.from_pretrained(model_dir)
    batch_size = presets.get("demo").training["per_device_eval_batch_size"]
    rescored = evaluate(model, processor, test_split, batch_size=batch_size)
    names = (*COCO_STAT_NAMES, *DUPLICATE_STAT_NAMES)
    assert {name: metrics[name] for name in names} == pytest.approx({name: rescored[name] for name in names}, abs=1e-9)
    # the same after the NMS fallback, which leaves no duplicate at the measure's IoU
    pruned = evaluate(model, processor, test_split, batch_size=batch_size, nms_threshold=DUPLICATE_IOU)
    assert metrics["with_nms"] == pytest.approx({name: pruned[name] for name in metrics["with_nms"]}, abs=1e-9)
    assert metrics["with_nms"]["duplicate_rate"] in (0.0, -1.0) and metrics["with_nms"]["duplicated_objects"] <= max(
        metrics["duplicated_objects"], 0.0
    )


def assert_a_plot(path, size: tuple[int, int]) -> None:
    """A matplotlib figure of `size` pixels with something drawn on it: not a blank page, more than a few colours
    (antialiased lines, text and fills)."""
    picture = Image.open(path)
    assert picture.size == size
    pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    assert (pixels != 255).any(axis=1).mean() > 0.03
    assert len(np.unique(pixels, axis=0)) > 50


TILE = 384  # the demo's 128-pixel images, upscaled 3x in predictions.png
PAD = 8


def test_demo_writes_model_metrics_and_pictures(tmp_path, monkeypatch, capsys):
    import hf_detr.apps.demo as demo

    real_run_demo = demo.run_demo
    # a few images so the test takes seconds; everything else is the demo as `make demo` runs it
    monkeypatch.setattr(
        demo, "run_demo", lambda *a, **k: real_run_demo(*a, **k, num_train=32, num_validation=8, num_test=8, show=4)
    )
    assert main(["demo", "--output_dir", str(tmp_path), "--time_budget", "8"]) == 0
    out = capsys.readouterr().out
    assert "test split: AP" in out
    assert "duplicates: " in out and "of objects with more than one box; with NMS at IoU 0.7" in out
    assert "class" in out and "AP50" in out and "AR@100" in out and "objects" in out  # the per-class table

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"map", "map_50", "map_75", "steps", "total_seconds", "per_class"} <= set(metrics)
    assert metrics["mixed_precision"] == ("bf16" if cpu_has_fast_bf16() else "no")
    assert_trained_for_the_budget(metrics, tmp_path / "run", 8)
    # the test split the demo generated (seed 0, the preset's image size), scored again from the saved folder
    sizes = {"train": 32, "validation": 8, "test": 8}
    test_split = load_data(
        SYNTHETIC, synthetic_sizes=sizes, synthetic_image_size=presets.get("demo").image_size, seed=0
    )["test"]
    assert_saved_model_scores(metrics, tmp_path / "model", test_split)
    # a row per class with AP, AP50, AR@100 and the number of the test split's objects of that class
    counts = Counter(
        c for objects in test_split["objects"] for c, crowd in zip(objects["category"], objects["iscrowd"]) if not crowd
    )
    names = list(id2label(test_split).values())
    assert list(metrics["per_class"]) == names
    for label, name in enumerate(names):
        row = metrics["per_class"][name]
        assert set(row) == {"map", "map_50", "mar_100", "objects"} and row["objects"] == counts[label], name
        assert row["map_50"] >= row["map"] or row["objects"] == 0
        assert f"\n{name} " in out

    # 4 images: ground truth and prediction side by side, two images a row, each tile upscaled 3x (384 px)
    grid = Image.open(tmp_path / "predictions.png")
    assert grid.size[0] == PAD + 4 * (TILE + PAD) and grid.size[1] > PAD + 2 * (TILE + PAD)
    assert_a_plot(tmp_path / "curves.png", (1100, 420))
    assert_a_plot(tmp_path / "pr_curve.png", (700, 560))

    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["num_query_groups"] == 1 and config["freeze_backbone_batchnorm"]  # saved as plain DETR
    detector = pipeline("object-detection", model=str(tmp_path / "model"))
    bottom_left = (PAD, grid.size[1] - PAD - TILE, PAD + TILE, grid.size[1] - PAD)  # the last image's ground truth
    image = grid.convert("RGB").crop(bottom_left).resize((128, 128))
    results = detector(image, threshold=0.0)
    assert results and {"score", "label", "box"} <= set(results[0])

    image.save(tmp_path / "scene.jpg")  # `hf-detr predict` on the saved demo model and any image file
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                str(tmp_path / "model"),
                str(tmp_path / "scene.jpg"),
                "--threshold",
                "0",
                "--out",
                str(tmp_path / "annotated"),
            ]
        )
        == 0
    )
    detections = json.loads(capsys.readouterr().out)[0]["detections"]
    assert len(detections) == config["num_queries"] and {d["label"] for d in detections} <= set(SHAPES)
    assert Image.open(tmp_path / "annotated" / "scene.png").size == (128, 128)


@pytest.mark.slow
def test_demo_recipe_learns_in_a_short_run(tmp_path):
    """150 steps of the demo's recipe (model, optimizer, schedule, augmentation) on 8 images detect those images'
    shapes (AP50 0.76 when measured; an error in the boxes, the matching, the loss or the post-processing keeps it
    near 0). Seeded, so the number is reproducible; about 40 s on one thread."""
    from hf_detr.data.synthetic import ID2LABEL, make_synthetic_dataset
    from hf_detr.training import TrainConfig, train

    demo = presets.get("demo")
    data = make_synthetic_dataset(8, 0, 0, image_size=demo.image_size, seed=11)
    model = create_model("demo", id2label=ID2LABEL)
    config = TrainConfig(
        output_dir=str(tmp_path),
        max_steps=150,
        seed=0,
        cpu=True,
        save_steps=0,
        eval_split=None,
        disable_tqdm=True,
        report_to="none",
        **demo.training,
    )
    trained = train(config, dataset=data, model=model, image_processor=demo.image_processor()).model.eval()
    metrics = evaluate(trained, demo.image_processor(), data["train"], batch_size=8)
    print(f"AP50 on the 8 training images after 150 steps: {metrics['map_50']:.3f}")
    assert metrics["map_50"] >= 0.5


def test_demo_trains_and_tests_on_a_given_dataset(tmp_path):
    """`--dataset`: the recipe runs on another data set (here a two-class set saved to disk, no validation split)."""
    from datasets import DatasetDict

    from hf_detr.data.synthetic import make_synthetic_dataset

    held_out = make_synthetic_dataset(24, 0, 6, classes=("star", "ring"), seed=7)
    DatasetDict({"train": held_out["train"], "test": held_out["test"]}).save_to_disk(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["demo", "--dataset", str(tmp_path / "data"), "--output_dir", str(out), "--time_budget", "4"]) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "star", "1": "ring"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert_trained_for_the_budget(metrics, out / "run", 4)
    assert_saved_model_scores(metrics, out / "model", load_data(str(tmp_path / "data"))["test"])
    assert list(metrics["per_class"]) == ["star", "ring"]
    assert Image.open(out / "predictions.png").size[0] > 4 * 128
    assert_a_plot(out / "curves.png", (1100, 420))  # its validation panel says "no validation split"


def test_without_matplotlib_the_demo_says_how_to_install_it_before_training(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    assert main(["demo", "--output_dir", str(tmp_path / "out")]) == 1
    assert "pip install 'hf_detr[viz]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing generated or trained


def test_demo_dataset_without_test_split_fails_clearly(tmp_path, capsys):
    from hf_detr.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(4, 2, 2, seed=1)["train"].save_to_disk(tmp_path / "data")  # one split: "train"
    assert main(["demo", "--dataset", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out")]) != 0
    assert "has no split ['test'] (it has ['train'])" in capsys.readouterr().err


def test_segmentation_demo_trains_the_mask_head_on_the_detector(tmp_path, capsys):
    """`hf-detr demo --task segmentation` (the deprecated name of `--task instance`) on a tiny budget: two phases
    (the detector, then the mask head alone on it), a saved HfDetrForSegmentation whose detector weights are the first
    phase's, mask and panoptic metrics that re-scoring the folder reproduces, and a predictions.png with masks."""
    import torch
    from safetensors.torch import load_file

    from hf_detr import HfDetrForSegmentation
    from hf_detr.apps.demo import run_demo

    out = tmp_path / "demo"
    with pytest.warns(FutureWarning, match=r"task='segmentation'.*deprecated.*use 'instance'"):
        metrics = run_demo(
            out, time_budget=8.0, num_train=16, num_validation=0, num_test=4, show=2, task="segmentation"
        )
    for name in ("segm_map", "segm_map_50", "pq", "sq", "rq"):
        assert -1.0 <= metrics[name] <= 1.0
    detector, segmenter = load_file(out / "run" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert all(torch.equal(segmenter[key], value) for key, value in detector.items())
    assert any(key.startswith("mask_head.") for key in segmenter)
    model = HfDetrForSegmentation.from_pretrained(out / "model").eval()
    assert model.config.task == "instance"
    test = load_data(SYNTHETIC, ["test"], synthetic_sizes={"test": 4}, synthetic_image_size=128, masks=True)["test"]
    rescored = evaluate(model, HfDetrImageProcessor.from_pretrained(out / "model"), test, batch_size=50)
    assert {k: metrics[k] for k in ("segm_map", "pq")} == pytest.approx({k: rescored[k] for k in ("segm_map", "pq")})
    assert Image.open(out / "predictions.png").size[0] > 2 * TILE

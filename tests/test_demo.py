"""`hf-detr demo` end to end on a tiny budget: the README's first command must keep working."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from transformers import pipeline

from hf_detr.cli import main
from hf_detr.synthetic import SHAPES

pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_writes_model_metrics_and_pictures(tmp_path, monkeypatch, capsys):
    import hf_detr.demo as demo

    real_run_demo = demo.run_demo
    # a few images so the test takes seconds; everything else is the demo as `make demo` runs it
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: real_run_demo(
        *a, **k, num_train=32, num_validation=8, num_test=8, show=4))
    assert main(["demo", "--output_dir", str(tmp_path), "--time_budget", "8"]) == 0
    assert "test split: AP" in capsys.readouterr().out

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"map", "map_50", "map_75", "steps", "total_seconds"} <= set(metrics)
    assert metrics["steps"] >= 1 and 0 <= metrics["map_50"] <= 1
    assert Image.open(tmp_path / "predictions.png").size[0] > 4 * 128
    assert Image.open(tmp_path / "curves.png").size == (900, 300)

    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["num_query_groups"] == 1 and config["freeze_backbone_batchnorm"]  # saved as plain DETR
    detector = pipeline("object-detection", model=str(tmp_path / "model"))
    image = Image.open(tmp_path / "predictions.png").convert("RGB").crop((0, 0, 128, 128))
    results = detector(image, threshold=0.0)
    assert results and {"score", "label", "box"} <= set(results[0])

    image.save(tmp_path / "scene.jpg")  # `hf-detr predict` on the saved demo model and any image file
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "model"), str(tmp_path / "scene.jpg"), "--threshold", "0",
                 "--out", str(tmp_path / "annotated")]) == 0  # fmt: skip
    detections = json.loads(capsys.readouterr().out)[0]["detections"]
    assert len(detections) == config["num_queries"] and {d["label"] for d in detections} <= set(SHAPES)
    assert Image.open(tmp_path / "annotated" / "scene.png").size == (128, 128)


def test_demo_recipe_learns_in_a_short_run(tmp_path):
    """150 steps of the demo's recipe (model, optimizer, schedule, augmentation) on 8 images detect those images'
    shapes (AP50 0.76 when measured; an error in the boxes, the matching, the loss or the post-processing keeps it
    near 0). Seeded, so the number is reproducible; about 40 s on one thread."""
    import hf_detr.demo as demo
    from hf_detr import HfDetrConfig, HfDetrForObjectDetection
    from hf_detr.synthetic import ID2LABEL, make_synthetic_dataset
    from hf_detr.train import TrainConfig, train

    data = make_synthetic_dataset(8, 0, 0, seed=11)
    model = HfDetrForObjectDetection(HfDetrConfig(**demo.DEMO_MODEL, id2label=ID2LABEL))
    config = TrainConfig(output_dir=str(tmp_path), max_steps=150, seed=0, cpu=True, save_steps=0, eval_split=None,
                         disable_tqdm=True, report_to="none", **demo.DEMO_TRAINING)  # fmt: skip
    trained = train(config, dataset=data, model=model, image_processor=demo.demo_processor()).model.eval()
    metrics = demo.score_split(trained, demo.demo_processor(), data["train"], ID2LABEL, 8)
    print(f"AP50 on the 8 training images after 150 steps: {metrics['map_50']:.3f}")
    assert metrics["map_50"] >= 0.5


def test_demo_trains_and_tests_on_a_given_dataset(tmp_path):
    """`--dataset`: the recipe runs on another data set (here a two-class set saved to disk, no validation split)."""
    from datasets import DatasetDict

    from hf_detr.synthetic import make_synthetic_dataset

    held_out = make_synthetic_dataset(24, 0, 6, classes=("star", "ring"), seed=7)
    DatasetDict({"train": held_out["train"], "test": held_out["test"]}).save_to_disk(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["demo", "--dataset", str(tmp_path / "data"), "--output_dir", str(out), "--time_budget", "4"]) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "star", "1": "ring"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] >= 1 and 0 <= metrics["map_50"] <= 1
    assert Image.open(out / "predictions.png").size[0] > 4 * 128


def test_demo_dataset_without_test_split_fails_clearly(tmp_path, capsys):
    from hf_detr.synthetic import make_synthetic_dataset

    make_synthetic_dataset(4, 2, 2, seed=1)["train"].save_to_disk(tmp_path / "data")  # one split: "train"
    assert main(["demo", "--dataset", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out")]) != 0
    assert "has no split ['test'] (it has ['train'])" in capsys.readouterr().err

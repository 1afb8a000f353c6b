"""`hf-detr demo` end to end on a tiny budget: the README's first command must keep working."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from transformers import pipeline

from hf_detr.cli import main

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
    results = detector(Image.open(tmp_path / "predictions.png").convert("RGB").crop((0, 0, 128, 128)), threshold=0.0)
    assert results and {"score", "label", "box"} <= set(results[0])


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

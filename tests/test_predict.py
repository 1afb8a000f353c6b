"""`hf-detr predict` on a saved model folder and image files."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from hf_detr.apps.cli import main


def test_predict_prints_json_and_writes_annotated_pngs(model_dir, tmp_path, capsys):
    image_path = tmp_path / "scene.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(image_path)
    assert main(["predict", str(model_dir), str(image_path), "--threshold", "0", "--out", str(tmp_path / "out")]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == [str(image_path)]
    detections = results[0]["detections"]
    assert len(detections) == 10  # threshold 0 keeps every query of the tiny model
    assert {d["label"] for d in detections} <= {"circle", "square", "triangle"}
    assert all(set(d["box"]) == {"xmin", "ymin", "xmax", "ymax"} and 0 <= d["score"] <= 1 for d in detections)
    drawn = Image.open(tmp_path / "out" / "scene.png")
    assert drawn.size == (120, 90)
    assert np.abs(np.asarray(drawn, dtype=int) - np.asarray(Image.open(image_path), dtype=int)).max() > 0


def test_predict_names_missing_and_unreadable_images(model_dir, tmp_path, capsys):
    missing = tmp_path / "nope.png"
    assert main(["predict", str(model_dir), str(missing)]) == 1
    assert f"image {missing} does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    assert main(["predict", str(model_dir), str(broken)]) == 1
    assert f"image {broken} could not be read as an image" in capsys.readouterr().err


def test_predict_names_a_model_folder_without_its_image_processor(model_dir, tmp_path, capsys):
    from hf_detr import HfDetrForObjectDetection

    bare = tmp_path / "no-processor"
    HfDetrForObjectDetection.from_pretrained(model_dir).save_pretrained(bare)
    image_path = tmp_path / "scene.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image_path)
    assert main(["predict", str(bare), str(image_path)]) == 1
    assert "no image processor" in capsys.readouterr().err

"""pipeline("object-detection") on a saved random-init hf_detr folder (model + image processor)."""

from __future__ import annotations

import builtins
import logging

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import pipeline

from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrImageProcessor

ID2LABEL = {0: "cat", 1: "dog"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    config = HfDetrConfig(
        backbone="resnet18",
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_queries=10,
        id2label=ID2LABEL,
    )
    path = tmp_path_factory.mktemp("tiny_detr")
    HfDetrForObjectDetection(config).save_pretrained(path)
    HfDetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}).save_pretrained(path)
    return path


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_pipeline_detects_with_labels_from_id2label(folder, monkeypatch):
    records = _Records()
    logging.getLogger("transformers").addHandler(records)
    prompts = []
    monkeypatch.setattr(builtins, "input", lambda *args: prompts.append(args) or "n")
    try:
        detector = pipeline("object-detection", model=str(folder))
    finally:
        logging.getLogger("transformers").removeHandler(records)
    assert not [m for m in records.messages if "not supported" in m], records.messages
    assert not prompts  # no trust_remote_code question for a local hf_detr folder
    assert isinstance(detector.model, HfDetrForObjectDetection)
    assert isinstance(detector.image_processor, HfDetrImageProcessor)

    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8))
    detections = detector(image, threshold=0.0)
    assert len(detections) == 10  # threshold 0 keeps every query
    for detection in detections:
        assert set(detection) == {"score", "label", "box"}
        assert detection["label"] in ID2LABEL.values()
        assert set(detection["box"]) == {"xmin", "ymin", "xmax", "ymax"}
        assert all(isinstance(v, int) for v in detection["box"].values())

    # the same numbers computed by hand: processor -> model -> post-processing at the original (height, width)
    processor = detector.image_processor
    with torch.no_grad():
        outputs = detector.model(**processor(images=image, return_tensors="pt"))
    expected = processor.post_process_object_detection(outputs, 0.0, target_sizes=[(60, 90)])[0]
    assert [d["score"] for d in detections] == pytest.approx(expected["scores"].tolist(), abs=1e-6)
    assert [d["label"] for d in detections] == [ID2LABEL[i] for i in expected["labels"].tolist()]
    assert [list(d["box"].values()) for d in detections] == expected["boxes"].int().tolist()

    batched = detector([image, image.resize((40, 30))], threshold=0.0)
    assert len(batched) == 2 and batched[0] == detections

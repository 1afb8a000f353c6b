"""`hf-detr train --task instance|panoptic`: HfDetrForSegmentation trained on the synthetic shapes' masks."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from hf_detr import HfDetrForObjectDetection, HfDetrForSegmentation
from hf_detr.apps.cli import main
from training_commands import TINY_MODEL

# the tiny model with a head count that divides d_model + heads into GroupNorm's 8 groups
SEGMENTATION_MODEL = json.dumps({**TINY_MODEL, "encoder_attention_heads": 8, "decoder_attention_heads": 8})
ARGS = [
    "--cpu",
    "--model_kwargs",
    SEGMENTATION_MODEL,
    "--synthetic_image_size",
    "64",
    "--image_size",
    "64",
    "--synthetic_train_size",
    "6",
    "--synthetic_eval_size",
    "3",
    "--per_device_train_batch_size",
    "2",
    "--logging_steps",
    "1",
    "--disable_tqdm",
    "--report_to",
    "none",
    "--learning_rate",
    "1e-3",
    "--no_diagnostics",
]


def test_instance_training_saves_a_segmentation_model_scored_on_masks(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--output_dir", str(out), "--task", "instance", "--max_steps", "4", *ARGS]) == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [entry for entry in log if "loss_mask" in entry]
    assert len(losses) == 4 and all(entry["loss_dice"] > 0 for entry in losses)
    results = json.loads((out / "eval_results.json").read_text())
    assert {"map", "segm_map", "segm_map_50", "pq", "sq", "rq"} <= results.keys()
    model = HfDetrForSegmentation.from_pretrained(out)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["HfDetrForSegmentation"]
    assert "image-segmentation" in (out / "README.md").read_text()
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).pred_masks.shape == (1, TINY_MODEL["num_queries"], 16, 16)


def test_freeze_detection_trains_only_the_mask_head_of_a_detector(tmp_path):
    """The paper's second phase: a trained detector (here: 2 steps of detection) gets a mask head, and training it
    leaves every detector weight as it was."""
    detector = tmp_path / "detector"
    assert main(["train", "--output_dir", str(detector), "--max_steps", "2", "--eval_split", "none", *ARGS]) == 0
    assert type(HfDetrForObjectDetection.from_pretrained(detector)) is HfDetrForObjectDetection
    out = tmp_path / "masks"
    assert (
        main(
            [
                "train",
                "--output_dir",
                str(out),
                "--task",
                "panoptic",
                "--freeze_detection",
                "--model_name_or_path",
                str(detector),
                "--max_steps",
                "3",
                *ARGS,
            ]
        )
        == 0
    )
    before, after = load_file(detector / "model.safetensors"), load_file(out / "model.safetensors")
    head = ("mask_head.", "bbox_attention.")
    assert all(torch.equal(after[key], value) for key, value in before.items())
    assert any(key.startswith(head) for key in after)
    assert json.loads((out / "eval_results.json").read_text())["pq"] >= 0

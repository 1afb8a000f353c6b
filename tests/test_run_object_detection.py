"""examples/run_object_detection.py: Trainer fine-tuning of a tiny model on generated shapes, on the CPU."""

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
from safetensors.torch import load_file
from transformers import TrainingArguments

from helpers import EXAMPLE, launch_two_processes, load_script, tiny_config_kwargs
from hf_detr import (
    HfDetrConfig,
    HfDetrForObjectDetection,
    HfDetrImageProcessor,
    HfDetrObjectDetectionOutput,
    create_model,
)
from hf_detr.apps.cli import main as cli_main
from hf_detr.data.synthetic import ID2LABEL, make_synthetic_dataset
from hf_detr.evaluation import (
    COCO_STAT_NAMES,
    evaluation_collator,
    evaluation_dataset,
    make_compute_metrics,
    pack_labels,
    unpack_labels,
)
from hf_detr.training import DetrTrainer

run_object_detection = load_script(EXAMPLE)

TINY = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10)
STEPS_PER_EPOCH = 8  # 32 training images in batches of 4
# 32 / 8 shapes images of 64 px, DETR's augmentation scaled down to them
DATA_ARGS = [
    "--dataset",
    "synthetic",
    "--synthetic_train_size",
    "32",
    "--synthetic_eval_size",
    "8",
    "--synthetic_image_size",
    "64",
    "--image_size",
    "64",
    "--max_size",
    "112",
    "--augment",
    "detr",
]
# evaluation batches of 3 over 8 images: the last one is incomplete (see pack_labels)
RUN_ARGS = [
    *DATA_ARGS,
    "--do_train",
    "--do_eval",
    "--max_steps",
    str(3 * STEPS_PER_EPOCH),
    "--per_device_train_batch_size",
    "4",
    "--per_device_eval_batch_size",
    "3",
    "--learning_rate",
    "1e-3",
    "--backbone_learning_rate",
    "1e-4",
    "--lr_scheduler_type",
    "constant",
    "--logging_steps",
    "1",
    "--seed",
    "0",
    "--use_cpu",
    "--report_to",
    "none",
    "--disable_tqdm",
    "true",
    "--dataloader_num_workers",
    "0",
]


@pytest.fixture(scope="module")
def start_model(tmp_path_factory) -> str:
    """A tiny model with weights and 3 labels of its own: fine-tuning must replace its class head."""
    torch.manual_seed(0)
    config = HfDetrConfig(**tiny_config_kwargs(**TINY, id2label={0: "x", 1: "y", 2: "z"}))
    folder = tmp_path_factory.mktemp("start")
    HfDetrForObjectDetection(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def first_run(start_model, tmp_path_factory) -> tuple[Path, dict]:
    """Three epochs in-process; returns the output folder and the metrics main() returns."""
    output_dir = tmp_path_factory.mktemp("run") / "out"
    args = ["--model_name_or_path", start_model, "--output_dir", str(output_dir), *RUN_ARGS]
    return output_dir, run_object_detection.main(args)


def _state(folder: Path) -> dict:
    return json.loads((folder / "trainer_state.json").read_text())


def test_fine_tuning_learns_evaluates_and_keeps_the_best_checkpoint(first_run):
    output_dir, metrics = first_run
    state = _state(output_dir)
    losses = {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}
    evals = [entry for entry in state["log_history"] if "eval_map" in entry]

    assert sorted(losses) == list(range(1, 3 * STEPS_PER_EPOCH + 1))
    first_epoch = [losses[s] for s in range(1, STEPS_PER_EPOCH + 1)]
    last_epoch = [losses[s] for s in range(2 * STEPS_PER_EPOCH + 1, 3 * STEPS_PER_EPOCH + 1)]
    assert sum(last_epoch) / len(last_epoch) < 0.97 * sum(first_epoch) / len(first_epoch)

    # COCO metrics after every epoch, then once more for --do_eval
    assert [entry["step"] for entry in evals[:3]] == [STEPS_PER_EPOCH * k for k in (1, 2, 3)]
    for entry in evals:
        assert {"eval_loss", "eval_map_50", "eval_map_75", "eval_map_small", "eval_mar_1", "eval_mar_100"} <= set(entry)
    assert evals[2]["eval_loss"] < evals[0]["eval_loss"]
    assert "eval_map" in metrics and "train_loss" in metrics

    # the best epoch by eval_map (the first of equals) is the checkpoint kept and the model saved at the end
    best = max(evals[:3], key=lambda entry: (entry["eval_map"], -entry["step"]))
    assert state["best_metric"] == best["eval_map"]
    assert Path(state["best_model_checkpoint"]).name == f"checkpoint-{best['step']}"
    assert metrics["eval_loss"] == pytest.approx(best["eval_loss"], rel=1e-5)
    reloaded = HfDetrForObjectDetection.from_pretrained(state["best_model_checkpoint"])
    assert reloaded.config.id2label == ID2LABEL and reloaded.class_embed.out_features == len(ID2LABEL) + 1
    saved, best_weights = load_file(output_dir / "model.safetensors"), reloaded.state_dict()
    assert saved.keys() <= best_weights.keys()
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, best_weights[name], rtol=0, atol=0, msg=name)

    # the image processor is saved with the model and resizes as the evaluation did
    processor = HfDetrImageProcessor.from_pretrained(output_dir)
    assert processor.size.shortest_edge == 64 and processor.size.longest_edge == 112


def test_resume_in_a_subprocess_continues_from_the_checkpoint(start_model, first_run, tmp_path):
    first_dir, _ = first_run
    checkpoint = first_dir / f"checkpoint-{2 * STEPS_PER_EPOCH}"
    output_dir = tmp_path / "resumed"
    args = [
        "--model_name_or_path",
        start_model,
        "--output_dir",
        str(output_dir),
        *RUN_ARGS,
        "--resume_from_checkpoint",
        str(checkpoint),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'eval_map'" in done.stdout

    assert _state(checkpoint)["global_step"] == 2 * STEPS_PER_EPOCH
    state = _state(output_dir)
    assert state["global_step"] == 3 * STEPS_PER_EPOCH
    new_losses = {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e and e["step"] > 2 * STEPS_PER_EPOCH}
    # the resumed run trains only the steps after the checkpoint, on the same batches as the uninterrupted run
    assert sorted(new_losses) == list(range(2 * STEPS_PER_EPOCH + 1, 3 * STEPS_PER_EPOCH + 1))
    original = {e["step"]: e["loss"] for e in _state(first_dir)["log_history"] if "loss" in e}
    for step, loss in new_losses.items():
        assert loss == pytest.approx(original[step], rel=1e-5), step


def test_hf_detr_evaluate_reproduces_the_logged_metrics(first_run, tmp_path, capsys):
    output_dir, metrics = first_run
    # the script's evaluation split: generated with the run's seed
    validation = make_synthetic_dataset(32, 8, 0, image_size=64, seed=0)["validation"]
    datasets.DatasetDict({"validation": validation}).save_to_disk(str(tmp_path / "data"))
    assert (
        cli_main(
            ["evaluate", str(output_dir), "--dataset", str(tmp_path / "data"), "--per_device_eval_batch_size", "8"]
        )
        == 0
    )
    table = {line.split()[0]: float(line.split()[1]) for line in capsys.readouterr().out.splitlines()[2:14]}
    assert table == {name: metrics[f"eval_{name}"] for name in COCO_STAT_NAMES}
    assert table["mar_100"] > 0  # some boxes found: the comparison is not between zeros only


class LabelEchoDetector(torch.nn.Module):
    """Predicts exactly the boxes and classes of its labels (score ~1), "no object" for the other queries."""

    def __init__(self, num_labels: int, num_queries: int = 12) -> None:
        super().__init__()
        self.num_labels, self.num_queries = num_labels, num_queries
        self.config = HfDetrConfig(num_labels=num_labels, num_queries=num_queries)  # a detector's: task "detection"
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, pixel_values, pixel_mask=None, labels=None) -> HfDetrObjectDetectionOutput:
        logits = torch.full((len(labels), self.num_queries, self.num_labels + 1), -20.0)
        logits[..., -1] = 20.0
        boxes = torch.full((len(labels), self.num_queries, 4), 0.5)
        for i, label in enumerate(labels):
            count = len(label["class_labels"])
            logits[i, :count, -1] = -20.0
            logits[i, torch.arange(count), label["class_labels"]] = 20.0
            boxes[i, :count] = label["boxes"]
        return HfDetrObjectDetectionOutput(loss=self.weight + 1.0, logits=logits, pred_boxes=boxes)


def evaluate_label_echo(num_images: int, batch_size: int, output_dir: str) -> dict[str, float]:
    """`DetrTrainer.evaluate` of :class:`LabelEchoDetector` on generated shapes, with the example's training
    arguments and evaluation batches: 1.0 unless boxes are lost."""
    split = make_synthetic_dataset(0, num_images, 0, image_size=64, seed=1)["validation"]
    processor = HfDetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 112})
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_eval_batch_size=batch_size,
        use_cpu=True,
        report_to="none",
        **run_object_detection.TRAINING_DEFAULTS,
    )
    trainer = DetrTrainer(
        model=LabelEchoDetector(len(ID2LABEL)),
        args=args,
        eval_dataset=evaluation_dataset(split, ID2LABEL),
        data_collator=None,
        eval_data_collator=evaluation_collator(processor),
        compute_metrics=make_compute_metrics(processor, id2label=ID2LABEL),
        backbone_learning_rate=1e-5,
    )
    return trainer.evaluate()  # labels packed by DetrTrainer, unpacked by make_compute_metrics


def test_an_incomplete_last_evaluation_batch_keeps_every_box(tmp_path):
    # 8 images in batches of 3: accelerate cuts the last batch to its 2 real images; packed labels survive that
    metrics = evaluate_label_echo(8, 3, str(tmp_path))
    assert metrics["eval_map"] == metrics["eval_mar_100"] == 1.0


def test_labels_survive_packing():
    labels = [
        {
            "orig_size": torch.tensor([60, 80]),
            "size": torch.tensor([48, 64]),
            "image_id": torch.tensor([7]),
            "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.1, 0.2, 0.1, 0.1]]),
            "class_labels": torch.tensor([2, 0]),
            "iscrowd": torch.tensor([0, 1]),
            "area": torch.tensor([12.5, 3.0]),
        },
        {
            "orig_size": torch.tensor([90, 70]),
            "size": torch.tensor([64, 50]),
            "image_id": torch.tensor([123456]),
            "boxes": torch.zeros(0, 4),
            "class_labels": torch.zeros(0, dtype=torch.int64),
            "iscrowd": torch.zeros(0, dtype=torch.int64),
            "area": torch.zeros(0),
        },
    ]
    packed = pack_labels(labels)
    assert packed.shape == (2, 3, 7)
    # padding rows (as accelerate adds across processes) are ignored
    padded = torch.cat([packed, torch.full((2, 2, 7), -100.0, dtype=torch.float64)], dim=1)
    for original, unpacked in zip(labels, unpack_labels(padded.numpy())):
        assert unpacked.keys() == original.keys()
        for key, value in original.items():
            np.testing.assert_allclose(unpacked[key], value.numpy().reshape(unpacked[key].shape), err_msg=key)


def test_distributed_evaluation_with_torchrun_scores_every_image_once(tmp_path):
    # 7 images over 2 processes in batches of 3: box counts differ per process and the last step is padded by
    # accelerate with repeated images, which gather_for_metrics must drop
    script = f"""
        from helpers import report_metrics
        from test_run_object_detection import evaluate_label_echo
        report_metrics(evaluate_label_echo(7, 3, {str(tmp_path / "out")!r}))
    """
    results = launch_two_processes(script, tmp_path)  # every process gets the metrics
    for metrics in results:
        assert metrics["eval_map"] == metrics["eval_mar_100"] == 1.0


def test_backbone_has_its_own_learning_rate_and_weight_decay(tmp_path):
    model = HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs(**TINY)))
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", learning_rate=1e-4, weight_decay=1e-4
    )
    trainer = DetrTrainer(model=model, args=args, backbone_learning_rate=1e-5)
    groups = trainer.create_optimizer().param_groups
    by_lr = {group["lr"]: {id(p) for p in group["params"]} for group in groups}
    backbone = {id(p) for name, p in model.named_parameters() if name.startswith("model.backbone.") and p.requires_grad}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert by_lr == {1e-5: backbone, 1e-4: trainable - backbone}
    assert backbone and any(not p.requires_grad for p in model.model.backbone.parameters())  # the frozen stem
    assert all(group["weight_decay"] == 1e-4 for group in groups)


def test_zero_backbone_learning_rate_freezes_the_backbone(start_model, tmp_path, monkeypatch):
    trainers = []

    class RecordingTrainer(DetrTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    monkeypatch.setattr(run_object_detection, "DetrTrainer", RecordingTrainer)
    output_dir = tmp_path / "frozen"
    run_object_detection.main(
        [
            "--model_name_or_path",
            start_model,
            "--output_dir",
            str(output_dir),
            *DATA_ARGS,
            "--do_train",
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--learning_rate",
            "1e-4",
            "--backbone_learning_rate",
            "0",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
            "--use_cpu",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
        ]
    )
    (trainer,) = trainers
    model = trainer.model
    assert not any(p.requires_grad for p in model.model.backbone.parameters())
    (group,) = trainer.optimizer.param_groups
    assert group["initial_lr"] == 1e-4 and {id(p) for p in group["params"]} == {
        id(p) for p in model.parameters() if p.requires_grad
    }
    # the backbone kept the starting weights; the rest trained
    start, saved = load_file(Path(start_model) / "model.safetensors"), load_file(output_dir / "model.safetensors")
    backbone = [name for name in saved if name.startswith("model.backbone.")]
    assert backbone and all(torch.equal(saved[name], start[name]) for name in backbone)
    assert any(
        not torch.equal(saved[name], start[name])
        for name in saved
        if name not in backbone and name in start and not name.startswith("class_embed.")
    )


def test_model_from_a_config_folder_and_overrides_that_break_weights(start_model, tmp_path, capsys):
    labels = dict(ID2LABEL)
    config_only = tmp_path / "config-only"
    HfDetrConfig(**tiny_config_kwargs(**TINY)).save_pretrained(config_only)
    model = create_model(config_only, id2label=labels, num_queries=7, eos_coefficient=0.2)
    assert model.config.num_queries == 7 and model.config.eos_coefficient == 0.2
    assert model.config.id2label == labels and model.class_embed.out_features == len(labels) + 1

    with pytest.raises(ValueError, match="dropout=1.5 is invalid"):
        create_model(config_only, id2label=labels, dropout=1.5)
    # the example passes --model_kwargs on: with weights, an override that changes a weight's shape is an error
    # (num_queries is not one: create_model resizes the queries, tests/test_num_queries.py)
    with pytest.raises(ValueError, match=r"model\.decoder\.layers\.0\.linear1\.bias.* would be reinitialized"):
        run_object_detection.main(
            [
                "--model_name_or_path",
                start_model,
                "--output_dir",
                str(tmp_path / "out"),
                *DATA_ARGS,
                "--model_kwargs",
                '{"decoder_ffn_dim": 96}',
                "--use_cpu",
                "--report_to",
                "none",
            ]
        )
    # the option is hf-detr train's (ModelOptions): its JSON is checked by the parser, which exits naming it
    with pytest.raises(SystemExit):
        run_object_detection.main(
            [
                "--model_name_or_path",
                start_model,
                "--output_dir",
                str(tmp_path / "out"),
                *DATA_ARGS,
                "--model_kwargs",
                "num_queries=7",
                "--use_cpu",
                "--report_to",
                "none",
            ]
        )
    assert "argument --model_kwargs" in capsys.readouterr().err

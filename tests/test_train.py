"""The accelerate training loop on one process: `hf_detr.training` (config, setup, checkpoints, loop),
`hf_detr.data.collate` and `hf-detr train`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, RepoUrl
from PIL import Image
from torchvision.transforms import v2
from transformers import pipeline

import hf_detr.modeling.matcher
from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrImageProcessor, create_image_processor, create_model
from hf_detr.apps.cli import main as cli_main
from hf_detr.data.collate import DetectionCollator, DetectionDataset
from hf_detr.data.sources import load_data
from hf_detr.data.synthetic import ID2LABEL, make_synthetic_dataset
from hf_detr.data.transforms import training_transform
from hf_detr.evaluation import evaluation_collator
from hf_detr.modeling.loss import LossTerm, build_criterion
from hf_detr.training import (
    TrainConfig,
    TrainingDivergedError,
    add_arguments,
    config_from_args,
    latest_checkpoint,
    loop,
    lr_factor,
    parameter_groups,
    train,
)
from hf_detr.training.loop import _trackers
from hf_detr.training.setup import training_data, with_image_size
from training_commands import TINY, TINY_MODEL, command

EXAMPLES = Path(__file__).parents[1] / "examples"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shapes() -> datasets.DatasetDict:  # noqa: F821
    return make_synthetic_dataset(8, 3, 0, image_size=64, seed=0)


def tiny_config(tmp_path: Path, **overrides) -> TrainConfig:
    kwargs = dict(
        output_dir=str(tmp_path / "run"),
        model_kwargs=TINY_MODEL,
        cpu=True,
        image_size=64,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        logging_steps=1,
        disable_tqdm=True,
        eval_split=None,
        save_steps=0,
        report_to="none",
    )
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


# ----------------------------------------------------------------------------------------------- the loop


def test_documented_single_device_command_trains_a_model_pipeline_loads(tmp_path: Path) -> None:
    output = tmp_path / "run"
    argv = (
        command("single")[1:]
        + TINY
        + [
            "--synthetic_train_size",
            "8",
            "--synthetic_eval_size",
            "3",
            "--max_steps",
            "24",
            "--learning_rate",
            "1e-3",
            "--lr_scheduler",
            "constant",
            "--logging_steps",
            "4",
            "--eval_steps",
            "12",
            "--output_dir",
            str(output),
        ]
    )
    assert cli_main(argv) == 0

    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert len(losses) == 6  # every 4 steps of 24
    assert losses[-1] < losses[0]  # a tiny model memorizing 8 images at a high learning rate
    assert [entry["step"] for entry in log if "eval_map" in entry] == [12, 24]
    assert json.loads((output / "eval_results.json").read_text()).keys() >= {"map", "map_50", "mar_100"}
    assert latest_checkpoint(output).name == "step_24"
    # the end of training: the diagnostics of the evaluation split (every ground-truth box in one matrix row)
    confusion = json.loads((output / "diagnostics" / "confusion_matrix.json").read_text())
    evaluated = load_data(
        "synthetic", ["validation"], synthetic_sizes={"validation": 3}, synthetic_image_size=64, seed=42
    )  # TrainConfig's default seed
    objects = [0] * len(ID2LABEL)
    for objs in evaluated["validation"]["objects"]:
        for category in objs["category"]:
            objects[category] += 1
    assert [sum(row) for row in confusion["matrix"][:-1]] == objects
    for picture in ("confusion_matrix.png", "pr_curves_per_class.png", "worst_images.png"):
        assert (output / "diagnostics" / picture).stat().st_size > 1000

    detector = pipeline("object-detection", model=str(output))
    detections = detector(Image.new("RGB", (80, 64), "white"), threshold=0.0)
    assert len(detections) == TINY_MODEL["num_queries"]
    assert {d["label"] for d in detections} <= set(ID2LABEL.values())
    # the saved processor resizes like evaluation did: shorter side 64, longer side capped at 64 * 1333 / 800
    assert HfDetrImageProcessor.from_pretrained(output).size.shortest_edge == 64


def test_documented_commands_differ_only_in_how_they_launch() -> None:
    single = command("single")
    assert single[:2] == ["hf-detr", "train"]
    for kind in ("multi-gpu", "multi-node"):
        launched = command(kind)
        module = launched.index("-m")
        assert launched[module + 1 : module + 3] == ["hf_detr", "train"] and launched[module + 3 :] == single[2:]


def test_bf16_autocast_keeps_the_matcher_and_losses_in_float32(tmp_path: Path, shapes, monkeypatch) -> None:
    seen = {"matcher inputs": set(), "assignment costs": set(), "loss terms": set()}
    assignment = hf_detr.modeling.matcher.linear_sum_assignment

    def recording_assignment(cost):
        seen["assignment costs"].add(str(cost.dtype))
        return assignment(cost)

    class RecordingMatcher:
        """A `Matcher` around DETR's, recording the dtypes it is given."""

        def __init__(self, matcher) -> None:
            self.matcher = matcher

        def __call__(self, logits, pred_boxes, *args, **kwargs):
            seen["matcher inputs"] |= {logits.dtype, pred_boxes.dtype}
            return self.matcher(logits, pred_boxes, *args, **kwargs)

    class RecordingTerm(LossTerm):
        """A `LossTerm` around one of DETR's, recording the dtypes of its values."""

        def __init__(self, term: LossTerm) -> None:
            self.term, self.takes_last_group = term, term.takes_last_group

        def __call__(self, outputs, targets):
            values = self.term(outputs, targets)
            seen["loss terms"] |= {value.dtype for value in values.values()}
            return values

    monkeypatch.setattr(hf_detr.modeling.matcher, "linear_sum_assignment", recording_assignment)
    model = HfDetrForObjectDetection(HfDetrConfig(**TINY_MODEL, id2label=ID2LABEL))
    criterion = build_criterion(model.config)  # the loss the model builds itself, with its matcher and terms wrapped
    model.criterion = dataclasses.replace(
        criterion,
        matcher=RecordingMatcher(criterion.matcher),
        losses=[RecordingTerm(term) for term in criterion.losses],
    )
    result = train(tiny_config(tmp_path, mixed_precision="bf16", max_steps=2), dataset=shapes, model=model)

    assert result.global_step == 2
    assert torch.bfloat16 in seen["matcher inputs"]  # autocast was on: the heads computed in bf16
    assert seen["assignment costs"] == {"float32"}
    assert seen["loss terms"] == {torch.float32}


def test_the_model_trained_in_bf16_predicts_in_float32_as_its_saved_folder(tmp_path: Path, shapes) -> None:
    """accelerate's `unwrap_model` keeps the autocast wrapper on `forward` by default: the returned model would go on
    predicting in bf16 (the demo's metrics then differed from its saved folder's). It must predict what the folder
    loaded afresh predicts."""
    result = train(tiny_config(tmp_path, mixed_precision="bf16", max_steps=2), dataset=shapes)
    reloaded = HfDetrForObjectDetection.from_pretrained(result.output_dir).eval()
    pixel_values = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        returned, saved = result.model.eval()(pixel_values), reloaded(pixel_values)
    torch.testing.assert_close(returned.logits, saved.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(returned.pred_boxes, saved.pred_boxes, rtol=0, atol=1e-6)


class _FailingDetector(HfDetrForObjectDetection):
    """Diverges at the forward pass of optimizer step `fail_at`: NaN outputs (`how="outputs"`) or an infinite loss."""

    fail_at, how, calls = 3, "outputs", 0

    def forward(self, pixel_values, *args, **kwargs):
        type(self).calls += 1
        if type(self).calls == self.fail_at and self.how == "outputs":
            pixel_values = pixel_values * float("nan")
        outputs = super().forward(pixel_values, *args, **kwargs)
        if type(self).calls == self.fail_at and self.how == "loss":
            outputs.loss = outputs.loss * float("inf")
        return outputs


@pytest.mark.parametrize("how", ["outputs", "loss"])
def test_diverging_run_stops_naming_the_step(tmp_path: Path, shapes, how: str) -> None:
    _FailingDetector.how, _FailingDetector.calls = how, 0
    model = _FailingDetector(HfDetrConfig(**TINY_MODEL, id2label=ID2LABEL))
    with pytest.raises(TrainingDivergedError, match=r"step 3 \(epoch 0, batch 2\)") as error:
        train(tiny_config(tmp_path, max_steps=5), dataset=shapes, model=model)
    expected = "logits contains NaN or inf" if how == "outputs" else "the loss is inf"
    assert expected in str(error.value)


def test_learning_rate_blowup_stops_with_the_step_not_a_scipy_error(tmp_path: Path, shapes) -> None:
    with pytest.raises(TrainingDivergedError) as error:
        train(tiny_config(tmp_path, max_steps=6, learning_rate=1e6, backbone_learning_rate=1e6), dataset=shapes)
    message = str(error.value)
    step = int(re.search(r"step (\d+)", message).group(1))
    assert step >= 2  # the first step's loss is finite; the update it makes is what blows up
    assert "NaN or inf" in message or "the loss is" in message
    assert "infeasible" not in message


def test_example_script_stops_cleanly_after_the_step_that_exceeds_the_time_budget(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    output = tmp_path / "run"
    # every step takes far more than a millisecond, so the budget runs out during the first one
    argv = [
        *TINY,
        "--synthetic_train_size",
        "4",
        "--eval_split",
        "none",
        "--time_budget",
        "0.001",
        "--save_steps",
        "50",
        "--output_dir",
        str(output),
        "--push_to_hub",
        "--hub_model_id",
        "me/shapes",
    ]
    pushed = []  # no network here: record the uploads (repository, files of the folder) instead

    def upload_folder(api, folder_path, repo_id, **kwargs):
        pushed.append((repo_id, sorted(path.name for path in Path(folder_path).iterdir())))

    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kwargs: RepoUrl(f"https://hf.co/{repo_id}"))
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(sys, "argv", ["train_accelerate.py", *argv])
    runpy.run_path(str(EXAMPLES / "train_accelerate.py"), run_name="__main__")
    assert "stopped after 1 steps (time_budget)" in capsys.readouterr().out
    assert latest_checkpoint(output).name == "step_1"  # resumable
    assert (output / "model.safetensors").is_file()
    # one commit with the model, its image processor and the card of the saved folder
    ((repo, files),) = pushed
    assert repo == "me/shapes"
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= set(files)
    assert set(files) <= {path.name for path in output.iterdir()}


def test_gradient_accumulation_counts_optimizer_steps(tmp_path: Path, shapes) -> None:
    # 8 images in batches of 2: 4 batches per epoch, accumulated 3 + 1 (the epoch's last group is short)
    result = train(tiny_config(tmp_path, num_train_epochs=2, gradient_accumulation_steps=3), dataset=shapes)
    assert result.global_step == 4
    assert [entry["epoch"] for entry in result.log_history] == [0.75, 1.0, 1.75, 2.0]


def test_one_to_one_finish_switches_before_the_steps_of_its_share(tmp_path: Path, shapes) -> None:
    groups = {**TINY_MODEL, "num_query_groups": 2, "one_to_many_repeats": 2}
    result = train(tiny_config(tmp_path, max_steps=4, model_kwargs=groups, one_to_one_finish=0.5), dataset=shapes)
    # steps 1 and 2 train the one-to-many group too; steps 3 and 4, the last half, the first group alone
    assert ["one_to_many_loss_ce" in entry for entry in result.log_history] == [True, True, False, False]
    assert result.model.config.num_query_groups == 1  # saved as plain DETR


def test_output_dir_with_checkpoints_needs_resume(tmp_path: Path, shapes) -> None:
    state = tmp_path / "run" / "checkpoints" / "step_3"
    state.mkdir(parents=True)
    (state / "trainer_state.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds checkpoints: pass --resume"):
        train(tiny_config(tmp_path, max_steps=1), dataset=shapes)
    with pytest.raises(ValueError, match="no split .val."):
        train(tiny_config(tmp_path / "other", max_steps=1, eval_split="val"), dataset=shapes)


# ------------------------------------------------------------------------------------------- the pieces


def test_lr_schedules() -> None:
    step = TrainConfig(output_dir="x", max_steps=10)
    assert [lr_factor(p, 5, step) for p in (0.0, 0.66, 2 / 3, 0.9)] == [1.0, 1.0, 0.1, 0.1]
    cosine = TrainConfig(output_dir="x", max_steps=10, lr_scheduler="cosine", warmup_steps=4)
    assert lr_factor(0.5, 10, cosine) == pytest.approx(0.5)
    assert lr_factor(1.0, 10, cosine) == pytest.approx(0.0)
    assert lr_factor(0.0, 0, cosine) == pytest.approx(0.25)  # warmup: step 1 of 4
    assert lr_factor(0.0, 3, cosine) == pytest.approx(1.0)


def test_trackers(monkeypatch) -> None:
    monkeypatch.setattr(loop, "is_tensorboard_available", lambda: True)
    assert _trackers("auto") == ["tensorboard"]
    monkeypatch.setattr(loop, "is_tensorboard_available", lambda: False)
    assert _trackers("auto") is None
    assert _trackers("none") is None and _trackers("wandb") == ["wandb"]


def test_parameter_groups_follow_detr() -> None:
    model = HfDetrForObjectDetection(HfDetrConfig(**TINY_MODEL))
    groups = parameter_groups(model, 1e-4, 1e-5)
    assert [(g["name"], g["lr"]) for g in groups] == [("transformer", 1e-4), ("backbone", 1e-5)]
    backbone = {id(p) for p in model.model.backbone.parameters()}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.model.backbone.parameters() if p.requires_grad}
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(trainable)
    assert not backbone & {id(p) for p in groups[0]["params"]}

    # learning rate 0: no backbone group, and no side effect (freezing is the caller's `model.freeze_backbone()`)
    frozen = parameter_groups(model, 1e-4, 0)
    assert [g["name"] for g in frozen] == ["transformer"]
    assert {id(p) for p in frozen[0]["params"]} == {id(p) for p in groups[0]["params"]}
    assert any(p.requires_grad for p in model.model.backbone.parameters())
    model.freeze_backbone()
    assert [g["name"] for g in parameter_groups(model, 1e-4, 1e-5)] == ["transformer"]  # an empty group is left out


def test_zero_backbone_learning_rate_freezes_the_backbone_in_training(tmp_path: Path, shapes) -> None:
    model = HfDetrForObjectDetection(HfDetrConfig(**TINY_MODEL, id2label=ID2LABEL))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    config = tiny_config(tmp_path, max_steps=2, learning_rate=1e-3, backbone_learning_rate=0)
    result = train(config, dataset=shapes, model=model)
    assert not any(p.requires_grad for p in result.model.model.backbone.parameters())
    after = result.model.state_dict()
    backbone = [name for name in before if name.startswith("model.backbone.")]
    assert backbone and all(torch.equal(after[name], before[name]) for name in backbone)
    assert any(not torch.equal(after[name], before[name]) for name in before if name not in backbone)
    lr_logged = {key for entry in result.log_history for key in entry if key.startswith("lr_")}
    assert lr_logged == {"lr_transformer"}  # the optimizer had no backbone group


def test_create_model_replaces_the_head_only_for_new_labels(tmp_path: Path) -> None:
    config_only = tmp_path / "config_only"
    HfDetrConfig(**TINY_MODEL).save_pretrained(config_only)  # like a hub_configs/ folder
    model = create_model(config_only, id2label=ID2LABEL)
    assert model.config.id2label == ID2LABEL and model.class_embed.out_features == len(ID2LABEL) + 1
    assert isinstance(create_image_processor(config_only), HfDetrImageProcessor)

    trained = tmp_path / "trained"
    model.save_pretrained(trained)
    same = create_model(trained, id2label=ID2LABEL)
    assert torch.equal(same.class_embed.weight, model.class_embed.weight)
    renamed = {i: f"{name}!" for i, name in ID2LABEL.items()}  # as many classes, other names: a new head
    other = create_model(trained, id2label=renamed)
    assert other.config.id2label == renamed and other.config.label2id["circle!"] == 0
    assert not torch.equal(other.class_embed.weight, model.class_embed.weight)
    assert torch.equal(other.bbox_embed.layers[0].weight, model.bbox_embed.layers[0].weight)
    fewer = create_model(trained, id2label={0: "a", 1: "b"}, eos_coefficient=0.2)
    assert fewer.class_embed.out_features == 3 and fewer.config.eos_coefficient == 0.2


def test_command_line_options_make_the_config() -> None:
    parser = add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            "--output_dir",
            "out",
            "--model_kwargs",
            '{"d_model": 64}',
            "--max_steps",
            "3",
            "--augment",
            "none",
            "--resume",
            "--mixed_precision",
            "bf16",
            "--eval_split",
            "none",
        ]
    )
    config = config_from_args(args)
    assert config.model_kwargs == {"d_model": 64} and config.max_steps == 3 and config.augment == "none"
    assert config.resume == "latest" and config.mixed_precision == "bf16" and config.eval_split is None
    assert config.max_grad_norm == 0.1 and config.backbone_learning_rate == 1e-5 and config.weight_decay == 1e-4
    with pytest.raises(SystemExit):
        parser.parse_args(["--output_dir", "out", "--model_kwargs", "[1, 2]"])
    with pytest.raises(ValueError, match="how long to train"):
        TrainConfig(output_dir="out")
    with pytest.raises(ValueError, match="per_device_train_batch_size=0"):
        TrainConfig(output_dir="out", max_steps=1, per_device_train_batch_size=0)
    with pytest.raises(ValueError, match=r"augment=True is invalid: choose 'detr'"):  # the bool it was before
        TrainConfig(output_dir="out", max_steps=1, augment=True)


def test_latest_checkpoint_skips_incomplete_ones(tmp_path: Path) -> None:
    for step, complete in ((2, True), (10, True), (12, False)):
        folder = tmp_path / "checkpoints" / f"step_{step}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path).name == "step_10"  # step_12 was being written when the run died
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_detr_recipe_is_scaled_to_the_image_size() -> None:
    image = {
        "image": Image.new("RGB", (160, 128)),
        "image_id": 0,
        "objects": {"bbox": [[10.0, 20.0, 60.0, 50.0]], "category": [0]},
    }
    dataset = DetectionDataset([image], training_transform("detr", 128, 213))
    shorter = set()
    for epoch in range(30):
        dataset.set_epoch(epoch)
        shorter.add(min(dataset[0]["image"].size))
    assert shorter <= set(range(77, 129)) and len(shorter) > 3  # DETR's 480-800 scaled by 128 / 800
    # evaluation resizes with the image processor (as inference does): shorter side 128, longer side at most 213
    default = HfDetrImageProcessor()
    processor = with_image_size(default, 128)
    assert (processor.size.shortest_edge, processor.size.longest_edge) == (128, 213)
    assert (default.size.shortest_edge, default.size.longest_edge) == (800, 1333)  # a copy: the caller's is unchanged
    evaluated = evaluation_collator(processor)([DetectionDataset([image])[0]])
    assert evaluated["pixel_values"].shape == (1, 3, 128, 160)
    assert evaluated["labels"][0]["orig_size"].tolist() == [128, 160]
    # the recipe resizes itself: its batches are only padded, not resized again
    _, collator = training_data([image], processor, "detr", seed=0)
    assert not collator.do_resize
    with pytest.raises(ValueError, match="augment='detr' scales DETR's recipe to a processor size with shortest_edge"):
        training_data([image], HfDetrImageProcessor(size={"height": 64, "width": 80}), "detr", seed=0)


def test_flip_augmentation_only_mirrors() -> None:
    """`augment="flip"`: the evaluation resize, and half the epochs the mirror image with its box mirrored."""
    pixels = np.random.default_rng(0).integers(0, 255, (100, 160, 3), dtype=np.uint8)
    image = {
        "image": Image.fromarray(pixels),
        "image_id": 0,
        "objects": {"bbox": [[10.0, 20.0, 60.0, 50.0]], "category": [0]},
    }
    processor = with_image_size(HfDetrImageProcessor(), 50, 100)
    dataset, collator = training_data([image], processor, "flip", seed=0)
    plain, plain_collator = training_data([image], processor, "none", seed=0)
    assert plain.transform is None and collator.do_resize and plain_collator.do_resize  # the processor resizes both
    resized = plain_collator([plain[0]])
    evaluated = evaluation_collator(processor)([DetectionDataset([image])[0]])
    assert resized["pixel_values"].shape == (1, 3, 50, 80)
    assert torch.equal(resized["pixel_values"], evaluated["pixel_values"])  # "none" is the evaluation resize
    seen = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        out = dataset[0]
        array = np.asarray(out["image"])
        assert array.shape == (100, 160, 3) and out["objects"]["category"] == [0]
        batch = collator([out])
        assert batch["pixel_values"].shape == (1, 3, 50, 80)
        (box,) = batch["labels"][0]["boxes"].tolist()  # normalized (cx, cy, w, h)
        if np.array_equal(array, pixels):
            seen.add("same")
            assert out["objects"]["bbox"] == [[10.0, 20.0, 60.0, 50.0]]
            assert torch.equal(batch["pixel_values"], resized["pixel_values"])
            assert box == pytest.approx([0.25, 0.45, 0.375, 0.5])
        else:
            assert np.array_equal(array, pixels[:, ::-1])
            seen.add("mirrored")
            assert out["objects"]["bbox"] == [[160 - 10.0 - 60.0, 20.0, 60.0, 50.0]]
            torch.testing.assert_close(batch["pixel_values"], resized["pixel_values"].flip(-1), rtol=0, atol=1e-5)
            assert box == pytest.approx([0.75, 0.45, 0.375, 0.5])
    assert seen == {"same", "mirrored"}
    with pytest.raises(ValueError, match="augment='crop': choose 'detr'"):
        training_transform("crop", 50, 100)


# -------------------------------------------------------------------------------------- data/collate.py


def test_augmentation_depends_only_on_seed_epoch_and_index(shapes) -> None:
    dataset = DetectionDataset(shapes["train"], training_transform("detr", 64, 107), seed=5)

    def pixels(epoch: int, index: int) -> torch.Tensor:
        dataset.set_epoch(epoch)
        return torch.as_tensor(np.array(dataset[index]["image"]))

    first = pixels(1, 2)
    torch.manual_seed(123)  # the global RNG state does not matter...
    state = torch.get_rng_state()
    assert torch.equal(pixels(1, 2), first)
    assert torch.equal(torch.get_rng_state(), state)  # ...and is not consumed
    assert any(not torch.equal(pixels(epoch, 2), first) for epoch in range(2, 6))  # new epochs, new augmentations


def test_collator_pads_and_keeps_original_sizes(shapes) -> None:
    examples = [DetectionDataset(shapes["validation"], v2.Resize(48, max_size=80))[i] for i in range(3)]
    examples[1]["image"] = examples[1]["image"].crop((0, 0, 48, 40))  # a smaller image (without objects) is padded
    objects = examples[0]["objects"]
    examples[0]["objects"] = {**objects, "iscrowd": [1] + objects["iscrowd"][1:]}
    batch = DetectionCollator(HfDetrImageProcessor())(examples)
    assert batch["pixel_values"].shape == (3, 3, 48, 48)
    assert batch["pixel_mask"][1].sum() == 48 * 40 and batch["pixel_mask"][0].all()
    assert [label["orig_size"].tolist() for label in batch["labels"]] == [[64, 64]] * 3
    assert [label["size"].tolist() for label in batch["labels"]] == [[48, 48], [40, 48], [48, 48]]
    assert [int(label["image_id"][0]) for label in batch["labels"]] == [0, 1, 2]
    assert [len(label["boxes"]) for label in batch["labels"]] == [len(objects["bbox"]) - 1, 0, 1]  # crowd dropped
    kept = DetectionCollator(HfDetrImageProcessor(), keep_crowd=True)(examples)
    assert len(kept["labels"][0]["boxes"]) == len(objects["bbox"])  # evaluation keeps it
    with pytest.raises(ValueError, match="empty batch"):
        DetectionCollator(HfDetrImageProcessor())([])

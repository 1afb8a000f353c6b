"""`hf_detr.create_model`, the one way to get a model: every command and the Trainer example build through it; each kind
of source (preset, folder, config-only folder, transformers DETR folder, unknown name); one config field, `task`, says
what a model predicts, and nothing else in the package asks."""

from __future__ import annotations

import argparse
import ast
import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import DetrConfig, DetrForObjectDetection

import hf_detr
from helpers import EXAMPLE, load_script, padded_batch, randomize_weights, tiny_config_kwargs
from hf_detr import (
    HfDetrConfig,
    HfDetrForObjectDetection,
    HfDetrForSegmentation,
    HfDetrInputError,
    create_image_processor,
    create_model,
    presets,
)
from hf_detr.apps.cli import main as cli_main
from hf_detr.data.synthetic import ID2LABEL, make_synthetic_dataset
from hf_detr.training import add_arguments, config_from_args

pytestmark = pytest.mark.usefixtures("one_thread")

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hf_detr"
SMALL_DATA = ["--dataset", "synthetic", "--synthetic_image_size", "64", "--image_size", "64"]


class _Built(Exception):
    """Raised by the stand-in builder: the command got as far as building its model."""


@pytest.fixture()
def calls(monkeypatch) -> list[tuple]:
    """`create_model` replaced, where the commands look it up (`hf_detr.builder`) and where the Trainer example does
    (`hf_detr`), by a stand-in that records its arguments and stops the command."""
    recorded: list[tuple] = []

    def stand_in(name_or_path, task=None, **overrides):
        recorded.append((name_or_path, task, overrides))
        raise _Built

    monkeypatch.setattr(hf_detr.builder, "create_model", stand_in)
    monkeypatch.setattr(hf_detr, "create_model", stand_in)
    return recorded


@pytest.fixture()
def folder(tmp_path) -> Path:
    """A folder with the tiny preset's config and image processor (the stand-in builder reads no weights)."""
    HfDetrConfig(**tiny_config_kwargs()).save_pretrained(tmp_path / "model")
    create_image_processor("tiny").save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_every_command_builds_its_model_with_create_model(calls, folder, tmp_path, monkeypatch):
    from hf_detr.apps import demo

    small = make_synthetic_dataset(4, 0, 2, image_size=64, seed=0)  # the demo's data, smaller
    monkeypatch.setattr(demo, "load_data", lambda *args, **kwargs: small)
    image = tmp_path / "image.png"
    Image.new("RGB", (64, 48)).save(image)
    commands = {
        "train": ["train", "--output_dir", str(tmp_path / "run"), "--model", "tiny", "--max_steps", "1", *SMALL_DATA],
        "predict": ["predict", str(folder), str(image), "--task", "instance"],
        "evaluate": ["evaluate", str(folder), "--dataset", "synthetic"],
        "export": ["export", str(folder), str(tmp_path / "onnx"), "--task", "detection"],
        "app": ["app", str(folder)],
        "demo": ["demo", "--output_dir", str(tmp_path / "demo"), "--task", "panoptic"],
    }
    expected = {
        "train": ("tiny", None),
        "predict": (str(folder), "instance"),
        "evaluate": (str(folder), None),
        "export": (str(folder), "detection"),
        "app": (str(folder), None),
        "demo": ("demo", None),  # the detector first: the paper's two phases
    }
    for command, argv in commands.items():
        with pytest.raises(_Built):
            cli_main(argv)
        assert calls.pop()[:2] == expected[command], command
    example = load_script(EXAMPLE)
    with pytest.raises(_Built):
        example.main(["--model_name_or_path", "tiny", "--dataset", "synthetic", "--output_dir", str(tmp_path / "t")])
    assert calls.pop()[:2] == ("tiny", None)


def test_a_preset_builds_the_model_its_task_names(tmp_path):
    model = create_model("tiny")
    assert type(model) is HfDetrForObjectDetection and model.training  # new: as its class builds it
    assert model.config.to_diff_dict() == presets.get("tiny").config().to_diff_dict()
    segmenter = create_model("tiny", task="instance", num_queries=7)
    assert type(segmenter) is HfDetrForSegmentation and segmenter.config.task == "instance"
    assert segmenter.config.num_queries == 7
    with torch.device("meta"):  # only the class and the config: the paper's panoptic model without its weights
        panoptic = create_model("detr-resnet-50-panoptic")
    assert type(panoptic) is HfDetrForSegmentation and panoptic.config.task == "panoptic"
    assert create_image_processor("detr-resnet-50-panoptic").format == "coco_panoptic"
    assert create_image_processor("detr-resnet-50").format == "coco_detection"


def test_a_folder_loads_its_weights_and_changes_task_both_ways(tmp_path):
    detector = create_model("tiny", id2label=ID2LABEL)
    randomize_weights(detector)
    detector.save_pretrained(tmp_path / "detector")
    weights = detector.state_dict()

    loaded = create_model(tmp_path / "detector")
    assert type(loaded) is HfDetrForObjectDetection and loaded.config.task == "detection" and not loaded.training
    assert all(torch.equal(value, weights[key]) for key, value in loaded.state_dict().items())

    segmenter = create_model(tmp_path / "detector", task="panoptic")  # the mask head new, the detector kept
    assert type(segmenter) is HfDetrForSegmentation and segmenter.config.task == "panoptic"
    assert all(torch.equal(segmenter.state_dict()[key], value) for key, value in weights.items())
    segmenter.save_pretrained(tmp_path / "segmenter")
    assert json.loads((tmp_path / "segmenter" / "config.json").read_text())["task"] == "panoptic"
    assert type(create_model(tmp_path / "segmenter")) is HfDetrForSegmentation
    back = create_model(tmp_path / "segmenter", task="detection")  # its detector
    assert type(back) is HfDetrForObjectDetection and back.state_dict().keys() == weights.keys()
    assert all(torch.equal(value, weights[key]) for key, value in back.state_dict().items())


def test_a_config_folder_without_weights_is_a_new_model_of_it(tmp_path):
    HfDetrConfig(**tiny_config_kwargs(num_queries=5)).save_pretrained(tmp_path)
    model = create_model(tmp_path, id2label={0: "a"}, dropout=0.0)
    assert model.config.num_queries == 5 and model.config.dropout == 0.0 and model.class_embed.out_features == 2


def test_an_old_config_without_task_follows_its_architectures(tmp_path):
    for architecture, task, model_class in (
        ("HfDetrForSegmentation", "panoptic", HfDetrForSegmentation),
        ("HfDetrForObjectDetection", "detection", HfDetrForObjectDetection),
    ):
        folder = tmp_path / architecture
        HfDetrConfig(**tiny_config_kwargs()).save_pretrained(folder)
        saved = json.loads((folder / "config.json").read_text())
        saved.pop("task")
        (folder / "config.json").write_text(json.dumps({**saved, "architectures": [architecture]}))
        assert HfDetrConfig.from_pretrained(folder).task == task
        assert type(create_model(folder)) is model_class
    with pytest.raises(HfDetrInputError, match=r"HfDetrConfig.task='segmentation' is invalid: choose one of"):
        HfDetrConfig(task="segmentation")


def test_a_transformers_detr_folder_is_converted(tmp_path):
    """A random-init `DetrForObjectDetection` saved locally (no download): the same outputs."""
    torch.manual_seed(0)
    config = DetrConfig(**tiny_config_kwargs(id2label=ID2LABEL))  # the tiny preset, as transformers' DETR
    reference = DetrForObjectDetection(config).eval()
    randomize_weights(reference)
    reference.save_pretrained(tmp_path)
    model = create_model(tmp_path)
    assert type(model) is HfDetrForObjectDetection and model.config.model_type == "hf_detr"
    assert model.config.task == "detection" and model.config.id2label == ID2LABEL
    pixel_values, pixel_mask = padded_batch(((64, 64), (48, 64)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(pixel_values=pixel_values, pixel_mask=pixel_mask)
        actual = model(pixel_values=pixel_values, pixel_mask=pixel_mask)
    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(actual.pred_boxes, expected.pred_boxes, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["detr-resnet-5O", "someone/not-in-the-cache"])
def test_an_unknown_name_is_a_clear_error_listing_the_presets(name):
    with pytest.raises(HfDetrInputError, match=r"the presets are \['demo', 'detr-resnet-101'.*'tiny'\]"):
        create_model(name)


def test_hf_detr_train_takes_a_preset_and_its_training_settings(tmp_path):
    parser = add_arguments(argparse.ArgumentParser())
    given = ["--output_dir", "out", "--max_steps", "1", "--learning_rate", "0.5"]
    demo = config_from_args(parser.parse_args([*given, "--model", "demo"]))
    assert demo.model_name_or_path == "demo" and demo.learning_rate == 0.5  # typed: kept
    assert demo.backbone_learning_rate == 6e-3 and demo.augment == "flip"  # the preset's recipe
    folder = config_from_args(parser.parse_args([*given, "--model_name_or_path", "some/folder"]))
    assert folder.backbone_learning_rate == 1e-5 and folder.augment == "detr"  # TrainConfig's defaults

    out = tmp_path / "run"
    argv = ["train", "--output_dir", str(out), "--model", "tiny", "--max_steps", "1", "--synthetic_train_size", "4"]
    argv += [*SMALL_DATA, "--eval_split", "none", "--cpu", "--report_to", "none", "--save_steps", "0"]
    assert cli_main(argv) == 0
    saved = HfDetrConfig.from_pretrained(out)
    assert saved.d_model == presets.get("tiny").model["d_model"] and saved.id2label == ID2LABEL


def _segmentation_checks(tree: ast.AST) -> list[str]:
    """The ways of asking "is this a segmentation model" other than `config.predicts_masks`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = node.args
            if node.func.id == "hasattr" and len(args) == 2 and getattr(args[1], "value", None) == "mask_head":
                found.append(f"line {node.lineno}: hasattr(..., 'mask_head')")
            if node.func.id == "isinstance" and len(args) == 2 and "ForSegmentation" in ast.unparse(args[1]):
                found.append(f"line {node.lineno}: isinstance(..., {ast.unparse(args[1])})")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "endswith":
            if any("ForSegmentation" in str(getattr(arg, "value", "")) for arg in node.args):
                found.append(f"line {node.lineno}: .endswith('ForSegmentation')")
        if isinstance(node, ast.Compare) and "architectures" in ast.unparse(node):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Compare) and any(getattr(c, "value", None) == "detection" for c in node.comparators):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Compare) and getattr(node.left, "value", None) == "panoptic":
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_one_definition_of_a_segmentation_model():
    """`HfDetrConfig.task` and its `predicts_masks` answer "is this a segmentation model"; the package asks nothing
    else (no `hasattr(model, "mask_head")`, `isinstance(model, HfDetrForSegmentation)`, `architectures` suffix or
    `task != "detection"` comparison outside the config's one definition)."""
    definition = PACKAGE / "modeling" / "configuration_hf_detr.py"
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        checks = _segmentation_checks(ast.parse(path.read_text()))
        if path == definition:
            assert checks  # the walk finds the definition itself: an old config.json's task, predicts_masks
        elif checks:
            found[str(path.relative_to(PACKAGE))] = checks
    assert not found
    # the walk sees what it looks for
    sample = 'hasattr(m, "mask_head"); isinstance(m, HfDetrForSegmentation); a.endswith("ForSegmentation")'
    assert len(_segmentation_checks(ast.parse(sample + '; task != "detection"'))) == 4


def test_the_demo_takes_the_task_names_of_every_command(monkeypatch, tmp_path):
    from hf_detr.apps import demo

    monkeypatch.setattr(demo, "require_matplotlib", lambda: None)
    monkeypatch.setattr(demo, "load_data", lambda *args, **kwargs: (_ for _ in ()).throw(_Built()))
    for task in ("detection", "instance", "panoptic"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(_Built):
                demo.run_demo(tmp_path, task=task)
    with pytest.warns(FutureWarning, match="use 'instance'"), pytest.raises(_Built):
        demo.run_demo(tmp_path, task="segmentation")
    with pytest.raises(HfDetrInputError, match=r"task must be one of \('detection', 'instance', 'panoptic'\)"):
        demo.run_demo(tmp_path, task="boxes")

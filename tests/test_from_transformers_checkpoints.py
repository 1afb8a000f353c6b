"""Checkpoints of transformers' own DETR (`model_type: "detr"`, written by `DetrForObjectDetection.save_pretrained`)
load into hf_detr directly, converted on load: `hf_detr.create_model`, `HfDetrImageProcessor.from_pretrained`,
`hf-detr train / predict / evaluate / convert` and the Trainer example."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoImageProcessor,
    AutoModelForObjectDetection,
    DetrConfig,
    DetrForObjectDetection,
    DetrImageProcessor,
)

from helpers import padded_batch, randomize_weights, run_example_fine_tuning
from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrImageProcessor, create_model
from hf_detr.apps.cli import main
from hf_detr.hub.convert import config_from_transformers, state_dict_from_transformers

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(
    backbone="resnet18",
    encoder_layers=1,
    decoder_layers=2,
    d_model=64,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
    num_queries=10,
)
ID2LABEL = {0: "circle", 1: "triangle", 2: "star"}  # names of the synthetic shapes, so `evaluate` can match them
# a non-default DetrImageProcessor: its settings, not hf_detr's defaults, must come with the model
PROCESSOR = dict(size={"shortest_edge": 96, "longest_edge": 160}, image_mean=[0.5, 0.45, 0.4], image_std=[0.25] * 3)
SIZES = ((96, 128), (64, 96))  # two images, the second one padded
TINY_DATA = ["--dataset", "synthetic", "--synthetic_image_size", "64", "--image_size", "64"]


@pytest.fixture(scope="module")
def reference() -> DetrForObjectDetection:
    torch.manual_seed(0)
    model = DetrForObjectDetection(DetrConfig(id2label=ID2LABEL, **SMALL)).eval()
    randomize_weights(model)
    return model


@pytest.fixture(scope="module")
def hub_folder(reference, tmp_path_factory) -> Path:
    """transformers' own `save_pretrained` (the Hub / transformers 4 key names on disk), with its image processor."""
    folder = tmp_path_factory.mktemp("detr")
    reference.save_pretrained(folder)
    DetrImageProcessor(**PROCESSOR).save_pretrained(folder)
    assert "model.backbone.conv_encoder.model.conv1.weight" in load_file(folder / "model.safetensors")
    return folder


def _v5_folder(reference, folder: Path) -> None:
    """The state dict of a live transformers 5 model, its in-memory key names, as model.safetensors."""
    reference.config.save_pretrained(folder)
    state = reference.state_dict()
    assert "model.backbone.model.conv1.weight" in state and any(".o_proj." in key for key in state)
    save_file({key: value.contiguous() for key, value in state.items()}, folder / "model.safetensors")


def _sharded_safetensors(reference, folder: Path) -> None:
    reference.save_pretrained(folder, max_shard_size="10MB")
    assert (folder / "model.safetensors.index.json").is_file() and len(list(folder.glob("*.safetensors"))) > 1


def _sharded_bin(reference, folder: Path, hub_folder: Path) -> None:
    """Older Hub repositories: pickled shards and pytorch_model.bin.index.json, the Hub's key names."""
    reference.config.save_pretrained(folder)
    state = load_file(hub_folder / "model.safetensors")
    names = sorted(state)
    shards = {f"pytorch_model-0000{i + 1}-of-00002.bin": names[i::2] for i in range(2)}
    for file, keys in shards.items():
        torch.save({key: state[key] for key in keys}, folder / file)
    weight_map = {key: file for file, keys in shards.items() for key in keys}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.fixture(scope="module", params=["hub", "transformers5", "sharded_safetensors", "sharded_bin"])
def folder(request, reference, hub_folder, tmp_path_factory) -> Path:
    if request.param == "hub":
        return hub_folder
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "transformers5":
        _v5_folder(reference, folder)
    elif request.param == "sharded_safetensors":
        _sharded_safetensors(reference, folder)
    else:
        _sharded_bin(reference, folder, hub_folder)
    return folder


def _outputs(model, pixel_values, pixel_mask):
    with torch.no_grad():
        return model(pixel_values=pixel_values, pixel_mask=pixel_mask)


def _assert_matches_reference(model, reference) -> None:
    pixel_values, pixel_mask = padded_batch(SIZES, generator=torch.Generator().manual_seed(0))
    assert pixel_mask[1].float().mean() < 1  # the mask path is exercised
    expected = _outputs(reference, pixel_values, pixel_mask)
    actual = _outputs(model, pixel_values, pixel_mask)
    logits_err = (actual.logits - expected.logits).abs().max().item()
    boxes_err = (actual.pred_boxes - expected.pred_boxes).abs().max().item()
    print(f"max abs error: logits {logits_err:.2e}, pred_boxes {boxes_err:.2e}")
    assert logits_err < 1e-4 and boxes_err < 1e-4
    assert expected.pred_boxes.std() > 0.05 and expected.logits.std() > 0.1  # outputs that vary


def test_create_model_converts_every_layout_on_load(folder, reference):
    model = create_model(folder)
    assert type(model) is HfDetrForObjectDetection and model.config.model_type == "hf_detr"
    assert not model.training  # eval mode, as transformers' from_pretrained
    assert model.config.id2label == ID2LABEL and model.config.task == "detection"
    assert (model.config.backbone, model.config.d_model, model.config.num_queries) == ("resnet18", 64, 10)
    _assert_matches_reference(model, reference)


def test_the_config_converts_and_from_pretrained_points_to_create_model(hub_folder, reference):
    """`config_from_transformers` reads a DETR config (dict or object); `from_pretrained`, transformers' own, does not
    rename weights, so a DETR folder there is an error naming `create_model`, which takes config overrides too."""
    detr_config = json.loads((hub_folder / "config.json").read_text())
    for given in (detr_config, reference.config):
        config = config_from_transformers(given)
        assert (config.model_type, config.backbone, config.encoder_layers, config.decoder_layers) == (
            "hf_detr",
            "resnet18",
            1,
            2,
        )
    for load in (HfDetrConfig.from_pretrained, HfDetrForObjectDetection.from_pretrained):
        with pytest.raises(ValueError, match=r"transformers DETR config.*hf_detr\.create_model\(path\)"):
            load(hub_folder)
    model = create_model(hub_folder, dropout=0.0)
    assert model.config.dropout == 0.0
    _assert_matches_reference(model, reference)


def test_new_labels_get_a_new_class_head_and_keep_everything_else(hub_folder):
    loaded = create_model(hub_folder).state_dict()
    model = create_model(hub_folder, num_labels=5)
    assert model.config.num_labels == 5 and model.class_embed.out_features == 6
    state = model.state_dict()
    assert state.keys() == loaded.keys()
    changed = {
        key for key, value in state.items() if value.shape != loaded[key].shape or not torch.equal(value, loaded[key])
    }
    assert changed == {"class_embed.weight", "class_embed.bias"}
    # named labels, as the fine-tuning guide passes them
    names = {0: "a", 1: "b"}
    named = create_model(hub_folder, id2label=names)
    assert named.config.id2label == names and named.config.label2id == {"a": 0, "b": 1}
    assert named.class_embed.out_features == 3


def test_an_override_that_changes_a_weight_is_a_clear_error(hub_folder):
    with pytest.raises(ValueError, match=r"model\.decoder\.layers\.0\..* would be reinitialized"):
        create_model(hub_folder, decoder_ffn_dim=32)


def _processor_folder(tmp_path: Path, settings: dict | str) -> Path:
    folder = tmp_path / "processor"
    folder.mkdir(parents=True)
    if settings == "feature-extractor":  # facebook/detr-resnet-50's own preprocessor_config.json (2021)
        (folder / "preprocessor_config.json").write_text(
            json.dumps(
                {
                    "do_normalize": True,
                    "do_resize": True,
                    "feature_extractor_type": "DetrFeatureExtractor",
                    "format": "coco_detection",
                    "image_mean": [0.485, 0.456, 0.406],
                    "image_std": [0.229, 0.224, 0.225],
                    "max_size": 1333,
                    "size": 800,
                }
            )
        )
    else:
        DetrImageProcessor(**settings).save_pretrained(folder)
    return folder


_COMPARED = (
    "do_resize",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_pad",
    "pad_size",
    "do_convert_annotations",
)


def _setting(processor, name):
    value = getattr(processor, name, None)
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return int(value) if name == "resample" else value


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(PROCESSOR, id="padded"),
        pytest.param(
            dict(
                size={"shortest_edge": 72, "longest_edge": 100},
                do_pad=False,
                do_normalize=False,
                rescale_factor=1 / 127.5,
            ),
            id="unpadded-unnormalized",
        ),
        pytest.param(
            dict(size={"height": 64, "width": 80}, resample=3, pad_size={"height": 96, "width": 96}),
            id="fixed-size-bicubic-pad_size",
        ),
        pytest.param("feature-extractor", id="feature-extractor"),
    ],
)
def test_image_processor_takes_the_detr_processors_settings(tmp_path, settings):
    folder = _processor_folder(tmp_path, settings)
    ours = HfDetrImageProcessor.from_pretrained(folder)
    theirs = DetrImageProcessor.from_pretrained(folder)
    assert {k: v for k, v in dict(ours.size).items() if v is not None} == {
        k: v for k, v in dict(theirs.size).items() if v is not None
    }
    for name in _COMPARED:
        assert _setting(ours, name) == _setting(theirs, name), name
    if settings != "feature-extractor":
        assert _setting(ours, "image_mean") == [float(v) for v in settings.get("image_mean", ours.image_mean)]
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    mine, reference = ours(images=image, return_tensors="pt"), theirs(images=image, return_tensors="pt")
    error = (mine["pixel_values"] - reference["pixel_values"]).abs().max().item()
    print(f"pixel values: max abs error {error:.2e}, shape {tuple(mine['pixel_values'].shape)}")
    assert mine["pixel_values"].shape == reference["pixel_values"].shape and error < 1e-4
    assert ("pixel_mask" in mine) == ("pixel_mask" in reference)
    # a per-call override still wins over the converted settings
    assert HfDetrImageProcessor.from_pretrained(folder, do_pad=False).do_pad is False


def test_image_processor_keeps_the_panoptic_format(tmp_path):
    """facebook/detr-resnet-50-panoptic's processor reads COCO panoptic annotations; so does the converted one."""
    folder = _processor_folder(tmp_path, dict(format="coco_panoptic"))
    assert HfDetrImageProcessor.from_pretrained(folder).format == "coco_panoptic"
    with pytest.raises(ValueError, match="format"):
        HfDetrImageProcessor.from_pretrained(_processor_folder(tmp_path / "o", dict(format="coco_keypoints")))


def test_auto_classes_keep_transformers_own_detr(hub_folder, tmp_path):
    """The README's statement: the Auto classes follow model_type; `hf-detr convert` writes an hf_detr folder that
    keeps the source's preprocessing settings."""
    assert type(AutoModelForObjectDetection.from_pretrained(hub_folder)).__name__ == "DetrForObjectDetection"
    assert type(AutoImageProcessor.from_pretrained(hub_folder)).__name__ == "DetrImageProcessor"
    out = tmp_path / "converted"
    assert main(["convert", "--from", "transformers", str(hub_folder), str(out)]) == 0
    assert type(AutoModelForObjectDetection.from_pretrained(out)) is HfDetrForObjectDetection
    written = AutoImageProcessor.from_pretrained(out)
    assert isinstance(written, HfDetrImageProcessor)
    assert (written.size.shortest_edge, written.size.longest_edge) == (96, 160)
    assert list(written.image_mean) == PROCESSOR["image_mean"] and list(written.image_std) == PROCESSOR["image_std"]


def test_a_hub_id_loads_from_the_cache_offline(hub_folder, reference, tmp_path):
    """A Hub id resolves through the Hugging Face cache (HF_HUB_OFFLINE=1 in these tests): only the files the
    repository holds are looked up, and nothing is downloaded."""
    repo = tmp_path / "hub" / "models--someone--detr-tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (snapshot / name).write_bytes((hub_folder / name).read_bytes())
    model = create_model("someone/detr-tiny", cache_dir=tmp_path / "hub")
    _assert_matches_reference(model, reference)
    processor = HfDetrImageProcessor.from_pretrained("someone/detr-tiny", cache_dir=tmp_path / "hub")
    assert (processor.size.shortest_edge, processor.size.longest_edge) == (96, 160)


def _losses(output: Path) -> list[float]:
    entries = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    return [entry["loss"] for entry in entries if "loss" in entry]


def test_hf_detr_train_fine_tunes_a_transformers_checkpoint(hub_folder, tmp_path):
    output = tmp_path / "run"
    args = [
        "train",
        "--output_dir",
        str(output),
        "--model_name_or_path",
        str(hub_folder),
        *TINY_DATA,
        "--synthetic_train_size",
        "4",
        "--eval_split",
        "none",
        "--max_steps",
        "12",
        "--logging_steps",
        "1",
        "--backbone_learning_rate",
        "0",
        "--learning_rate",
        "1e-3",
        "--lr_scheduler",
        "constant",
        "--augment",
        "none",
        "--per_device_train_batch_size",
        "4",
        "--seed",
        "0",
        "--cpu",
        "--disable_tqdm",
        "--report_to",
        "none",
        "--save_steps",
        "0",
    ]
    assert main(args) == 0
    losses = _losses(output)
    print("losses:", [round(loss, 3) for loss in losses])
    assert len(losses) == 12
    last = sum(losses[-3:]) / 3  # the same 4 images at every step: the loss falls from the first step's
    assert last < 0.85 * losses[0] and last < sum(losses[:3]) / 3
    # started from the checkpoint: the frozen backbone is the converted one; the synthetic labels got a new head
    saved = load_file(output / "model.safetensors")
    converted = state_dict_from_transformers(load_file(hub_folder / "model.safetensors"))
    backbone = [key for key in converted if key.startswith("model.backbone.")]
    assert backbone and all(torch.equal(saved[key], converted[key]) for key in backbone)
    trained = HfDetrForObjectDetection.from_pretrained(output)
    assert trained.config.num_labels == 6  # the synthetic shapes
    assert list(HfDetrImageProcessor.from_pretrained(output).image_mean) == PROCESSOR["image_mean"]


def test_the_trainer_example_fine_tunes_a_transformers_checkpoint(hub_folder, tmp_path):
    run_example_fine_tuning(hub_folder, tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    converted = state_dict_from_transformers(load_file(hub_folder / "model.safetensors"))
    assert torch.equal(saved["model.backbone.body.conv1.weight"], converted["model.backbone.body.conv1.weight"])
    assert not torch.equal(saved["model.query_embed.weight"], converted["model.query_embed.weight"])


def test_predict_on_a_transformers_checkpoint(hub_folder, reference, tmp_path, capsys):
    image_path = tmp_path / "scene.png"
    PIL.Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(image_path)
    assert main(["predict", str(hub_folder), str(image_path), "--threshold", "0"]) == 0
    detections = json.loads(capsys.readouterr().out)[0]["detections"]
    assert len(detections) == SMALL["num_queries"]
    assert {d["label"] for d in detections} <= set(ID2LABEL.values())
    # the scores are the transformers model's on its own processor's input (the image is not padded)
    inputs = DetrImageProcessor.from_pretrained(hub_folder)(images=PIL.Image.open(image_path), return_tensors="pt")
    with torch.no_grad():
        probabilities = reference(**inputs).logits.softmax(-1)[0, :, :-1].max(-1).values
    expected = sorted(round(float(p), 4) for p in probabilities)
    assert np.allclose(sorted(d["score"] for d in detections), expected, atol=2e-4)


def test_evaluate_on_a_transformers_checkpoint(hub_folder, tmp_path, capsys):
    import datasets

    from hf_detr.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(0, 4, 0, image_size=64, classes=tuple(ID2LABEL.values()), seed=3)
    datasets.DatasetDict({"validation": data["validation"]}).save_to_disk(str(tmp_path / "data"))  # no empty split
    status = main(
        ["evaluate", str(hub_folder), "--dataset", str(tmp_path / "data"), "--per_device_eval_batch_size", "2"]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "map_50" in out and "mar_100" in out

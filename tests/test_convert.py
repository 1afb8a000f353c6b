"""Checkpoints of the original facebookresearch/detr code and of transformers, and the `hf-detr convert` command."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoImageProcessor, DetrConfig, DetrForObjectDetection, pipeline

from helpers import original_key_list, padded_batch, randomize_weights
from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrImageProcessor
from hf_detr.apps.cli import main
from hf_detr.hub.convert import from_original, to_original

HUB_CONFIGS = Path(__file__).resolve().parents[1] / "hub_configs"
# a small model in a layout the original code can build (it only knows torchvision's ResNets)
SMALL = dict(
    backbone="resnet18",
    d_model=64,
    encoder_layers=2,
    decoder_layers=3,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=96,
    decoder_ffn_dim=80,
    num_queries=12,
)
# the command line converts released checkpoints: the head count, which the weights cannot tell, is the default 8
CLI_SMALL = {**SMALL, "encoder_attention_heads": 8, "decoder_attention_heads": 8}
SIZES = ((64, 96), (48, 64))  # two images, the second one padded


def _random_model(**config_kwargs) -> HfDetrForObjectDetection:
    model = HfDetrForObjectDetection(HfDetrConfig(**config_kwargs)).eval()
    randomize_weights(model)
    return model


def _outputs(model, pixel_values, pixel_mask):
    with torch.no_grad():
        return model(pixel_values, pixel_mask)


@pytest.mark.parametrize(
    ("backbone", "dilation", "key_list", "hub_config"),
    [
        ("resnet50", False, "original_detr_r50_keys.txt", "detr-resnet-50"),
        ("resnet50", True, "original_detr_r50_keys.txt", "detr-resnet-50-dc5"),
        ("resnet101", False, "original_detr_r101_keys.txt", "detr-resnet-101"),
    ],
    ids=["r50", "r50-dc5", "r101"],
)
def test_original_key_set_converts_exactly(backbone, dilation, key_list, hub_config):
    """The original model's state dict (every key and shape, as listed from its code) converts without a missing or
    unexpected key, and our model written back in the original layout has exactly that key set. Shapes only, on the
    meta device: the values are the round-trip test's business."""
    original_keys = original_key_list(key_list)
    with torch.device("meta"):
        model = from_original({k: torch.empty(shape) for k, shape in original_keys.items()}, backbone, dilation)
    assert {k: tuple(v.shape) for k, v in to_original(model).items()} == original_keys
    # the released checkpoint converts to the architecture its hub_configs folder describes
    expected = HfDetrConfig.from_pretrained(HUB_CONFIGS / hub_config).to_diff_dict()
    actual = model.config.to_diff_dict()
    for name in ("architectures", "auto_map", "transformers_version", "dtype"):  # written by save_pretrained
        expected.pop(name, None)
        actual.pop(name, None)
    assert actual == expected


@pytest.mark.parametrize("dilation", [False, True], ids=["c5", "dc5"])
def test_original_layout_round_trip(tmp_path, dilation):
    model = _random_model(**SMALL, dilation=dilation)
    torch.save({"model": to_original(model)}, tmp_path / "checkpoint.pth")
    converted = from_original(
        tmp_path / "checkpoint.pth",
        backbone="resnet18",
        dilation=dilation,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
    )
    assert converted.config.dilation is dilation
    pixel_values, pixel_mask = padded_batch(SIZES)
    expected = _outputs(model, pixel_values, pixel_mask)
    actual = _outputs(converted, pixel_values, pixel_mask)
    assert torch.equal(actual.logits, expected.logits)
    assert torch.equal(actual.pred_boxes, expected.pred_boxes)
    assert expected.pred_boxes.std() > 0.05  # outputs that vary, so equality means something


def test_architecture_is_read_from_the_original_state_dict():
    """Sizes, pre-norm and the learned position embedding come from the tensors; heads from the arguments."""
    model = _random_model(
        **SMALL, normalize_before=True, position_embedding_type="learned", id2label={0: "cat", 1: "dog", 2: "fish"}
    )
    converted = from_original(
        to_original(model), backbone="resnet18", encoder_attention_heads=4, decoder_attention_heads=4
    )
    config = converted.config
    for name in (*SMALL, "normalize_before", "position_embedding_type", "num_labels"):
        assert getattr(config, name) == getattr(model.config, name), name
    assert config.auxiliary_loss  # the original trains with it
    pixel_values, pixel_mask = padded_batch(SIZES)
    assert torch.equal(
        _outputs(converted, pixel_values, pixel_mask).logits, _outputs(model, pixel_values, pixel_mask).logits
    )


def test_mismatched_original_keys_are_listed_in_the_original_names():
    original = to_original(_random_model(**SMALL))
    original.pop("transformer.decoder.layers.1.multihead_attn.in_proj_bias")
    original["transformer.decoder.extra.weight"] = torch.zeros(3)
    expected = (
        r"missing keys \['transformer\.decoder\.layers\.1\.multihead_attn\.in_proj_bias'\], "
        r"unexpected keys \['transformer\.decoder\.extra\.weight'\]"
    )
    with pytest.raises(ValueError, match=expected):
        from_original(original, backbone="resnet18", encoder_attention_heads=4, decoder_attention_heads=4)


def test_wrong_backbone_depth_fails_with_the_key_list():
    original = to_original(_random_model(**SMALL))
    with pytest.raises(
        ValueError,
        match=r"missing keys \['backbone\.0\.body\.layer1\.0\.bn3\.bias'.*"
        r"unexpected keys \[\]",
    ):
        from_original(original, backbone="resnet50", encoder_attention_heads=4, decoder_attention_heads=4)


def test_training_checkpoint_arguments_are_loaded_and_checked(tmp_path):
    """checkpoint.pth of the original main.py pickles its argparse.Namespace: it loads (weights_only allows that one
    class) and refuses a conversion that contradicts it, since DC5 weights fit a non-DC5 model silently."""
    model = _random_model(**SMALL, dilation=True)
    args = argparse.Namespace(backbone="resnet18", dilation=True, nheads=4, lr=1e-4)
    torch.save({"model": to_original(model), "args": args, "epoch": 3}, tmp_path / "checkpoint.pth")
    with pytest.raises(ValueError, match=r"trained with \{'dilation': True\}.*asked for \{'dilation': False\}"):
        from_original(
            tmp_path / "checkpoint.pth", backbone="resnet18", encoder_attention_heads=4, decoder_attention_heads=4
        )
    converted = from_original(
        tmp_path / "checkpoint.pth",
        backbone="resnet18",
        dilation=True,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
    )
    pixel_values, pixel_mask = padded_batch(SIZES)
    assert torch.equal(
        _outputs(converted, pixel_values, pixel_mask).pred_boxes, _outputs(model, pixel_values, pixel_mask).pred_boxes
    )


def test_to_original_refuses_a_backbone_the_original_lacks():
    model = HfDetrForObjectDetection(HfDetrConfig(**{**SMALL, "backbone": "efficientnet_b0"}))
    with pytest.raises(ValueError, match="no 'efficientnet_b0' backbone"):
        to_original(model)


class _Payload:
    """Unpickling this object creates a file: the proof that a loader executed pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_holding_objects_are_refused_unexecuted(tmp_path):
    marker = tmp_path / "payload-ran"
    state_dict = to_original(_random_model(**SMALL))
    torch.save({"model": state_dict, "extra": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil\.pth could not be loaded safely \(weights_only=True\)"):
        from_original(tmp_path / "evil.pth", backbone="resnet18")
    # the same through the command line, for the transformers format's pickled weights too
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "config.json").write_text(DetrConfig().to_json_string())
    torch.save({"model.query_position_embeddings.weight": _Payload(marker)}, tmp_path / "hub" / "pytorch_model.bin")
    assert main(["convert", "--from", "original", str(tmp_path / "evil.pth"), str(tmp_path / "out")]) == 1
    assert main(["convert", "--from", "transformers", str(tmp_path / "hub"), str(tmp_path / "out")]) == 1
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_non_tensor_state_dict_entries_are_named(tmp_path):
    state_dict = to_original(_random_model(**SMALL))
    state_dict["query_embed.weight"] = [1.0, 2.0]
    with pytest.raises(ValueError, match=r"not tensors: \['query_embed\.weight'\]"):
        from_original({"model": state_dict}, backbone="resnet18")


def _check_pipeline(folder: Path, model: HfDetrForObjectDetection, image: PIL.Image.Image) -> set[str]:
    """`pipeline("object-detection")` loads `folder` and finds, with no threshold, every query's best real class with
    its probability, as computed from `model`'s logits on the folder's image processor's inputs. Returns the labels."""
    written = AutoImageProcessor.from_pretrained(folder)
    settings = written.to_dict()
    assert settings.pop("auto_map") == {"AutoImageProcessor": "image_processing_hf_detr.HfDetrImageProcessor"}
    assert isinstance(written, HfDetrImageProcessor) and settings == HfDetrImageProcessor().to_dict()
    # the folder's processor at a small size: DETR's 800-pixel default would make this slow test dominate the file
    small = AutoImageProcessor.from_pretrained(folder, size={"shortest_edge": 64, "longest_edge": 96})
    detector = pipeline("object-detection", model=str(folder), image_processor=small)
    detections = sorted((d["label"], round(d["score"], 5)) for d in detector(image, threshold=0.0))
    with torch.no_grad():
        probabilities = model(**detector.image_processor(images=image, return_tensors="pt")).logits.softmax(-1)
    scores, labels = probabilities[0, :, :-1].max(-1)
    expected = sorted((model.config.id2label[int(i)], round(float(s), 5)) for s, i in zip(scores, labels))
    assert detections == expected
    return {label for label, _ in detections}


@pytest.fixture(scope="module")
def image() -> PIL.Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


def test_cli_converts_an_original_checkpoint(tmp_path, image):
    model = _random_model(**CLI_SMALL, id2label={0: "cat", 1: "dog"})
    torch.save({"model": to_original(model)}, tmp_path / "detr.pth")
    out = tmp_path / "converted"
    assert main(["convert", "--from", "original", str(tmp_path / "detr.pth"), str(out), "--backbone", "resnet18"]) == 0
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md", "modeling_hf_detr.py"} <= {
        p.name for p in out.iterdir()
    }
    loaded = HfDetrForObjectDetection.from_pretrained(out).eval()
    pixel_values, pixel_mask = padded_batch(SIZES)
    assert torch.equal(
        _outputs(loaded, pixel_values, pixel_mask).logits, _outputs(model, pixel_values, pixel_mask).logits
    )
    assert to_original(loaded).keys() == to_original(model).keys()
    # the weights hold the number of classes but not their names
    assert _check_pipeline(out, loaded, image) <= {"LABEL_0", "LABEL_1"}


def test_cli_converts_a_transformers_checkpoint(tmp_path, image):
    reference = DetrForObjectDetection(
        DetrConfig(
            backbone="resnet18",
            d_model=64,
            encoder_layers=1,
            decoder_layers=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            num_queries=8,
            id2label={0: "cat", 1: "dog", 2: "bird"},
        )
    ).eval()
    randomize_weights(reference)
    reference.save_pretrained(tmp_path / "reference")
    out = tmp_path / "converted"
    assert main(["convert", "--from", "transformers", str(tmp_path / "reference"), str(out)]) == 0
    loaded = HfDetrForObjectDetection.from_pretrained(out).eval()
    pixel_values, pixel_mask = padded_batch(SIZES)
    with torch.no_grad():
        expected = reference(pixel_values=pixel_values, pixel_mask=pixel_mask)
    actual = _outputs(loaded, pixel_values, pixel_mask)
    torch.testing.assert_close(actual.logits, expected.logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(actual.pred_boxes, expected.pred_boxes, rtol=0, atol=1e-4)
    assert loaded.config.id2label == {0: "cat", 1: "dog", 2: "bird"}
    assert _check_pipeline(out, loaded, image) <= {"cat", "dog", "bird"}


def test_installed_console_script_converts(tmp_path):
    script = Path(sys.executable).parent / "hf-detr"
    model = _random_model(**CLI_SMALL)
    torch.save({"model": to_original(model)}, tmp_path / "detr.pth")
    result = subprocess.run(
        [
            str(script),
            "convert",
            "--from",
            "original",
            str(tmp_path / "detr.pth"),
            str(tmp_path / "out"),
            "--backbone",
            "resnet18",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = HfDetrForObjectDetection.from_pretrained(tmp_path / "out").eval()
    pixel_values, pixel_mask = padded_batch(SIZES)
    assert torch.equal(
        _outputs(loaded, pixel_values, pixel_mask).pred_boxes, _outputs(model, pixel_values, pixel_mask).pred_boxes
    )


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["convert", "--from", "original", str(tmp_path / "missing.pth"), str(tmp_path / "out")]) == 1
    assert f"hf-detr convert: error: no checkpoint file at {tmp_path / 'missing.pth'}" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's own usage error
        main(["convert", "--from", "detectron2", "x.pth", str(tmp_path / "out")])

"""Model setup (`hf_detr.create_model`, `hf_detr.training.setup`): every weights layout a folder can hold starts
`hf-detr train` and the Trainer example from those weights, with the processor saved beside them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import run_example_fine_tuning
from hf_detr import HfDetrForObjectDetection, HfDetrImageProcessor, create_image_processor, create_model, presets
from hf_detr.apps.cli import main as cli_main
from hf_detr.builder import has_weights
from hf_detr.data.synthetic import ID2LABEL
from hf_detr.training.setup import cpu_has_fast_bf16, with_image_size

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_DATA = ["--dataset", "synthetic", "--synthetic_image_size", "64", "--image_size", "64"]


def _save_sharded_bin(model: torch.nn.Module, folder: Path) -> None:
    """The layout of older Hub repositories: pickled shards and `pytorch_model.bin.index.json`."""
    model.config.save_pretrained(folder)
    state = model.state_dict()
    names = sorted(state)
    shards = {f"pytorch_model-0000{i + 1}-of-00002.bin": names[i::2] for i in range(2)}
    for file, keys in shards.items():
        torch.save({key: state[key].clone() for key in keys}, folder / file)
    weight_map = {key: file for file, keys in shards.items() for key in keys}
    total = sum(t.numel() * t.element_size() for t in state.values())
    (folder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )


@pytest.fixture(scope="module", params=["sharded_bin", "sharded_safetensors", "safetensors"])
def start(request, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny model with the shapes' labels saved in one of the layouts, with a non-default image processor."""
    folder = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    model = create_model("tiny", id2label=ID2LABEL)
    if request.param == "sharded_bin":
        _save_sharded_bin(model, folder)
    else:
        model.save_pretrained(folder, max_shard_size="1MB" if request.param == "sharded_safetensors" else "5GB")
    HfDetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(folder)
    assert has_weights(folder) and not has_weights(tmp_path_factory.mktemp("empty"))
    return folder, {key: value.clone() for key, value in model.state_dict().items()}


def test_create_model_loads_every_layout_with_its_processor(start):
    folder, weights = start
    model, processor = create_model(folder, id2label=ID2LABEL), create_image_processor(folder)
    assert model.state_dict().keys() == weights.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert (processor.size.shortest_edge, processor.size.longest_edge) == (64, 96)
    # new labels: a new class head, everything else kept
    renamed = create_model(folder, id2label={i: f"{name}!" for i, name in ID2LABEL.items()})
    changed = {key for key, value in renamed.state_dict().items() if not torch.equal(value, weights[key])}
    assert changed == {"class_embed.weight", "class_embed.bias"}


def _assert_started_from(output: Path, weights: dict[str, torch.Tensor]) -> None:
    """The frozen backbone (backbone learning rate 0) is the starting one; the transformer trained."""
    saved = load_file(output / "model.safetensors")
    backbone = [key for key in weights if key.startswith("model.backbone.")]
    assert backbone and all(torch.equal(saved[key], weights[key]) for key in backbone)
    assert not torch.equal(saved["model.query_embed.weight"], weights["model.query_embed.weight"])


def test_hf_detr_train_fine_tunes_from_the_folder_weights(start, tmp_path):
    folder, weights = start
    args = [
        "train",
        "--output_dir",
        str(tmp_path),
        "--model_name_or_path",
        str(folder),
        *TINY_DATA,
        "--synthetic_train_size",
        "4",
        "--eval_split",
        "none",
        "--max_steps",
        "2",
        "--backbone_learning_rate",
        "0",
        "--learning_rate",
        "1e-3",
        "--per_device_train_batch_size",
        "2",
        "--cpu",
        "--disable_tqdm",
        "--report_to",
        "none",
        "--save_steps",
        "0",
    ]
    assert cli_main(args) == 0
    _assert_started_from(tmp_path, weights)


def test_the_trainer_example_fine_tunes_from_the_folder_weights(start, tmp_path):
    folder, weights = start
    run_example_fine_tuning(folder, tmp_path)
    _assert_started_from(tmp_path, weights)


def test_with_image_size_copies_and_never_changes_the_callers_processor():
    processor = HfDetrImageProcessor(size={"shortest_edge": 128, "longest_edge": 256}, image_mean=[0.5, 0.5, 0.5])
    assert with_image_size(processor) is processor
    resized = with_image_size(processor, 64)
    assert (resized.size.shortest_edge, resized.size.longest_edge) == (64, 107)  # DETR's 1333/800 ratio
    assert list(resized.image_mean) == [0.5, 0.5, 0.5]  # every other setting carried over
    assert (processor.size.shortest_edge, processor.size.longest_edge) == (128, 256)
    assert with_image_size(processor, max_size=300).size.longest_edge == 300


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"), [(False, False, False), (True, False, True), (False, True, True)]
)
def test_cpu_has_fast_bf16_reads_the_cpu_checks(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert cpu_has_fast_bf16() is expected
    # a torch without the private checks: fp32, never a slow emulated bf16
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert cpu_has_fast_bf16() is False


def test_presets_carry_their_image_size_and_are_read_only():
    demo = presets.get("demo")
    assert demo.image_processor().size.shortest_edge == demo.image_size == 128
    assert demo.max_size == 213 and presets.get("detr-resnet-50").max_size == 1333
    with pytest.raises(TypeError):
        demo.model["d_model"] = 1  # a shared preset cannot be changed by one caller
    assert isinstance(create_model("tiny"), HfDetrForObjectDetection)
    with pytest.raises(ValueError, match=r"no preset named 'nope'; the presets are \['demo', "):
        presets.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        presets.register(presets.Preset("demo", {}))


def test_from_pretrained_overrides_are_validated_like_the_constructor(tmp_path):
    create_model("tiny").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"HfDetrConfig.dropout=1.5 is invalid"):
        HfDetrForObjectDetection.from_pretrained(tmp_path, dropout=1.5)
    with pytest.raises(ValueError, match=r"num_queries=0 is invalid"):
        create_model(tmp_path, num_queries=0)
    assert HfDetrForObjectDetection.from_pretrained(tmp_path, eos_coefficient=0.3).config.eos_coefficient == 0.3

"""Model behaviour: HF serialization, Auto classes, remote code, backbones, input checks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForObjectDetection

from helpers import padded_batch, random_labels, tiny_config_kwargs
from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrModel

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs())).eval()


def test_save_and_auto_load_round_trip(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json", "modeling_hf_detr.py", "configuration_hf_detr.py"} <= files
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "hf_detr"
    assert config["auto_map"]["AutoModelForObjectDetection"] == "modeling_hf_detr.HfDetrForObjectDetection"

    pixel_values, pixel_mask = padded_batch()
    with torch.no_grad():
        expected = tiny_model(pixel_values, pixel_mask)
        for loader in (HfDetrForObjectDetection.from_pretrained, AutoModelForObjectDetection.from_pretrained):
            loaded = loader(tmp_path).eval()
            assert type(loaded) is HfDetrForObjectDetection
            actual = loaded(pixel_values, pixel_mask)
            assert torch.equal(actual.logits, expected.logits)
            assert torch.equal(actual.pred_boxes, expected.pred_boxes)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), HfDetrConfig)
    assert type(AutoModel.from_pretrained(tmp_path)) is HfDetrModel


def test_trust_remote_code_load_without_hf_detr_installed(tmp_path, tiny_model):
    folder = tmp_path / "saved"
    tiny_model.save_pretrained(folder)
    pixel_values, pixel_mask = padded_batch()
    torch.save({"pixel_values": pixel_values, "pixel_mask": pixel_mask}, tmp_path / "inputs.pt")
    with torch.no_grad():
        torch.save(tiny_model(pixel_values, pixel_mask).logits, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hf_detr"] = None  # importing hf_detr now raises ImportError
        sys.path = [p for p in sys.path if not p.startswith({str(SRC)!r})]
        import torch
        from transformers import AutoModelForObjectDetection
        torch.set_num_threads({torch.get_num_threads()})  # bit-equal logits need the same summation order
        model = AutoModelForObjectDetection.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            logits = model(**inputs).logits
        assert torch.equal(logits, torch.load({str(tmp_path / "expected.pt")!r}))
        print("REMOTE_OK")
        """
    )
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "REMOTE_OK" in result.stdout, result.stderr[-3000:]


def test_hidden_states_and_attentions_on_request(tiny_model):
    pixel_values, pixel_mask = padded_batch()
    with torch.no_grad():
        plain = tiny_model(pixel_values, pixel_mask)
        full = tiny_model(pixel_values, pixel_mask, output_attentions=True, output_hidden_states=True)
    cfg = tiny_model.config
    assert len(full.encoder_hidden_states) == cfg.encoder_layers + 1
    assert len(full.decoder_hidden_states) == cfg.decoder_layers + 1
    hw = full.encoder_last_hidden_state.shape[1]
    assert full.encoder_attentions[0].shape == (2, cfg.encoder_attention_heads, hw, hw)
    assert full.cross_attentions[0].shape == (2, cfg.decoder_attention_heads, cfg.num_queries, hw)
    # the explicit-weights path computes the same attention as scaled_dot_product_attention
    torch.testing.assert_close(full.logits, plain.logits, rtol=0, atol=1e-5)
    # padding keys get no attention
    key_mask = torch.nn.functional.interpolate(pixel_mask[None].float(), size=(5, 7))[0].flatten(1).bool()
    assert full.cross_attentions[0][1][..., ~key_mask[1]].abs().max() == 0
    assert plain.encoder_attentions is None and plain.decoder_hidden_states is None


def test_return_dict_false_gives_a_tuple(tiny_model):
    pixel_values, _ = padded_batch()
    with torch.no_grad():
        output = tiny_model(pixel_values, return_dict=False)
    assert isinstance(output, tuple)
    assert output[0].shape == (2, tiny_model.config.num_queries, tiny_model.config.num_labels + 1)


def test_gradient_checkpointing_gives_the_same_gradients():
    config = HfDetrConfig(**tiny_config_kwargs(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0))
    model = HfDetrForObjectDetection(config).train()
    pixel_values, pixel_mask = padded_batch()
    labels = random_labels([3, 1], config.num_labels)

    def gradients():
        model.zero_grad()
        model(pixel_values, pixel_mask, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.model.encoder.layers)
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6)


def test_attention_trains_in_bf16_autocast_with_the_float32_gradients():
    """bf16 training on the CPU takes SDPA's float32 kernel (its bf16 backward is slow): the gradients still flow to
    q, k and v and agree with a float32 run within bf16's precision, and the layer's output stays bf16."""
    from hf_detr.modeling.transformer import MultiHeadAttention

    torch.manual_seed(0)
    attention = MultiHeadAttention(32, 4, dropout=0.0)
    torch.nn.init.xavier_uniform_(attention.in_proj_weight)
    query, memory = torch.randn(3, 10, 32, requires_grad=True), torch.randn(3, 24, 32, requires_grad=True)
    mask = torch.ones(3, 1, 1, 24, dtype=torch.bool)
    mask[0, ..., 16:] = False  # a padded image

    def run(bf16: bool) -> tuple[torch.Tensor, ...]:
        query.grad = memory.grad = None
        attention.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = attention(query, memory, memory, mask)[0]
        out.float().square().sum().backward()
        return out, query.grad.clone(), memory.grad.clone(), attention.in_proj_weight.grad.clone()

    reference, mixed = run(bf16=False), run(bf16=True)
    assert mixed[0].dtype == torch.bfloat16
    for actual, expected in zip(mixed, reference):
        torch.testing.assert_close(actual.float(), expected, rtol=0.05, atol=0.05 * expected.abs().max().item())


@pytest.mark.parametrize("backbone", ["efficientnet_b0", "regnety_002", "convnext_atto", "mobilenetv3_small_100"])
def test_any_timm_cnn_backbone(backbone):
    config = HfDetrConfig(**tiny_config_kwargs(backbone=backbone))
    model = HfDetrForObjectDetection(config)
    pixel_values, pixel_mask = padded_batch(((96, 128), (64, 96)))
    output = model(pixel_values, pixel_mask, labels=random_labels([2, 1], config.num_labels))
    output.loss.backward()
    assert torch.isfinite(output.loss)
    body = model.model.backbone.body
    trained = [p.requires_grad for p in body.parameters()]
    # the stem and first stage are frozen, the later stages train
    assert not trained[0] and trained[-1]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())


def test_backbone_freezing_follows_the_recipe():
    model = HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs()))
    trainable = {n for n, p in model.model.backbone.body.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("conv1.", "layer1.")) for n in trainable)
    assert any(n.startswith("layer2.") for n in trainable) and any(n.startswith("layer4.") for n in trainable)
    model.freeze_backbone()
    assert not any(p.requires_grad for p in model.model.backbone.parameters())
    model.unfreeze_backbone()
    assert trainable == {n for n, p in model.model.backbone.body.named_parameters() if p.requires_grad}


def test_dc5_halves_the_output_stride():
    pixel_values, _ = padded_batch(((128, 128),))
    strides = []
    for dilation in (False, True):
        model = HfDetrModel(HfDetrConfig(**tiny_config_kwargs(dilation=dilation))).eval()
        with torch.no_grad():
            strides.append(128**2 // model(pixel_values).encoder_last_hidden_state.shape[1])
    assert strides == [32**2, 16**2]


def test_parameter_count_matches_the_paper():
    # Carion et al. 2020, Table 1: DETR (R50) 41M, DETR-R101 60M parameters
    for backbone, expected in (("resnet50", 41e6), ("resnet101", 60e6)):
        with torch.device("meta"):
            model = HfDetrForObjectDetection(HfDetrConfig(backbone=backbone, num_labels=91))
        count = sum(p.numel() for p in model.parameters())
        assert abs(count - expected) / expected < 0.015, (backbone, count)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pixel_values=torch.randn(1, 1, 64, 64)), r"pixel_values has 1 channels but config.num_channels=3"),
        (dict(pixel_values=torch.randn(3, 64, 64)), r"pixel_values must be a \[batch, channels, height, width\]"),
        (dict(pixel_values=torch.randint(0, 255, (1, 3, 64, 64))), r"pixel_values must be a float tensor"),
        (
            dict(pixel_values=torch.randn(2, 3, 64, 64), pixel_mask=torch.ones(2, 64, 65)),
            r"pixel_mask must have shape \[batch, height, width\] = \(2, 64, 64\)",
        ),
        (
            dict(pixel_values=torch.randn(2, 3, 64, 64), pixel_mask=torch.zeros(2, 64, 64)),
            r"image 0 of the batch has no real pixel",
        ),
        (
            dict(pixel_values=torch.randn(2, 3, 64, 64), labels=random_labels([1], 3)),
            r"labels has 1 entries but the batch has 2 images",
        ),
    ],
)
def test_bad_inputs_are_named(tiny_model, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tiny_model(**kwargs)


def test_learned_position_embedding_size_limit():
    model = HfDetrModel(HfDetrConfig(**tiny_config_kwargs(position_embedding_type="learned"))).eval()
    with pytest.raises(ValueError, match=r"feature map is 2x51 but the learned position embedding has 50"):
        model(torch.randn(1, 3, 64, 51 * 32))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d_model=250, encoder_attention_heads=8), r"encoder_attention_heads=8 is invalid: it must divide"),
        (dict(num_queries=0), r"num_queries=0 is invalid"),
        (dict(encoder_layers=-1), r"encoder_layers=-1 is invalid: it must be a non-negative integer"),
        (dict(decoder_layers=0), r"decoder_layers=0 is invalid"),
        (dict(dropout=1.5), r"dropout=1.5 is invalid"),
        (dict(position_embedding_type="rope"), r"position_embedding_type='rope' is invalid"),
        (dict(activation_function="tanhh"), r"activation_function='tanhh' is invalid"),
        (dict(class_cost=0, bbox_cost=0, giou_cost=0), r"at least one matching cost must be positive"),
        (dict(eos_coefficient=-0.1), r"eos_coefficient=-0.1 is invalid"),
        (dict(backbone_kwargs={"pretrained": True}), r"'pretrained' is set by hf_detr"),
    ],
)
def test_config_rejects_invalid_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HfDetrConfig(**kwargs)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match=r"backbone='not_a_net' is not a timm model"):
        HfDetrModel(HfDetrConfig(backbone="not_a_net"))

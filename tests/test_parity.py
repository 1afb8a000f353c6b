"""Parity with transformers' DetrForObjectDetection on identical weights (the reference oracle)."""

from __future__ import annotations

import pytest
import torch
from transformers import DetrConfig, DetrForObjectDetection
from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss

from helpers import padded_batch, random_labels, randomize_weights
from hf_detr.hub.convert import from_transformers

SMALL = dict(
    backbone="resnet18",
    encoder_layers=2,
    decoder_layers=2,
    d_model=128,
    encoder_ffn_dim=256,
    decoder_ffn_dim=256,
    num_queries=20,
)


def _pair(tmp_path, **config_kwargs):
    """A random-weight transformers DETR and the hf_detr model converted from its saved folder."""
    config = DetrConfig(num_labels=5, **config_kwargs)
    reference = DetrForObjectDetection(config).eval()
    randomize_weights(reference)
    reference.save_pretrained(tmp_path / "reference")
    ours = from_transformers(tmp_path / "reference").eval()
    return reference, ours


@pytest.mark.parametrize(
    "config_kwargs",
    [
        pytest.param({}, id="resnet50"),
        pytest.param(dict(dilation=True), id="resnet50-dc5"),
        pytest.param(dict(position_embedding_type="learned"), id="resnet50-learned-pos"),
        pytest.param(SMALL, id="resnet18-2+2"),
        # no encoder (the paper's ablation, the demo recipe's choice): the decoder reads the projected features
        pytest.param({**SMALL, "encoder_layers": 0}, id="resnet18-0+2"),
    ],
)
def test_inference_parity(tmp_path, config_kwargs):
    reference, ours = _pair(tmp_path, **config_kwargs)
    pixel_values, pixel_mask = padded_batch(((192, 256), (160, 128)))
    with torch.no_grad():
        expected = reference(pixel_values=pixel_values, pixel_mask=pixel_mask)
        actual = ours(pixel_values=pixel_values, pixel_mask=pixel_mask)
    assert actual.logits.shape == expected.logits.shape
    logits_err = (actual.logits - expected.logits).abs().max().item()
    boxes_err = (actual.pred_boxes - expected.pred_boxes).abs().max().item()
    print(f"max abs error: logits {logits_err:.2e}, pred_boxes {boxes_err:.2e}")
    assert logits_err < 1e-4
    assert boxes_err < 1e-4
    # the outputs must vary across queries, or the comparison proves little
    assert expected.pred_boxes.std() > 0.05 and expected.logits.std() > 0.1
    # the padded image must really be padded, or the mask path is untested
    assert pixel_mask[1].float().mean() < 1


def _reference_loss_with_original_aux(reference, pixel_values, pixel_mask, labels):
    """transformers' DETR loss with the auxiliary loss as the original DETR defines it.

    With `auxiliary_loss=True`, transformers' decoder feeds the LayerNorm-ed output of each layer to the next one,
    which the original DETR does not (it only normalizes a copy for the auxiliary heads), so its predictions change
    when the auxiliary loss is switched on. Here the reference runs with the flag off, the per-layer outputs are
    captured with hooks, and transformers' own loss function is applied to them with the flag on.
    """
    captured = []
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out: captured.append(out if torch.is_tensor(out) else out[0]))
        for layer in reference.model.decoder.layers
    ]
    try:
        outputs = reference(pixel_values=pixel_values, pixel_mask=pixel_mask)
    finally:
        for hook in hooks:
            hook.remove()
    intermediate = reference.model.decoder.layernorm(torch.stack(captured))
    outputs_class = reference.class_labels_classifier(intermediate)
    outputs_coord = reference.bbox_predictor(intermediate).sigmoid()
    config = reference.config
    config.auxiliary_loss = True
    try:
        loss, loss_dict, _ = ForObjectDetectionLoss(
            outputs.logits, labels, pixel_values.device, outputs.pred_boxes, config, outputs_class, outputs_coord
        )
    finally:
        config.auxiliary_loss = False
    return loss, loss_dict


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


def test_loss_and_gradient_parity_with_auxiliary_loss(tmp_path):
    reference, ours = _pair(tmp_path, **{**SMALL, "decoder_layers": 3, "dropout": 0.0})
    ours.config.auxiliary_loss = True
    pixel_values, pixel_mask = padded_batch(((128, 160), (96, 128)))
    labels = random_labels([4, 2], num_labels=5)

    ref_loss, ref_terms = _reference_loss_with_original_aux(reference, pixel_values, pixel_mask, labels)
    output = ours(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=labels)

    assert len(output.auxiliary_outputs) == 2
    shared = set(ref_terms) & set(output.loss_dict)
    assert {"loss_ce", "loss_bbox", "loss_giou", "cardinality_error", "loss_ce_1", "loss_giou_1"} <= shared
    assert shared == set(ref_terms)
    for key in shared:
        assert abs(output.loss_dict[key].item() - ref_terms[key].item()) < 1e-4, key
    print(f"loss: ours {output.loss.item():.6f} reference {ref_loss.item():.6f}")
    assert abs(output.loss.item() - ref_loss.item()) < 1e-4

    ref_loss.backward()
    output.loss.backward()
    ref_attn = reference.model.encoder.layers[0].self_attn
    ref_in_proj = torch.cat([ref_attn.q_proj.weight.grad, ref_attn.k_proj.weight.grad, ref_attn.v_proj.weight.grad])
    our_layer = ours.model.encoder.layers[0]
    pairs = {
        "class head weight": (ours.class_embed.weight.grad, reference.class_labels_classifier.weight.grad),
        "class head bias": (ours.class_embed.bias.grad, reference.class_labels_classifier.bias.grad),
        "encoder[0] in_proj": (our_layer.self_attn.in_proj_weight.grad, ref_in_proj),
        "encoder[0] out_proj": (our_layer.self_attn.out_proj.weight.grad, ref_attn.o_proj.weight.grad),
        "encoder[0] linear1": (our_layer.linear1.weight.grad, reference.model.encoder.layers[0].mlp.fc1.weight.grad),
    }
    for name, (actual, expected) in pairs.items():
        error = _relative_error(actual, expected)
        print(f"{name}: relative gradient error {error:.2e}")
        assert error < 1e-3, name


def test_auxiliary_loss_does_not_change_predictions(tmp_path):
    """The auxiliary heads read normalized copies; the decoder itself must compute the same thing."""
    _, ours = _pair(tmp_path, **SMALL)
    pixel_values, pixel_mask = padded_batch()
    with torch.no_grad():
        plain = ours(pixel_values=pixel_values, pixel_mask=pixel_mask)
        ours.config.auxiliary_loss = True
        with_aux = ours(pixel_values=pixel_values, pixel_mask=pixel_mask)
    assert with_aux.auxiliary_outputs is not None and len(with_aux.auxiliary_outputs) == 1
    torch.testing.assert_close(with_aux.logits, plain.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(with_aux.pred_boxes, plain.pred_boxes, rtol=0, atol=1e-6)


def test_from_transformers_state_dict_in_memory_layout():
    """A state dict taken from a live transformers 5 model (its in-memory key names) converts too."""
    config = DetrConfig(num_labels=3, **SMALL)
    reference = DetrForObjectDetection(config).eval()
    randomize_weights(reference)
    ours = from_transformers(reference.state_dict(), config=config).eval()
    pixel_values, pixel_mask = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(
            ours(pixel_values, pixel_mask).pred_boxes,
            reference(pixel_values, pixel_mask).pred_boxes,
            rtol=0,
            atol=1e-4,
        )


def test_from_transformers_reports_mismatched_keys():
    config = DetrConfig(num_labels=3, **SMALL)
    state_dict = DetrForObjectDetection(config).state_dict()
    state_dict.pop("class_labels_classifier.bias")
    state_dict["model.extra.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError, match=r"missing keys \['class_embed.bias'\].*unexpected keys \['model.extra.weight'\]"
    ):
        from_transformers(state_dict, config=config)

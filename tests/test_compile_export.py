"""torch.compile and ONNX export of the model give the eager outputs."""

from __future__ import annotations

import pytest
import torch

from helpers import padded_batch, random_labels, tiny_config_kwargs
from hf_detr import HfDetrConfig, HfDetrForObjectDetection


@pytest.fixture()
def model():
    config = HfDetrConfig(**tiny_config_kwargs(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0))
    return HfDetrForObjectDetection(config).eval()


def test_transformer_compiles_without_graph_breaks(model):
    pixel_values, pixel_mask = padded_batch(((128, 160), (96, 128)))
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(pixel_values, pixel_mask)
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.slow
def test_compiled_model_matches_eager_in_inference_and_training(model):
    torch._dynamo.reset()
    compiled = torch.compile(model)
    pixel_values, pixel_mask = padded_batch(((128, 160), (96, 128)))
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(pixel_values, pixel_mask).logits, model(pixel_values, pixel_mask).logits, rtol=0, atol=1e-4
        )

    model.train()
    labels = random_labels([3, 1], model.config.num_labels)
    compiled(pixel_values, pixel_mask, labels=labels).loss.backward()
    compiled_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    eager_loss = model(pixel_values, pixel_mask, labels=labels).loss
    eager_loss.backward()
    assert compiled_grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(compiled_grads[name], parameter.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_onnx_export_with_dynamic_batch_and_size(model, tmp_path):
    import onnxruntime  # the onnx extra is part of the dev install

    from hf_detr.hub.export import export_onnx

    path = export_onnx(model, tmp_path / "model.onnx", example_size=(128, 160))
    session = onnxruntime.InferenceSession(path)
    for sizes in (((128, 160), (96, 128)), ((224, 192),), ((96, 96), (64, 80), (96, 64))):
        pixel_values, pixel_mask = padded_batch(sizes)
        logits, boxes = session.run(None, {"pixel_values": pixel_values.numpy(), "pixel_mask": pixel_mask.numpy()})
        with torch.no_grad():
            expected = model(pixel_values, pixel_mask)
        assert abs(logits - expected.logits.numpy()).max() < 1e-4
        assert abs(boxes - expected.pred_boxes.numpy()).max() < 1e-4

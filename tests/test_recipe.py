"""Training-recipe options: with all of them off, training is the paper's DETR; Group DETR behaves as specified."""

from __future__ import annotations

import torch
from helpers import padded_batch, random_labels, tiny_config_kwargs
from transformers import DetrConfig
from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss

from hf_detr import HfDetrConfig, HfDetrForObjectDetection
from hf_detr.loss import SetCriterion

NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


def test_default_training_loss_is_the_papers_detr_loss():
    """Every recipe option at its default: the loss equals transformers' DETR loss function on the same outputs."""
    config = HfDetrConfig(**tiny_config_kwargs(auxiliary_loss=True, **NO_DROPOUT))
    model = HfDetrForObjectDetection(config).train()
    pixel_values, pixel_mask = padded_batch()
    labels = random_labels([3, 2], config.num_labels)
    output = model(pixel_values, pixel_mask, labels=labels)
    reference_config = DetrConfig(num_labels=config.num_labels, decoder_layers=config.decoder_layers,
                                  auxiliary_loss=True, eos_coefficient=config.eos_coefficient)
    aux = output.auxiliary_outputs
    expected, expected_terms, _ = ForObjectDetectionLoss(
        output.logits, labels, "cpu", output.pred_boxes, reference_config,
        torch.stack([a["logits"] for a in aux] + [output.logits]),
        torch.stack([a["pred_boxes"] for a in aux] + [output.pred_boxes]),
    )
    assert abs(output.loss.item() - expected.item()) < 1e-5
    assert set(expected_terms) == set(output.loss_dict)


def _group_model(groups=3):
    config = HfDetrConfig(**tiny_config_kwargs(num_query_groups=groups, auxiliary_loss=True, **NO_DROPOUT))
    return HfDetrForObjectDetection(config)


def test_query_groups_train_separately_and_average():
    model = _group_model().train()
    queries = model.config.num_queries
    pixel_values, pixel_mask = padded_batch()
    labels = random_labels([3, 2], model.config.num_labels)
    output = model(pixel_values, pixel_mask, labels=labels)
    assert output.logits.shape[1] == 3 * queries
    # the loss is the mean over groups of DETR's loss of each group alone
    criterion = SetCriterion(model.config)
    per_group = []
    for g in range(3):
        part = slice(g * queries, (g + 1) * queries)
        aux = [{k: v[:, part] for k, v in a.items()} for a in output.auxiliary_outputs]
        per_group.append(criterion(output.logits[:, part], output.pred_boxes[:, part], labels, aux)[0])
    assert abs(output.loss.item() - torch.stack(per_group).mean().item()) < 1e-5


def test_query_groups_do_not_see_each_other():
    model = _group_model().train()
    queries = model.config.num_queries
    pixel_values, pixel_mask = padded_batch()
    with torch.no_grad():
        before = model(pixel_values, pixel_mask).logits
        model.model.query_embed.weight[2 * queries:] += 1.0  # change only the last group
        after = model(pixel_values, pixel_mask).logits
    torch.testing.assert_close(after[:, : 2 * queries], before[:, : 2 * queries], rtol=0, atol=1e-6)
    assert (after[:, 2 * queries:] - before[:, 2 * queries:]).abs().max() > 1e-3


def test_inference_uses_the_first_group_and_dropping_groups_gives_plain_detr(tmp_path):
    model = _group_model().eval()
    pixel_values, pixel_mask = padded_batch()
    with torch.no_grad():
        grouped = model(pixel_values, pixel_mask)
    assert grouped.logits.shape[1] == model.config.num_queries
    model.drop_query_groups()
    model.save_pretrained(tmp_path)
    plain = HfDetrForObjectDetection.from_pretrained(tmp_path).eval()
    assert plain.config.num_query_groups == 1
    assert plain.model.query_embed.weight.shape[0] == plain.config.num_queries
    with torch.no_grad():
        torch.testing.assert_close(plain(pixel_values, pixel_mask).logits, grouped.logits, rtol=0, atol=1e-6)


def test_from_scratch_backbone_trains_batchnorm_and_stem_then_becomes_plain_detr(tmp_path):
    config = HfDetrConfig(**tiny_config_kwargs(freeze_backbone_batchnorm=False, freeze_backbone_stem=False,
                                               num_query_groups=2, **NO_DROPOUT))
    model = HfDetrForObjectDetection(config).train()
    body = model.model.backbone.body
    assert all(p.requires_grad for p in body.parameters())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    pixel_values, pixel_mask = padded_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):  # moves BatchNorm statistics and weights away from their identity init
        optimizer.zero_grad()
        model(pixel_values, pixel_mask, labels=random_labels([2, 1], config.num_labels)).loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        before = model(pixel_values, pixel_mask)
        model.to_plain_detr()
        after = model(pixel_values, pixel_mask)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.model.backbone.body.modules())
    torch.testing.assert_close(after.logits, before.logits, rtol=0, atol=1e-4)
    model.save_pretrained(tmp_path)
    reloaded = HfDetrForObjectDetection.from_pretrained(tmp_path).eval()
    assert reloaded.config.freeze_backbone_batchnorm and reloaded.config.num_query_groups == 1
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values, pixel_mask).logits, after.logits, rtol=0, atol=1e-6)


def test_demo_backbone_starts_with_open_residual_branches():
    """timm zero-initializes the last BatchNorm scale of each residual block; the demo recipe (from scratch) does not,
    so gradients reach every convolution from the first step."""
    from hf_detr.demo import DEMO_MODEL

    def last_bn_scales(backbone_kwargs):
        config = HfDetrConfig(**{**DEMO_MODEL, "backbone_kwargs": backbone_kwargs}, id2label={0: "a"})
        backbone = HfDetrForObjectDetection(config).model.backbone
        return torch.cat([m.weight for name, m in backbone.named_modules() if name.endswith("bn2")])

    assert (last_bn_scales(DEMO_MODEL["backbone_kwargs"]) == 1).all()
    assert (last_bn_scales({"out_indices": (3,)}) == 0).all()  # timm's default, which the demo overrides

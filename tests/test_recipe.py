"""Training-recipe options: with all of them off, training is the paper's DETR; Group DETR behaves as specified."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou_loss
from transformers import DetrConfig
from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss

from helpers import padded_batch, random_labels, tiny_config_kwargs
from hf_detr import HfDetrConfig, HfDetrForObjectDetection, presets
from hf_detr.modeling.loss import EncoderDenseLoss, build_criterion

NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


def _reference_loss(config, output, labels, queries=slice(None)):
    """transformers' DETR loss function, independent of hf_detr's criterion, on `queries` of the model's `output`
    (and of its auxiliary layers, when it has them): `(loss, loss_dict)`."""
    aux = output.auxiliary_outputs or []
    layer_logits = torch.stack([a["logits"] for a in aux] + [output.logits])[:, :, queries]
    layer_boxes = torch.stack([a["pred_boxes"] for a in aux] + [output.pred_boxes])[:, :, queries]
    reference_config = DetrConfig(
        num_labels=config.num_labels,
        decoder_layers=config.decoder_layers,
        auxiliary_loss=bool(aux),
        eos_coefficient=config.eos_coefficient,
    )
    loss, loss_dict, _ = ForObjectDetectionLoss(
        layer_logits[-1], labels, "cpu", layer_boxes[-1], reference_config, layer_logits, layer_boxes
    )
    return loss, loss_dict


def _group(g, queries):
    return slice(g * queries, (g + 1) * queries)


def test_default_training_loss_is_the_papers_detr_loss():
    """Every recipe option at its default: the loss equals transformers' DETR loss function on the same outputs."""
    config = HfDetrConfig(**tiny_config_kwargs(auxiliary_loss=True, **NO_DROPOUT))
    model = HfDetrForObjectDetection(config).train()
    pixel_values, pixel_mask = padded_batch()
    labels = random_labels([3, 2], config.num_labels)
    output = model(pixel_values, pixel_mask, labels=labels)
    expected, expected_terms = _reference_loss(config, output, labels)
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
    per_group = [_reference_loss(model.config, output, labels, _group(g, queries))[0] for g in range(3)]
    assert abs(output.loss.item() - torch.stack(per_group).mean().item()) < 1e-5


def test_query_groups_do_not_see_each_other():
    model = _group_model().train()
    queries = model.config.num_queries
    pixel_values, pixel_mask = padded_batch()
    with torch.no_grad():
        before = model(pixel_values, pixel_mask).logits
        model.model.query_embed.weight[2 * queries :] += 1.0  # change only the last group
        after = model(pixel_values, pixel_mask).logits
    torch.testing.assert_close(after[:, : 2 * queries], before[:, : 2 * queries], rtol=0, atol=1e-6)
    assert (after[:, 2 * queries :] - before[:, 2 * queries :]).abs().max() > 1e-3


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
    config = HfDetrConfig(
        **tiny_config_kwargs(
            freeze_backbone_batchnorm=False, freeze_backbone_stem=False, num_query_groups=2, **NO_DROPOUT
        )
    )
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
    DEMO_MODEL = presets.get("demo").model

    def last_bn_scales(backbone_kwargs):
        config = HfDetrConfig(**{**DEMO_MODEL, "backbone_kwargs": backbone_kwargs}, id2label={0: "a"})
        backbone = HfDetrForObjectDetection(config).model.backbone
        return torch.cat([m.weight for name, m in backbone.named_modules() if name.endswith("bn2")])

    assert (last_bn_scales(DEMO_MODEL["backbone_kwargs"]) == 1).all()
    assert (last_bn_scales({"out_indices": (3,)}) == 0).all()  # timm's default, which the demo overrides


def test_one_to_many_group_matches_repeated_targets_and_adds_its_loss():
    config = HfDetrConfig(
        **tiny_config_kwargs(num_query_groups=3, one_to_many_repeats=3, auxiliary_loss=True, **NO_DROPOUT)
    )
    model = HfDetrForObjectDetection(config).train()
    queries = config.num_queries
    pixel_values, pixel_mask = padded_batch()
    labels = random_labels([3, 0], config.num_labels)
    output = model(pixel_values, pixel_mask, labels=labels)

    # the mean of DETR's loss over the two one-to-one groups, plus the last group's DETR loss on repeated targets
    one_to_one = torch.stack([_reference_loss(config, output, labels, _group(g, queries))[0] for g in range(2)])
    repeated = [{"class_labels": t["class_labels"].repeat(3), "boxes": t["boxes"].repeat(3, 1)} for t in labels]
    expected = one_to_one.mean() + _reference_loss(config, output, repeated, _group(2, queries))[0]
    assert abs(output.loss.item() - expected.item()) < 1e-5
    assert "one_to_many_loss_giou" in output.loss_dict and "one_to_many_loss_ce_0" in output.loss_dict


def test_one_to_many_needs_a_second_group_and_is_dropped_for_inference(tmp_path):
    with pytest.raises(ValueError, match="one_to_many_repeats.*num_query_groups >= 2"):
        HfDetrConfig(**tiny_config_kwargs(one_to_many_repeats=2))
    config = HfDetrConfig(**tiny_config_kwargs(num_query_groups=2, one_to_many_repeats=2, **NO_DROPOUT))
    model = HfDetrForObjectDetection(config).eval()
    pixel_values, pixel_mask = padded_batch()
    with torch.no_grad():
        before = model(pixel_values, pixel_mask).logits
    model.to_plain_detr().save_pretrained(tmp_path)
    reloaded = HfDetrForObjectDetection.from_pretrained(tmp_path).eval()
    assert (reloaded.config.num_query_groups, reloaded.config.one_to_many_repeats) == (1, 0)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values, pixel_mask).logits, before, rtol=0, atol=1e-6)


def test_the_one_to_one_finish_trains_the_first_group_alone_with_detrs_loss():
    from hf_detr.training import finish_one_to_one

    config = HfDetrConfig(
        **tiny_config_kwargs(num_query_groups=2, one_to_many_repeats=3, auxiliary_loss=True, **NO_DROPOUT)
    )
    model = HfDetrForObjectDetection(config).train()
    pixel_values, pixel_mask = padded_batch()
    labels = random_labels([3, 1], config.num_labels)
    finish_one_to_one(model, 0.69, 0.3)  # before the last 30%: both groups
    assert model(pixel_values, pixel_mask, labels=labels).logits.shape[1] == 2 * config.num_queries
    finish_one_to_one(model, 0.7, 0.3)
    output = model(pixel_values, pixel_mask, labels=labels)
    # the first group's queries alone, and the paper's loss on them: no one-to-many term
    assert output.logits.shape[1] == config.num_queries
    expected, expected_terms = _reference_loss(config, output, labels)
    assert abs(output.loss.item() - expected.item()) < 1e-5 and set(output.loss_dict) == set(expected_terms)
    # the weights keep both groups until to_plain_detr, which gives the same first-group detector
    assert model.model.query_embed.weight.shape[0] == 2 * config.num_queries
    plain = HfDetrForObjectDetection(config)
    plain.load_state_dict(model.state_dict())
    plain.to_plain_detr().eval()
    with torch.no_grad():
        torch.testing.assert_close(
            plain(pixel_values, pixel_mask).logits, model.eval()(pixel_values, pixel_mask).logits
        )


def test_the_trainer_callback_switches_at_the_same_share_of_max_steps():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from hf_detr.training import OneToOneFinish

    model = _group_model(2)
    callback, args = OneToOneFinish(0.3), TrainingArguments(output_dir="unused", report_to="none")
    for step, groups_on in ((0, True), (6, True), (7, False)):
        callback.on_step_begin(args, TrainerState(global_step=step, max_steps=10), TrainerControl(), model=model)
        assert model.model.extra_query_groups is groups_on, step


def test_one_to_one_finish_is_a_fraction():
    from hf_detr.training import TrainConfig

    with pytest.raises(ValueError, match=r"one_to_one_finish.*fraction of the training in \[0, 1\)"):
        TrainConfig(output_dir="x", max_steps=1, one_to_one_finish=1.0)


ENCODER_LOSS_CONFIG = HfDetrConfig(**tiny_config_kwargs(encoder_loss_coefficient=0.5))


def _encoder_loss(logits, box_logits, feature_mask, labels):
    """The dense head's weighted loss and terms alone (`build_criterion`'s weights, only its encoder term) for the
    head's `logits` `[batch, h * w, num_labels + 1]` and `box_logits` `[batch, h * w, 4]`. The criterion reads the
    batch size and query groups from the decoder's logits, which no term reads here: zeros."""
    criterion = dataclasses.replace(build_criterion(ENCODER_LOSS_CONFIG), losses=[EncoderDenseLoss()])
    decoder_logits = logits.new_zeros(len(labels), ENCODER_LOSS_CONFIG.num_queries, logits.shape[-1])
    outputs = {
        "logits": decoder_logits,
        "encoder_logits": logits,
        "encoder_box_logits": box_logits,
        "feature_mask": feature_mask,
    }
    return criterion(outputs, labels)


def test_encoder_loss_assigns_tokens_near_the_centre_inside_the_box():
    """4x4 map, one object centred at (0.3, 0.6), 0.5 x 0.5: the centre cell and the neighbours whose centres lie
    inside the box and within one cell are positives: x in {0.125, 0.375}, y in {0.375, 0.625}."""
    num_labels = ENCODER_LOSS_CONFIG.num_labels
    logits = torch.randn(1, 16, num_labels + 1)
    box_logits = torch.zeros(1, 16, 4)  # boxes at the cell centres, 0.5 x 0.5
    target = torch.tensor([[0.3, 0.6, 0.5, 0.5]])
    loss, terms = _encoder_loss(
        logits,
        box_logits,
        torch.ones(1, 4, 4, dtype=torch.bool),
        [{"class_labels": torch.tensor([2]), "boxes": target}],
    )
    positives = [(1, 0), (1, 1), (2, 0), (2, 1)]  # (row, column)
    classes = torch.full((16,), num_labels)
    for row, col in positives:
        classes[row * 4 + col] = 2
    weight = torch.ones(num_labels + 1)
    weight[-1] = ENCODER_LOSS_CONFIG.eos_coefficient
    expected_ce = torch.nn.functional.cross_entropy(logits[0], classes, weight)  # the weighted mean
    centres = torch.tensor([[(col + 0.5) / 4, (row + 0.5) / 4, 0.5, 0.5] for row, col in positives])
    expected_l1 = (centres - target).abs().sum() / 4
    expected_giou = generalized_box_iou_loss(
        box_convert(centres, "cxcywh", "xyxy"), box_convert(target.expand(4, 4), "cxcywh", "xyxy"), reduction="mean"
    )
    torch.testing.assert_close(terms["encoder_loss_ce"], expected_ce)
    torch.testing.assert_close(terms["encoder_loss_bbox"], expected_l1)
    torch.testing.assert_close(terms["encoder_loss_giou"], expected_giou)
    expected = 0.5 * (expected_ce + 5 * expected_l1 + 2 * expected_giou)
    torch.testing.assert_close(loss, expected)


def test_encoder_loss_ignores_padding_and_normalizes_by_the_real_region():
    """An image whose real region is the left 2 of 4 columns: the same object in its own coordinates gets the same
    assignment as on a 2-column map, and padded tokens do not count."""
    logits, box_logits = torch.randn(1, 8, 4), torch.randn(1, 8, 4)
    target = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.7, 0.4, 0.6, 0.5]])}]
    alone = _encoder_loss(logits, box_logits, torch.ones(1, 4, 2, dtype=torch.bool), target)[1]
    padded_logits = torch.cat([logits.reshape(1, 4, 2, 4), torch.randn(1, 4, 2, 4)], 2).reshape(1, 16, 4)
    padded_boxes = torch.cat([box_logits.reshape(1, 4, 2, 4), torch.randn(1, 4, 2, 4)], 2).reshape(1, 16, 4)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[:, :, :2] = True
    padded = _encoder_loss(padded_logits, padded_boxes, mask, target)[1]
    for key, value in alone.items():
        torch.testing.assert_close(padded[key], value)


def test_encoder_loss_of_images_without_objects_is_background_only():
    logits = torch.randn(2, 16, 4)
    empty = [{"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 2
    loss, terms = _encoder_loss(logits, torch.randn(2, 16, 4), torch.ones(2, 4, 4, dtype=torch.bool), empty)
    background = torch.full((32,), 3)
    torch.testing.assert_close(
        terms["encoder_loss_ce"], torch.nn.functional.cross_entropy(logits.reshape(32, 4), background)
    )
    assert terms["encoder_loss_bbox"] == 0 and terms["encoder_loss_giou"] == 0


def test_encoder_head_trains_with_the_model_and_is_removed_for_inference(tmp_path):
    config = HfDetrConfig(**tiny_config_kwargs(encoder_loss_coefficient=1.0, **NO_DROPOUT))
    model = HfDetrForObjectDetection(config).train()
    pixel_values, pixel_mask = padded_batch()
    labels = random_labels([3, 2], config.num_labels)
    output = model(pixel_values, pixel_mask, labels=labels)
    detr_loss = _reference_loss(model.config, output, labels)[0]
    assert output.loss.item() > detr_loss.item() and "encoder_loss_giou" in output.loss_dict
    dense = {"encoder_loss_ce": 1.0, "encoder_loss_bbox": 5.0, "encoder_loss_giou": 2.0}  # x coefficient 1
    expected = detr_loss + sum(weight * output.loss_dict[key] for key, weight in dense.items())
    assert abs(output.loss.item() - expected.item()) < 1e-5
    output.loss.backward()
    assert model.encoder_class_embed.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        before = model(pixel_values, pixel_mask).logits
    model.to_plain_detr().save_pretrained(tmp_path)
    reloaded = HfDetrForObjectDetection.from_pretrained(tmp_path).eval()
    assert reloaded.config.encoder_loss_coefficient == 0 and not hasattr(reloaded, "encoder_class_embed")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values, pixel_mask).logits, before, rtol=0, atol=1e-6)

"""The Hungarian matcher against brute force, and the criterion's input checks."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import random_labels
from torchvision.ops import box_convert, generalized_box_iou

from hf_detr import HfDetrConfig
from hf_detr.loss import SetCriterion
from hf_detr.matcher import HungarianMatcher


def _cost(logits, pred_boxes, ids, boxes, weights=(1.0, 5.0, 2.0)):
    """The matching cost written out directly for one image: [queries, targets]."""
    prob = logits.softmax(-1)
    cost_class = -prob[:, ids]
    cost_bbox = (pred_boxes[:, None, :] - boxes[None, :, :]).abs().sum(-1)
    cost_giou = -generalized_box_iou(box_convert(pred_boxes, "cxcywh", "xyxy"), box_convert(boxes, "cxcywh", "xyxy"))
    return weights[0] * cost_class + weights[1] * cost_bbox + weights[2] * cost_giou


def _brute_force(cost: torch.Tensor) -> float:
    queries, targets = cost.shape
    if targets == 0:
        return 0.0
    if targets <= queries:
        return min(sum(cost[q, t].item() for t, q in enumerate(p)) for p in itertools.permutations(range(queries), targets))
    return min(sum(cost[q, t].item() for q, t in enumerate(p)) for p in itertools.permutations(range(targets), queries))


@pytest.mark.parametrize("trial", range(12))
def test_matcher_finds_the_optimal_assignment(trial):
    generator = torch.Generator().manual_seed(trial)
    queries = int(torch.randint(1, 7, (1,), generator=generator))
    # per image: no targets, fewer targets than queries, as many, and more targets than queries
    counts = [0, max(queries - 2, 1), queries, queries + 2]
    num_classes = 4
    logits = torch.randn(len(counts), queries, num_classes + 1, generator=generator) * 3
    pred_boxes = torch.cat(
        [torch.rand(len(counts), queries, 2, generator=generator) * 0.6 + 0.2,
         torch.rand(len(counts), queries, 2, generator=generator) * 0.3 + 0.05], dim=-1
    )
    labels = random_labels(counts, num_classes, generator=generator)
    indices = HungarianMatcher()(
        logits, pred_boxes, [t["class_labels"] for t in labels], [t["boxes"] for t in labels]
    )
    for i, (rows, cols) in enumerate(indices):
        n = counts[i]
        assert len(rows) == len(cols) == min(queries, n)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        cost = _cost(logits[i], pred_boxes[i], labels[i]["class_labels"], labels[i]["boxes"])
        found = float(cost[rows, cols].sum()) if n else 0.0
        assert found == pytest.approx(_brute_force(cost), abs=1e-4)


def test_matcher_rejects_non_finite_predictions_by_name():
    labels = random_labels([2], 3)
    logits = torch.randn(1, 5, 4)
    boxes = torch.rand(1, 5, 4) * 0.5 + 0.1
    logits[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"auxiliary_outputs\[3\]\.logits contains NaN or inf"):
        HungarianMatcher()(logits, boxes, [labels[0]["class_labels"]], [labels[0]["boxes"]], name="auxiliary_outputs[3].")
    logits[0, 1, 2] = 0.0
    boxes[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"^pred_boxes contains NaN or inf"):
        HungarianMatcher()(logits, boxes, [labels[0]["class_labels"]], [labels[0]["boxes"]])


def test_matcher_runs_in_float32_under_autocast():
    labels = random_labels([3], 3)
    logits = torch.randn(1, 6, 4).bfloat16()
    boxes = (torch.rand(1, 6, 4) * 0.4 + 0.1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rows, cols = HungarianMatcher()(logits, boxes, [labels[0]["class_labels"]], [labels[0]["boxes"]])[0]
    cost = _cost(logits[0].float(), boxes[0].float(), labels[0]["class_labels"], labels[0]["boxes"])
    assert float(cost[rows, cols].sum()) == pytest.approx(_brute_force(cost), abs=1e-4)


def _criterion(num_labels=3):
    return SetCriterion(HfDetrConfig(num_labels=num_labels))


def _predictions(batch=2, queries=5, num_labels=3):
    return torch.randn(batch, queries, num_labels + 1), torch.rand(batch, queries, 4) * 0.5 + 0.1


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (lambda l: l[:1], ValueError, r"labels has 1 entries but the batch has 2 images"),
        (lambda l: [l[0], {"boxes": l[1]["boxes"]}], ValueError, r'labels\[1\] must be a dict with "class_labels"'),
        (lambda l: [l[0], {**l[1], "class_labels": l[1]["class_labels"].float()}], TypeError, r"integer class ids"),
        (lambda l: [l[0], {**l[1], "class_labels": torch.tensor([0, 3])}], ValueError,
         r'labels\[1\]\["class_labels"\]\[1\] = 3 is not a class id in \[0, 3\)'),
        (lambda l: [{**l[0], "boxes": l[0]["boxes"].index_fill(0, torch.tensor([1]), float("nan"))}, l[1]],
         ValueError, r'labels\[0\]\["boxes"\]\[1\] = .* is NaN'),
        (lambda l: [l[0], {**l[1], "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [1.2, 0.5, 0.1, 0.1]])}],
         ValueError, r'labels\[1\]\["boxes"\]\[1\] = .* lies outside \[0, 1\]'),
        (lambda l: [l[0], {**l[1], "boxes": torch.tensor([[0.5, 0.5, 0.0, 0.2], [0.5, 0.5, 0.1, 0.1]])}],
         ValueError, r'labels\[1\]\["boxes"\]\[0\] = .* width or height <= 0'),
        (lambda l: [l[0], {**l[1], "boxes": torch.rand(3, 4)}], ValueError, r'"boxes" \[n, 4\] with the same n'),
    ],
)
def test_bad_labels_are_named(mutate, error, message):
    labels = random_labels([3, 2], 3)
    logits, boxes = _predictions()
    with pytest.raises(error, match=message):
        _criterion()(logits, boxes, mutate(labels))


def test_images_without_targets_only_push_towards_no_object():
    logits, boxes = _predictions()
    labels = [{"class_labels": [], "boxes": []}, {"class_labels": torch.zeros(0, dtype=torch.long),
                                                  "boxes": torch.zeros(0, 4)}]
    loss, terms = _criterion()(logits, boxes, labels)
    assert terms["loss_bbox"].item() == 0 and terms["loss_giou"].item() == 0
    # every query's target is "no object" (class 3), weighted uniformly, so the CE is the plain mean
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.full((10,), 3))
    assert terms["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_weights_follow_the_config():
    config = HfDetrConfig(num_labels=3)
    criterion = SetCriterion(config)
    logits, boxes = _predictions()
    labels = random_labels([3, 2], 3)
    loss, terms = criterion(logits, boxes, labels)
    config.bbox_loss_coefficient, config.giou_loss_coefficient = 0.0, 10.0
    reweighted, _ = criterion(logits, boxes, labels)
    assert loss.item() == pytest.approx((terms["loss_ce"] + 5 * terms["loss_bbox"] + 2 * terms["loss_giou"]).item())
    assert reweighted.item() == pytest.approx((terms["loss_ce"] + 10 * terms["loss_giou"]).item(), rel=1e-5)

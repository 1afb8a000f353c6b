"""The Hungarian matcher against brute force; the criterion's input checks, weights and composition."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from helpers import padded_batch, random_labels, tiny_config_kwargs
from hf_detr import HfDetrConfig, HfDetrForObjectDetection
from hf_detr.modeling.loss import LossTerm, build_criterion
from hf_detr.modeling.matcher import HungarianMatcher


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
        return min(
            sum(cost[q, t].item() for t, q in enumerate(p)) for p in itertools.permutations(range(queries), targets)
        )
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
        [
            torch.rand(len(counts), queries, 2, generator=generator) * 0.6 + 0.2,
            torch.rand(len(counts), queries, 2, generator=generator) * 0.3 + 0.05,
        ],
        dim=-1,
    )
    labels = random_labels(counts, num_classes, generator=generator)
    indices = HungarianMatcher()(logits, pred_boxes, [t["class_labels"] for t in labels], [t["boxes"] for t in labels])
    for i, (rows, cols) in enumerate(indices):
        n = counts[i]
        assert len(rows) == len(cols) == min(queries, n)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        cost = _cost(logits[i], pred_boxes[i], labels[i]["class_labels"], labels[i]["boxes"])
        found = float(cost[rows, cols].sum()) if n else 0.0
        assert found == pytest.approx(_brute_force(cost), abs=1e-4)


@pytest.mark.parametrize("trial", range(4))
def test_order_cost_adds_its_share_of_the_query_index_to_the_optimal_assignment(trial):
    generator = torch.Generator().manual_seed(100 + trial)
    queries, order_cost = 5, 0.5
    logits = torch.randn(1, queries, 4, generator=generator) * 3
    pred_boxes = torch.cat(
        [torch.rand(1, queries, 2, generator=generator) * 0.6 + 0.2, torch.full((1, queries, 2), 0.2)], -1
    )
    labels = random_labels([3], 3, generator=generator)[0]
    rows, cols = HungarianMatcher(order_cost=order_cost)(
        logits, pred_boxes, [labels["class_labels"]], [labels["boxes"]]
    )[0]
    cost = _cost(logits[0], pred_boxes[0], labels["class_labels"], labels["boxes"])
    cost = cost + order_cost * torch.arange(queries)[:, None] / queries
    assert float(cost[rows, cols].sum()) == pytest.approx(_brute_force(cost), abs=1e-4)


def test_order_cost_gives_an_object_to_the_earlier_of_two_equal_queries_and_not_to_a_worse_one():
    """The tie-break that makes one query, always the same, the positive of a pair predicting the same box (a pair
    that would otherwise win the match by turns and both learn to fire: duplicates)."""
    target = {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    logits = torch.zeros(1, 4, 3)
    pred_boxes = torch.tensor(
        [[[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2], [0.8, 0.8, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2]]]
    )
    pred_boxes[0, 1] += 1e-4  # the earlier of the two is a hair worse: without the order cost the later one wins
    args = (logits, pred_boxes, [target["class_labels"]], [target["boxes"]])
    assert HungarianMatcher()(*args)[0][0].tolist() == [3]
    assert HungarianMatcher(order_cost=0.5)(*args)[0][0].tolist() == [1]
    pred_boxes[0, 1] = torch.tensor([0.45, 0.5, 0.2, 0.2])  # clearly worse: the box decides
    assert HungarianMatcher(order_cost=0.5)(*args)[0][0].tolist() == [3]
    with pytest.raises(ValueError, match="order_cost.*non-negative"):
        HfDetrConfig(**tiny_config_kwargs(order_cost=-0.1))
    assert build_criterion(HfDetrConfig(**tiny_config_kwargs(order_cost=0.5))).matcher.order_cost == 0.5


def test_duplicate_eos_coefficient_weighs_only_unmatched_queries_on_an_object():
    """Query 0 and query 1 predict the target's box; the matching gives it to query 0, so query 1 is a duplicate and
    its "no object" term weighs `duplicate_eos_coefficient`; query 2, on background, keeps `eos_coefficient`. The
    normalizer stays DETR's (matched + eos * unmatched)."""
    target = {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    logits = torch.tensor([[[0.5, 2.0, -1.0], [0.1, 1.5, 0.3], [0.2, -0.4, 1.0]]])
    pred_boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]]])
    outputs = {"logits": logits, "pred_boxes": pred_boxes}
    ce = torch.nn.functional.cross_entropy(logits[0], torch.tensor([1, 2, 2]), reduction="none")
    eos, normalizer = 0.1, 1 + 2 * 0.1
    for duplicate, expected in ((0.0, ce[0] + eos * ce[1] + eos * ce[2]), (2.0, ce[0] + 2.0 * ce[1] + eos * ce[2])):
        config = HfDetrConfig(**tiny_config_kwargs(num_queries=3, num_labels=2, duplicate_eos_coefficient=duplicate))
        _, values = build_criterion(config)(outputs, [target])
        assert float(values["loss_ce"]) == pytest.approx(float(expected / normalizer), rel=1e-5)
    # moved off the object (IoU with the target < 0.5), query 1 is an ordinary unmatched query again
    pred_boxes[0, 1] = torch.tensor([0.62, 0.5, 0.2, 0.2])
    _, values = build_criterion(config)({"logits": logits, "pred_boxes": pred_boxes}, [target])
    assert float(values["loss_ce"]) == pytest.approx(float((ce[0] + eos * ce[1] + eos * ce[2]) / normalizer), rel=1e-5)
    with pytest.raises(ValueError, match="duplicate_eos_coefficient.*non-negative"):
        HfDetrConfig(**tiny_config_kwargs(duplicate_eos_coefficient=-1.0))


def test_matcher_rejects_non_finite_predictions_by_name():
    labels = random_labels([2], 3)
    logits = torch.randn(1, 5, 4)
    boxes = torch.rand(1, 5, 4) * 0.5 + 0.1
    logits[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"auxiliary_outputs\[3\]\.logits contains NaN or inf"):
        HungarianMatcher()(
            logits, boxes, [labels[0]["class_labels"]], [labels[0]["boxes"]], name="auxiliary_outputs[3]."
        )
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


def _criterion(num_labels=3, **config):
    return build_criterion(HfDetrConfig(num_labels=num_labels, num_queries=5, **config))


def _predictions(batch=2, queries=5, num_labels=3, aux_layers=0):
    """Random decoder outputs as the model hands them to its criterion."""

    def layer():
        return {
            "logits": torch.randn(batch, queries, num_labels + 1),
            "pred_boxes": torch.rand(batch, queries, 4) * 0.5 + 0.1,
        }

    return {**layer(), "auxiliary_outputs": [layer() for _ in range(aux_layers)]}


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (lambda x: x[:1], ValueError, r"labels has 1 entries but the batch has 2 images"),
        (lambda x: [x[0], {"boxes": x[1]["boxes"]}], ValueError, r'labels\[1\] must be a dict with "class_labels"'),
        (lambda x: [x[0], {**x[1], "class_labels": x[1]["class_labels"].float()}], TypeError, r"integer class ids"),
        (
            lambda x: [x[0], {**x[1], "class_labels": torch.tensor([0, 3])}],
            ValueError,
            r'labels\[1\]\["class_labels"\]\[1\] = 3 is not a class id in \[0, 3\)',
        ),
        (
            lambda x: [{**x[0], "boxes": x[0]["boxes"].index_fill(0, torch.tensor([1]), float("nan"))}, x[1]],
            ValueError,
            r'labels\[0\]\["boxes"\]\[1\] = .* is NaN',
        ),
        (
            lambda x: [x[0], {**x[1], "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [1.2, 0.5, 0.1, 0.1]])}],
            ValueError,
            r'labels\[1\]\["boxes"\]\[1\] = .* lies outside \[0, 1\]',
        ),
        (
            lambda x: [x[0], {**x[1], "boxes": torch.tensor([[0.5, 0.5, 0.0, 0.2], [0.5, 0.5, 0.1, 0.1]])}],
            ValueError,
            r'labels\[1\]\["boxes"\]\[0\] = .* width or height <= 0',
        ),
        (lambda x: [x[0], {**x[1], "boxes": torch.rand(3, 4)}], ValueError, r'"boxes" \[n, 4\] with the same n'),
    ],
)
def test_bad_labels_are_named(mutate, error, message):
    labels = random_labels([3, 2], 3)
    with pytest.raises(error, match=message):
        _criterion()(_predictions(), mutate(labels))


def test_images_without_targets_only_push_towards_no_object():
    outputs = _predictions()
    logits = outputs["logits"]
    labels = [
        {"class_labels": [], "boxes": []},
        {"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
    ]
    loss, terms = _criterion()(outputs, labels)
    assert terms["loss_bbox"].item() == 0 and terms["loss_giou"].item() == 0
    # every query's target is "no object" (class 3), weighted uniformly, so the CE is the plain mean
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.full((10,), 3))
    assert terms["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_weights_follow_the_config():
    config = HfDetrConfig(num_labels=3, num_queries=5)
    outputs = _predictions()
    labels = random_labels([3, 2], 3)
    loss, terms = build_criterion(config)(outputs, labels)
    config.bbox_loss_coefficient, config.giou_loss_coefficient = 0.0, 10.0
    reweighted, _ = build_criterion(config)(outputs, labels)
    assert loss.item() == pytest.approx((terms["loss_ce"] + 5 * terms["loss_bbox"] + 2 * terms["loss_giou"]).item())
    assert reweighted.item() == pytest.approx((terms["loss_ce"] + 10 * terms["loss_giou"]).item(), rel=1e-5)


def test_outputs_must_hold_whole_query_groups():
    with pytest.raises(ValueError, match=r'outputs\["logits"\] has 7 queries, not a multiple of num_queries=5'):
        _criterion()(_predictions(queries=7), random_labels([1, 1], 3))


@dataclasses.dataclass(frozen=True)
class _WidthTerm(LossTerm):
    """A toy term: the mean predicted box width."""

    def __call__(self, outputs, targets):
        return {"loss_width": outputs["pred_boxes"][..., 2].mean()}


def test_a_new_term_is_one_more_entry_in_the_list():
    criterion = _criterion()
    outputs, labels = _predictions(), random_labels([3, 2], 3)
    loss, terms = criterion(outputs, labels)
    plugged = dataclasses.replace(
        criterion, losses=[*criterion.losses, _WidthTerm()], weight_dict={**criterion.weight_dict, "loss_width": 0.5}
    )
    plugged_loss, plugged_terms = plugged(outputs, labels)
    width = outputs["pred_boxes"][..., 2].mean()
    assert plugged_terms.keys() == terms.keys() | {"loss_width"}
    torch.testing.assert_close(plugged_terms["loss_width"], width)
    torch.testing.assert_close(plugged_loss, loss + 0.5 * width)
    # without a weight the term is only logged, like cardinality_error
    logged_loss, logged_terms = dataclasses.replace(criterion, losses=plugged.losses)(outputs, labels)
    assert "loss_width" in logged_terms
    torch.testing.assert_close(logged_loss, loss)
    with pytest.raises(ValueError, match=r"_WidthTerm returns \['loss_width'\], which another loss term returned"):
        dataclasses.replace(plugged, losses=[*plugged.losses, _WidthTerm()])(outputs, labels)


class _RecordingMatcher:
    """Hungarian matching that records the name and `[rows, queries]` of every matching it is asked for."""

    def __init__(self):
        self.hungarian, self.calls = HungarianMatcher(), []

    def __call__(self, logits, pred_boxes, class_labels, boxes, name=""):
        self.calls.append((name, tuple(logits.shape[:2])))
        return self.hungarian(logits, pred_boxes, class_labels, boxes, name=name)


def test_the_matcher_is_built_once_and_can_be_injected(monkeypatch):
    built = []
    init = HungarianMatcher.__init__

    def counting_init(self, *args, **kwargs):
        built.append(args)
        init(self, *args, **kwargs)

    monkeypatch.setattr(HungarianMatcher, "__init__", counting_init)
    criterion = _criterion(num_query_groups=3, one_to_many_repeats=2, auxiliary_loss=True, decoder_layers=3)
    assert built == [(1.0, 5.0, 2.0, 0.0)]
    outputs, labels = _predictions(queries=15, aux_layers=2), random_labels([3, 2], 3)
    loss, _ = criterion(outputs, labels)
    criterion(outputs, labels)
    assert len(built) == 1  # not per call, term or layer

    recording = _RecordingMatcher()
    injected_loss, _ = dataclasses.replace(criterion, matcher=recording)(outputs, labels)
    layers = ["", "auxiliary_outputs[0].", "auxiliary_outputs[1]."]
    # per layer: the two one-to-one groups of both images at once, then the one-to-many group of both
    assert recording.calls == [(name, (4, 5)) for name in layers] + [(name, (2, 5)) for name in layers]
    torch.testing.assert_close(injected_loss, loss)


def test_the_model_builds_its_loss_from_its_current_config_or_uses_the_one_assigned():
    model = HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs()))
    pixel_values, pixel_mask = padded_batch()
    labels = random_labels([3, 2], model.config.num_labels)
    model.config.giou_loss_coefficient = 10.0
    output = model(pixel_values, pixel_mask, labels=labels)
    terms = output.loss_dict
    expected = terms["loss_ce"] + 5 * terms["loss_bbox"] + 10 * terms["loss_giou"]
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)

    criterion = build_criterion(model.config)
    model.criterion = dataclasses.replace(
        criterion, losses=[*criterion.losses, _WidthTerm()], weight_dict={**criterion.weight_dict, "loss_width": 0.5}
    )
    output = model(pixel_values, pixel_mask, labels=labels)
    terms = output.loss_dict
    expected = terms["loss_ce"] + 5 * terms["loss_bbox"] + 10 * terms["loss_giou"] + 0.5 * terms["loss_width"]
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)

"""The duplicate measure against hand-counted scenes."""

from __future__ import annotations

import pytest
import torch

from hf_detr import HfDetrInputError, HfDetrObjectDetectionOutput
from hf_detr.evaluation.duplicates import duplicate_measure

# image 0: ground truth A (class 0), B (class 1) and a crowd region of class 0, as COCO (x, y, w, h)
REFERENCES = [
    {
        "boxes": torch.tensor([[10.0, 10, 20, 20], [50, 50, 20, 20], [0, 60, 30, 30]]),
        "labels": torch.tensor([0, 1, 0]),
        "iscrowd": torch.tensor([0, 0, 1]),
    },
    {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
]
PREDICTIONS = [
    {
        "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.3, 0.55, 0.9]),
        "labels": torch.tensor([0, 0, 1, 1, 1, 0, 0]),
        "boxes": torch.tensor(
            [
                [10.0, 10, 30, 30],  # A exactly
                [11, 10, 31, 30],  # IoU 380/420 with the first: a duplicate, and A's second box
                [10, 10, 30, 30],  # the first box in another class: not a duplicate
                [50, 50, 70, 70],  # B exactly
                [51, 50, 71, 70],  # a duplicate of B's, under the 0.5 threshold
                [14, 10, 34, 30],  # IoU 320/480 with the first, 340/460 with the second: a duplicate, not A's box
                [0, 60, 30, 90],  # on the crowd region
            ]
        ),
    },
    {"scores": torch.tensor([0.95]), "labels": torch.tensor([0]), "boxes": torch.tensor([[0.0, 0, 10, 10]])},
]


def test_duplicates_equal_a_hand_count():
    # 7 confident detections, 2 duplicates; of the 2 objects (the crowd is none), A has 2 boxes
    assert duplicate_measure(PREDICTIONS, REFERENCES) == pytest.approx(
        {"duplicate_rate": 2 / 7, "duplicated_objects": 1 / 2}
    )
    # at 0.25 B's second box counts too
    assert duplicate_measure(PREDICTIONS, REFERENCES, threshold=0.25) == pytest.approx(
        {"duplicate_rate": 3 / 8, "duplicated_objects": 2 / 2}
    )
    # at IoU 0.6 the sixth box also covers A: still one duplicated object, and the same duplicates
    assert duplicate_measure(PREDICTIONS, REFERENCES, iou=0.6) == pytest.approx(
        {"duplicate_rate": 2 / 7, "duplicated_objects": 1 / 2}
    )


def test_equal_scores_count_one_duplicate_and_nothing_defines_an_empty_set():
    box = torch.tensor([[0.0, 0, 10, 10]])
    twins = [{"scores": torch.tensor([0.8, 0.8]), "labels": torch.tensor([2, 2]), "boxes": box.repeat(2, 1)}]
    truth = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([2])}]
    assert duplicate_measure(twins, truth) == {"duplicate_rate": 0.5, "duplicated_objects": 1.0}
    empty = [{"scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    nothing = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    assert duplicate_measure(empty, nothing) == {"duplicate_rate": -1.0, "duplicated_objects": -1.0}


def test_bad_input_is_a_clear_error():
    with pytest.raises(HfDetrInputError, match="Got 2 predictions but 1 references"):
        duplicate_measure(PREDICTIONS, REFERENCES[:1])
    with pytest.raises(HfDetrInputError, match=r"iou must be in \(0, 1\], got 0"):
        duplicate_measure(PREDICTIONS, REFERENCES, iou=0)


@pytest.mark.parametrize("top_k", [None, 5])
def test_nms_in_post_processing_equals_batched_nms(top_k):
    from torchvision.ops import batched_nms

    from hf_detr import presets

    generator = torch.Generator().manual_seed(0)
    # 40 queries crowded on a few spots, so that many overlap: 3 classes + no object
    centers = torch.rand(4, 2, generator=generator).repeat_interleave(10, 0)
    pred_boxes = torch.cat([centers + 0.03 * torch.randn(40, 2, generator=generator), 0.2 + 0.1 * torch.rand(40, 2)], 1)
    outputs = HfDetrObjectDetectionOutput(
        logits=torch.randn(2, 40, 4, generator=generator), pred_boxes=pred_boxes.clamp(0.05, 0.95).repeat(2, 1, 1)
    )
    processor = presets.get("tiny").image_processor()
    sizes = [(480, 640), (300, 200)]
    plain = processor.post_process_object_detection(outputs, 0.2, target_sizes=sizes)
    pruned = processor.post_process_object_detection(outputs, 0.2, target_sizes=sizes, top_k=top_k, nms_threshold=0.5)
    for before, after in zip(plain, pruned):
        kept = batched_nms(before["boxes"], before["scores"], before["labels"], 0.5)[:top_k]
        assert 0 < len(kept) < len(before["scores"])  # NMS removed some, not all
        order = kept.sort().values if top_k is None else kept  # query order, or best first with top_k
        for key in ("scores", "labels", "boxes"):
            assert torch.equal(after[key], before[key][order]), key
    with pytest.raises(HfDetrInputError, match=r"`nms_threshold` must be an IoU in \[0, 1\] or None, got 1.5"):
        processor.post_process_object_detection(outputs, 0.2, nms_threshold=1.5)


class _TwinDetector(torch.nn.Module):
    """Per image two confident class-0 boxes 1% apart in the middle (a duplicate pair), the other queries "no
    object"."""

    def __init__(self):
        super().__init__()
        from hf_detr import presets

        self.config = presets.get("tiny").config(id2label={0: "circle", 1: "rectangle", 2: "triangle"})
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # evaluate() reads the device from a parameter

    def forward(self, pixel_values, pixel_mask):
        batch, queries = len(pixel_values), self.config.num_queries
        logits = torch.full((batch, queries, 4), -10.0)
        logits[..., -1] = 10.0
        logits[:, :2, 0], logits[:, :2, -1] = 10.0, -10.0
        boxes = torch.tensor([0.5, 0.5, 0.3, 0.3]).repeat(batch, queries, 1)
        boxes[:, 1, 0] += 0.003
        return HfDetrObjectDetectionOutput(logits=logits, pred_boxes=boxes)


def test_evaluate_reports_duplicates_and_nms_removes_them():
    from hf_detr import presets
    from hf_detr.data.synthetic import make_synthetic_dataset
    from hf_detr.evaluation.evaluate import evaluate

    split = make_synthetic_dataset(0, 3, 0, image_size=64, classes=("circle", "rectangle", "triangle"), seed=0)
    processor = presets.get("tiny").image_processor()
    plain = evaluate(_TwinDetector(), processor, split["validation"])
    assert plain["duplicate_rate"] == 0.5  # of the two confident boxes of each image, one is the other's twin
    pruned = evaluate(_TwinDetector(), processor, split["validation"], nms_threshold=0.5)
    assert pruned["duplicate_rate"] == 0.0
    assert pruned["duplicated_objects"] == 0.0 <= plain["duplicated_objects"]

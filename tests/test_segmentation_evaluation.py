"""The one evaluation path on a segmentation model: mask mAP and panoptic quality from `evaluate`."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.utils import ModelOutput

from hf_detr import HfDetrConfig, HfDetrImageProcessor
from hf_detr.data.loading import id2label as dataset_id2label
from hf_detr.data.masks import mask_references
from hf_detr.data.sources import load_data
from hf_detr.evaluation import evaluate

NUM_QUERIES = 12


class Oracle(nn.Module):
    """A stand-in segmentation model that answers every image of `split`, in order, with its ground truth: one query
    per object (its class, its mask at the input's resolution over the image's real pixels) and "no object" for
    the rest. Whatever `evaluate` gets wrong about cropping, resizing or labels shows up as a score below 1."""

    def __init__(self, split, id2label) -> None:
        super().__init__()
        # task: what marks a segmentation model for `evaluate`
        self.config = HfDetrConfig(backbone="resnet18", num_queries=NUM_QUERIES, id2label=id2label, task="instance")
        self.anchor = nn.Parameter(torch.zeros(1))  # a device for `evaluate`
        self.references = [mask_references(example) for example in split]
        self.seen = 0

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> ModelOutput:
        batch, _, height, width = pixel_values.shape
        logits = torch.full((batch, NUM_QUERIES, self.config.num_labels + 1), -10.0)
        logits[..., -1] = 10.0
        masks = torch.full((batch, NUM_QUERIES, height, width), -10.0)
        for i in range(batch):
            reference = self.references[self.seen]
            self.seen += 1
            rows, cols = int(pixel_mask[i].any(1).sum()), int(pixel_mask[i].any(0).sum())
            if not len(reference["masks"]):
                continue
            resized = nn.functional.interpolate(reference["masks"][None].float(), size=(rows, cols))[0]
            for j, (mask, label) in enumerate(zip(resized, reference["labels"])):
                logits[i, j, -1], logits[i, j, label] = -10.0, 10.0
                masks[i, j, :rows, :cols] = torch.where(mask > 0, 10.0, -10.0)
        boxes = torch.full((batch, NUM_QUERIES, 4), 0.5)
        return ModelOutput(logits=logits, pred_boxes=boxes, pred_masks=masks)


@pytest.fixture(scope="module")
def split():
    data = load_data(
        "synthetic", ["validation"], synthetic_sizes={"validation": 5}, synthetic_image_size=96, masks=True
    )
    return data["validation"]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_ground_truth_masks_score_one(split, batch_size):
    """Perfect masks give mask AP 1 and PQ near 1 (the masks pass through the input resolution), whether the
    images are padded in a batch or alone."""
    processor = HfDetrImageProcessor(size={"shortest_edge": 96, "longest_edge": 160})
    metrics = evaluate(Oracle(split, dataset_id2label(split)), processor, split, batch_size=batch_size, per_class=True)
    assert metrics["segm_map_50"] == pytest.approx(1.0)
    assert metrics["segm_map"] > 0.9
    assert metrics["pq"] > 0.9 and metrics["rq"] == pytest.approx(1.0)
    assert metrics["pq_stuff"] == -1.0  # every class is a thing
    present = {dataset_id2label(split)[c] for objects in split["objects"] for c in objects["category"]}
    for name in present:
        assert metrics[f"segm_map_50_class_{name}"] == pytest.approx(1.0) and metrics[f"pq_class_{name}"] > 0.8


def test_masks_are_cut_to_the_image_before_scoring(split):
    """Every image padded to 160 x 128: the padding's share of `pred_masks` is cut off before the masks are resized
    to the image (post-processing the whole canvas, as transformers' does, stretches them and loses the match)."""
    processor = HfDetrImageProcessor(
        size={"shortest_edge": 96, "longest_edge": 160}, pad_size={"height": 160, "width": 128}
    )
    padded = evaluate(Oracle(split, dataset_id2label(split)), processor, split, batch_size=2)
    assert padded["segm_map_50"] == pytest.approx(1.0) and padded["pq"] > 0.9


def test_a_split_without_masks_is_a_clear_error(split):
    boxes_only = load_data("synthetic", ["validation"], synthetic_sizes={"validation": 5}, synthetic_image_size=96)[
        "validation"
    ]
    with pytest.raises(ValueError, match="masks=True"):
        evaluate(Oracle(split, dataset_id2label(split)), HfDetrImageProcessor(), boxes_only)

"""Evaluation at scale, exactly: the compact path (detections post-processed per batch and kept as arrays, COCOeval
run a category at a time) gives the numbers of pycocotools run the textbook way, `backend="numpy"` gives
pycocotools' precision and recall arrays bit for bit, `evaluate`'s one gather puts images in the data's order, and
PQ's fast pixel indexing counts what the sorted search counts."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from pycocotools import mask as mask_utils
from transformers import EvalPrediction

from hf_detr.evaluation.duplicates import duplicate_measure
from hf_detr.evaluation.metrics import (
    COCO_STAT_NAMES,
    PostProcessInputs,
    coco_evaluate,
    detections_in_original_frame,
    make_compute_metrics,
)
from hf_detr.evaluation.segmentation_metrics import PanopticQualityMetric, coco_segmentation_evaluate
from hf_detr.modeling import HfDetrImageProcessor
from hf_detr.modeling.boxes import denormalize_boxes
from test_metrics import IMAGES, perfect_outputs, processor_labels, pycocotools_directly, random_scene
from test_segmentation_metrics import mask_scene

# the module, not the function of the same name that `hf_detr.evaluation` exports
evaluate_module = importlib.import_module("hf_detr.evaluation.evaluate")


def crowded_scene(seed: int, num_images: int = 30) -> tuple[list[dict], list[dict]]:
    """Boxes that stress COCOeval's rules: scores on a coarse grid (ties, within and across images), duplicated
    ground truth (tied IoUs), crowd regions over objects, objects in every area range, and one class with more
    than 100 detections in an image (COCOeval keeps the best 100). Classes 0, 1, 2 and 5, as `random_scene`'s."""
    rng = np.random.default_rng(seed)
    classes = np.array([0, 1, 2, 5])
    predictions, references = [], []
    for image in range(num_images):
        count = int(rng.integers(0, 8))
        size = rng.uniform(4, 200, (count, 2))
        boxes = np.concatenate([rng.uniform(0, 400, (count, 2)), size], 1)
        boxes = np.concatenate([boxes, boxes[:1]])  # a duplicate: equal IoUs
        labels = rng.choice(classes, len(boxes))
        crowd = (rng.uniform(size=len(boxes)) < 0.2).astype(np.int64)
        references.append(
            {
                "boxes": boxes,
                "labels": labels,
                "iscrowd": crowd,
                "area": size.prod(1).tolist() + size[:1].prod(1).tolist(),
            }
        )
        many = 130 if image == 0 else int(rng.integers(0, 40))
        near = rng.integers(0, max(len(boxes), 1), many) if len(boxes) else np.zeros(0, dtype=int)
        found = boxes[near] + rng.normal(0, 3, (len(near), 4)) if len(boxes) else rng.uniform(1, 300, (many, 4))
        found[:, 2:] = np.abs(found[:, 2:])
        found_labels = np.where(
            rng.uniform(size=many) < 0.8, labels[near] if len(boxes) else 0, rng.choice(classes, many)
        )
        if image == 0:
            found_labels[:] = 0
        predictions.append(
            {
                "boxes": np.concatenate([found[:, :2], found[:, :2] + found[:, 2:]], 1),
                "labels": found_labels,
                "scores": rng.integers(1, 10, many) / 10,
            }
        )
    return predictions, references


def rectangle_masks(seed: int, num_images: int = 4, per_image: int = 90):
    """Mask predictions and references as RLEs of rectangles: more than 255 masks in all (pycocotools' `area`
    handles 255 at a time), some crowd."""
    rng = np.random.default_rng(seed)
    predictions, references = [], []
    for _ in range(num_images):
        truth = np.concatenate([rng.uniform(0, 60, (6, 2)), rng.uniform(2, 40, (6, 2))], 1)
        found = np.concatenate([truth[rng.integers(0, 6, per_image)] + rng.normal(0, 2, (per_image, 4))])
        found[:, 2:] = np.abs(found[:, 2:]) + 1
        predictions.append(
            {
                "masks": mask_utils.frPyObjects(found, 100, 100),
                "labels": rng.integers(0, 3, per_image),
                "scores": rng.uniform(0, 1, per_image),
            }
        )
        references.append(
            {
                "masks": mask_utils.frPyObjects(truth, 100, 100),
                "labels": rng.integers(0, 3, 6),
                "iscrowd": (np.arange(6) == 2).astype(int),
            }
        )
    return predictions, references


def equal_iou_scene() -> tuple[list[dict], list[dict]]:
    """A detection at IoU 0.6 with two objects: COCOeval gives it the later one, which leaves the second detection
    (exactly on that object) unmatched; taking the first would match both."""
    references = [
        {
            "boxes": [[0, 0, 10, 10], [5, 0, 10, 10], [40, 40, 20, 20]],
            "labels": [0, 0, 1],
            "iscrowd": [0, 0, 0],
            "area": [100, 100, 400],
        }
    ]
    predictions = [
        {
            "boxes": [[2.5, 0, 12.5, 10], [5, 0, 15, 10], [40, 40, 60, 60]],
            "labels": [0, 0, 1],
            "scores": [0.9, 0.8, 0.7],
        }
    ]
    return predictions, references


BOX_SCENES = (
    [lambda seed=seed: random_scene(seed, 12) for seed in range(5)]
    + [lambda seed=seed: crowded_scene(seed) for seed in range(3)]
    + [equal_iou_scene]
)


def _same(a, b) -> None:
    """Two CocoEvaluations with equal numbers, bit for bit."""
    assert a.metrics == b.metrics and a.per_class == b.per_class
    assert np.array_equal(a.precision, b.precision)


@pytest.mark.parametrize("scene", BOX_SCENES)
def test_both_backends_give_pycocotools_numbers_exactly_on_boxes(scene):
    predictions, references = scene()
    names = {0: "a", 1: "b", 2: "c", 3: "d", 5: "e", 9: "never seen"}
    slow, fast = (
        coco_evaluate(predictions, references, per_class=True, id2label=names, return_evaluation=True, backend=backend)
        for backend in ("pycocotools", "numpy")
    )
    _same(slow, fast)
    assert slow.predictions == fast.predictions and slow.references == fast.references
    # and what COCOeval gives run once on everything, the textbook way
    with_ids = [{**ref, "image_id": i} for i, ref in enumerate(references, start=1)]
    assert [slow.metrics[name] for name in COCO_STAT_NAMES] == pycocotools_directly(predictions, with_ids).tolist()
    assert 0.0 < slow.metrics["map"] < 1.0


def test_the_numpy_backend_on_edge_cases():
    predictions, references = random_scene(3, 6)
    nothing = [{"boxes": np.zeros((0, 4)), "labels": [], "scores": []}] * len(references)
    truthless = [{"boxes": [], "labels": []}] * len(references)
    for preds, refs in ((nothing, references), (predictions, truthless), ([], []), (predictions[:1], references[:1])):
        _same(
            *(
                coco_evaluate(preds, refs, per_class=True, return_evaluation=True, backend=backend)
                for backend in ("pycocotools", "numpy")
            )
        )


@pytest.mark.parametrize("scene", [lambda: mask_scene(1), lambda: mask_scene(7, 6), lambda: rectangle_masks(0)])
def test_both_backends_give_pycocotools_numbers_exactly_on_masks(scene):
    predictions, references = scene()
    slow, fast = (
        coco_segmentation_evaluate(predictions, references, per_class=True, return_evaluation=True, backend=backend)
        for backend in ("pycocotools", "numpy")
    )
    _same(slow, fast)
    assert 0.0 < slow.metrics["segm_map"] < 1.0


def test_an_unknown_backend_is_a_clear_error():
    predictions, references = random_scene(0, 2)
    with pytest.raises(ValueError, match=r"backend must be one of \('pycocotools', 'numpy'\), got 'faster'"):
        coco_evaluate(predictions, references, backend="faster")
    with pytest.raises(ValueError, match="backend must be one of"):
        make_compute_metrics(HfDetrImageProcessor(), backend="fast")


def test_the_compact_path_gives_the_numbers_of_pycocotools_on_all_outputs_at_once():
    """7 images with crowd boxes and 3 classes, in batches of 3 (the last uneven): `compute_metrics` on the
    batches' logits (Trainer's path) and on the batches' post-processed detections (`evaluate`'s) give what the
    outputs of all images post-processed at once and scored by COCOeval the textbook way give."""
    images = IMAGES + IMAGES[:3]
    labels = processor_labels(images)
    generator = torch.Generator().manual_seed(0)
    logits, pred_boxes = perfect_outputs(labels, num_queries=6, generator=generator)
    logits = logits + 3 * torch.randn(logits.shape, generator=generator)
    pred_boxes = (pred_boxes + 0.03 * torch.randn(pred_boxes.shape, generator=generator)).clamp(0.01, 0.99)
    processor, threshold, batches = HfDetrImageProcessor(), 0.1, [slice(0, 3), slice(3, 6), slice(6, 7)]

    # every image's detections post-processed at once (as `evaluate` did), scored by COCOeval the textbook way
    sizes = torch.tensor([label["orig_size"].tolist() for label in labels], dtype=torch.float32)
    everything = processor.post_process_object_detection(
        PostProcessInputs(logits=logits, pred_boxes=pred_boxes), threshold, target_sizes=sizes
    )
    predictions = [
        {
            "boxes": image["boxes"].double().tolist(),
            "labels": image["labels"].tolist(),
            "scores": image["scores"].tolist(),
        }
        for image in everything
    ]
    references = []
    for image_id, label in enumerate(labels, start=1):
        orig, size = label["orig_size"].tolist(), label["size"].tolist()
        area = torch.as_tensor(label["area"], dtype=torch.float64) * (orig[0] * orig[1]) / (size[0] * size[1])
        references.append(
            {
                "image_id": image_id,
                "labels": label["class_labels"].tolist(),
                "area": area.tolist(),
                "boxes": denormalize_boxes(torch.as_tensor(label["boxes"], dtype=torch.float64), "xywh", orig).tolist(),
                "iscrowd": label["iscrowd"].tolist(),
            }
        )
    textbook = pycocotools_directly(predictions, references)
    expected = {name: round(float(value), 4) for name, value in zip(COCO_STAT_NAMES, textbook)}
    assert any(label["iscrowd"].any() for label in labels) and 0.1 < expected["map"] < 0.9
    at_once = coco_evaluate(predictions, references, return_evaluation=True)
    assert [at_once.metrics[name] for name in COCO_STAT_NAMES] == textbook.tolist()

    by_batch = [labels[batch] for batch in batches]
    trainer = EvalPrediction(
        predictions=[(logits[b].numpy(), pred_boxes[b].numpy()) for b in batches], label_ids=by_batch
    )
    evaluate = EvalPrediction(
        predictions=[
            detections_in_original_frame(processor, logits[b], pred_boxes[b], labels[b], threshold) for b in batches
        ],
        label_ids=by_batch,
    )
    for backend in ("pycocotools", "numpy"):
        compute_metrics = make_compute_metrics(processor, threshold=threshold, return_evaluation=True, backend=backend)
        for eval_pred in (trainer, evaluate):
            evaluation = compute_metrics(eval_pred)
            # COCO's numbers, and the duplicate measure of the same detections
            duplicates = {name: round(value, 4) for name, value in duplicate_measure(predictions, references).items()}
            assert evaluation.metrics == {**expected, **duplicates}
            assert np.array_equal(evaluation.precision, at_once.precision)
            # what the evaluation keeps of each image: float32 arrays, in the model's precision
            assert len(evaluation.predictions) == len(labels)
    kept = detections_in_original_frame(processor, logits[:3], pred_boxes[:3], labels[:3], threshold)
    assert kept[0]["scores"].dtype == kept[0]["boxes"].dtype == np.float32 and kept[0]["labels"].dtype == np.int64


class _Processes:
    """What `_in_data_order` reads of an accelerator with two processes."""

    num_processes = 2


@pytest.mark.parametrize("split_batches", [False, True])
def test_one_gather_puts_every_image_once_in_the_data_order(monkeypatch, split_batches):
    """7 images, batches of 2 per process (of 4 with `split_batches`), 2 processes: accelerate deals the batches
    out and pads the last round with the first images; the gathered entries are the data's, in order, once."""
    images, batch = 7, 4 if split_batches else 2
    sampler = torch.utils.data.BatchSampler(range(images), batch, drop_last=False)
    shards = [
        list(BatchSamplerShard(sampler, 2, rank, split_batches=split_batches, even_batches=True)) for rank in (0, 1)
    ]
    assert sum(map(len, shards[0] + shards[1])) > images  # padded
    sent = []  # each process's [(batch index, entries)], as gather_object concatenates them
    monkeypatch.setattr(evaluate_module, "gather_object", lambda mine: sent.pop(0) + sent.pop(0))
    sent += [list(enumerate(shard)) for shard in shards]
    assert evaluate_module._in_data_order(shards[0], images, _Processes()) == list(range(images))


def test_panoptic_counts_are_the_same_for_small_and_large_segment_ids():
    """Post-processing's ids (1..N, a lookup table) and COCO's PNG ids (up to 2^24, a sorted search) give the same
    counts, and the same error for an unlisted segment."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (30, 40))
    found = np.where(rng.uniform(size=truth.shape) < 0.9, truth, rng.integers(0, 5, truth.shape))
    metric = PanopticQualityMetric(things={0, 1}, stuff={2})

    def panoptic(ids, large, kind, segments):
        relabel = (lambda i: i * 65536 + 7) if large else (lambda i: i)
        mapped = np.where(ids > 0, relabel(ids), 0)
        return {
            "segmentation": mapped,
            "segments_info": [{"id": relabel(s), kind: s % 3, "iscrowd": int(s == 3)} for s in segments],
        }

    counts = [
        metric.count_image(
            panoptic(found, large, "label_id", range(1, 5)), panoptic(truth, large, "category_id", range(1, 4))
        )
        for large in (False, True)
    ]
    assert counts[0] == counts[1] and sum(c.tp for c in counts[0].values()) > 0
    for large in (False, True):
        with pytest.raises(ValueError, match=r"segment ids \[\d+\] are in `segmentation` but not in `segments_info`"):
            metric.count_image(
                panoptic(found, large, "label_id", range(1, 4)), panoptic(truth, large, "category_id", range(1, 4))
            )


def test_the_training_option_names_the_backends_and_reaches_the_evaluation(tmp_path, monkeypatch):
    import typing

    from hf_detr.evaluation.metrics import COCO_BACKENDS
    from hf_detr.training import loop
    from hf_detr.training.config import CocoBackend
    from test_train import tiny_config

    assert typing.get_args(CocoBackend) == COCO_BACKENDS
    with pytest.raises(ValueError, match=r"TrainConfig.coco_backend='fast' is invalid: choose one of"):
        tiny_config(tmp_path, coco_backend="fast", max_steps=1)
    backends = []

    def spy(*args, **kwargs):
        backends.append(kwargs["backend"])
        return evaluate(*args, **kwargs)

    evaluate = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", spy)
    config = tiny_config(
        tmp_path,
        coco_backend="numpy",
        max_steps=2,
        eval_split="validation",
        dataset="synthetic",
        synthetic_train_size=4,
        synthetic_eval_size=4,
        synthetic_image_size=64,
    )
    assert set(loop.train(config).metrics) >= {"map", "map_50"} and backends == ["numpy"]

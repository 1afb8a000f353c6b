"""Predicting with a segmentation model: `post_process_object_detection(..., return_masks=True)`, and `hf-detr
predict` drawing and writing each detection's mask (whole images and tiles)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from hf_detr import HfDetrForSegmentation, HfDetrImageProcessor
from hf_detr.apps.cli import main
from hf_detr.apps.predict import coco_results, load_model, predict
from hf_detr.evaluation.metrics import PostProcessInputs


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(path)
    return path


def _decoded(rles) -> np.ndarray:
    return np.stack([coco_mask.decode({"size": r["size"], "counts": r["counts"].encode()}) for r in rles]).astype(bool)


def test_return_masks_gives_each_kept_query_its_mask_at_the_target_size():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 4, generator=generator) * 3
    outputs = PostProcessInputs(
        logits=logits,
        pred_boxes=torch.rand(2, 6, 4, generator=generator),
        pred_masks=torch.randn(2, 6, 8, 10, generator=generator),
    )
    processor = HfDetrImageProcessor()
    found = processor.post_process_object_detection(outputs, 0.5, target_sizes=[(16, 20), (24, 30)], return_masks=True)
    plain = processor.post_process_object_detection(outputs, 0.5, target_sizes=[(16, 20), (24, 30)])
    scores = logits.softmax(-1)[..., :-1].max(-1).values
    for i, (image, size) in enumerate(zip(found, [(16, 20), (24, 30)])):
        assert torch.equal(image["scores"], plain[i]["scores"]) and torch.equal(image["boxes"], plain[i]["boxes"])
        keep = scores[i] >= 0.5
        assert 0 < int(keep.sum()) < 6  # some queries kept, some not
        expected = torch.nn.functional.interpolate(outputs.pred_masks[i, keep][None], size=size, mode="bilinear")[0]
        assert image["masks"].dtype == torch.bool and torch.equal(image["masks"], expected > 0)
    without = PostProcessInputs(logits=logits, pred_boxes=outputs.pred_boxes)
    with pytest.raises(TypeError, match="return_masks=True needs segmentation outputs with `pred_masks`"):
        processor.post_process_object_detection(without, return_masks=True)


def test_predict_writes_each_detection_s_mask_and_draws_it(segmentation_dir, image_path, tmp_path, capsys):
    model, processor = load_model(segmentation_dir)
    assert isinstance(model, HfDetrForSegmentation)  # chosen from the folder's config.architectures
    out = tmp_path / "out"
    assert main(["predict", str(segmentation_dir), str(image_path), "--threshold", "0", "--out", str(out)]) == 0
    detections = json.loads(capsys.readouterr().out)[0]["detections"]
    assert len(detections) == 10  # every query at threshold 0

    # the masks are the post-processing's of the image alone, in the order of the detections
    with torch.no_grad():
        outputs = model(**processor(images=Image.open(image_path).convert("RGB"), return_tensors="pt"))
    expected = processor.post_process_object_detection(outputs, 0.0, target_sizes=[(60, 90)], return_masks=True)[0]
    masks = _decoded([d["mask"] for d in detections])
    assert masks.shape == (10, 60, 90) and masks.any() and not masks.all()
    assert np.array_equal(masks, expected["masks"].numpy())
    assert [d["score"] for d in detections] == [round(float(s), 4) for s in expected["scores"]]

    # the picture tints the masked pixels: drawn with masks it differs from drawn with boxes alone
    source = np.asarray(Image.open(image_path), dtype=int)
    drawn = np.asarray(Image.open(out / "scene.png"), dtype=int)
    tinted = (drawn != source).any(-1)
    assert tinted[masks.any(0)].mean() > 0.9

    # the COCO results carry the masks as "segmentation": pycocotools loads them for iouType="segm"
    coco = COCO()
    coco.dataset = json.loads((out / "images.json").read_text()) | {"annotations": []}
    coco.createIndex()
    loaded = coco.loadRes(json.loads((out / "results.json").read_text()))
    assert np.array_equal(np.stack([loaded.annToMask(a) for a in loaded.dataset["annotations"]]).astype(bool), masks)


def test_tiled_masks_are_placed_at_their_tile(segmentation_dir, image_path):
    model, processor = load_model(segmentation_dir)
    whole = predict(model, processor, [image_path], threshold=0.0)[0]
    one_tile = predict(model, processor, [image_path], threshold=0.0, tile=90)[0]  # a single tile: the image itself
    best_first = whole.scores.argsort(descending=True, stable=True)  # tiles' detections come best score first
    assert torch.equal(one_tile.scores, whole.scores[best_first])
    assert np.array_equal(_decoded(one_tile.masks), _decoded(whole.masks)[best_first.numpy()])

    tiled = predict(model, processor, [image_path], threshold=0.0, tile=50, overlap=0.2)[0]
    masks = _decoded(tiled.masks)
    assert masks.shape[1:] == (60, 90) and len(masks) == len(tiled.scores) > 10
    for mask in masks[masks.any((1, 2))]:  # each mask lies inside one 50 x 50 tile
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        assert rows[-1] - rows[0] < 50 and cols[-1] - cols[0] < 50
    assert coco_results([tiled], model.config.id2label)["results"][0]["segmentation"] == tiled.masks[0]

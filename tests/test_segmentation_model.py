"""HfDetrForSegmentation: parity with transformers' DetrForSegmentation on identical weights (the reference oracle),
the mask loss, checkpoints in both directions, and the Auto classes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageSegmentation, DetrConfig, DetrForSegmentation

from helpers import padded_batch, random_labels, randomize_weights
from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrForSegmentation, create_model
from hf_detr.hub.convert import from_transformers
from hf_detr.modeling.loss import build_criterion

SMALL = dict(
    backbone="resnet18",
    encoder_layers=2,
    decoder_layers=2,
    d_model=128,
    encoder_ffn_dim=256,
    decoder_ffn_dim=256,
    num_queries=20,
)
TINY = dict(
    backbone="resnet18",
    encoder_layers=1,
    decoder_layers=2,
    d_model=64,
    encoder_attention_heads=8,
    decoder_attention_heads=8,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
    num_queries=10,
    num_labels=3,
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A random-weight transformers DetrForSegmentation and the hf_detr model converted from its saved folder."""
    folder = tmp_path_factory.mktemp("reference")
    torch.manual_seed(0)
    # no dropout: the loss test compares training-mode forwards
    no_dropout = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    reference = DetrForSegmentation(DetrConfig(num_labels=5, **SMALL, **no_dropout)).eval()
    randomize_weights(reference)
    reference.save_pretrained(folder)
    return reference, from_transformers(folder).eval(), folder


def box_masks(labels, height: int, width: int, generator: torch.Generator) -> None:
    """Give each target a mask: its box, filled, with a few pixels flipped (so masks are not just boxes)."""
    for target in labels:
        masks = torch.zeros(len(target["boxes"]), height, width)
        for mask, (cx, cy, w, h) in zip(masks, target["boxes"].tolist()):
            x0, x1 = int((cx - w / 2) * width), int((cx + w / 2) * width)
            y0, y1 = int((cy - h / 2) * height), int((cy + h / 2) * height)
            mask[y0:y1, x0:x1] = 1
        flip = torch.rand(masks.shape, generator=generator) < 0.05
        target["masks"] = torch.where(flip, 1 - masks, masks)


def test_inference_parity_on_a_padded_batch(pair):
    reference, ours, _ = pair
    assert isinstance(ours, HfDetrForSegmentation)
    pixel_values, pixel_mask = padded_batch(((192, 256), (160, 128)))
    with torch.no_grad():
        expected = reference(pixel_values=pixel_values, pixel_mask=pixel_mask)
        actual = ours(pixel_values=pixel_values, pixel_mask=pixel_mask)
    for name in ("logits", "pred_boxes", "pred_masks"):
        ours_value, reference_value = getattr(actual, name), getattr(expected, name)
        assert ours_value.shape == reference_value.shape, name
        error = (ours_value - reference_value).abs().max().item()
        print(f"{name}: max abs error {error:.2e}")
        assert error < 1e-4, name
        assert reference_value.std() > 0.05, f"{name} hardly varies: the comparison would prove little"
    assert actual.pred_masks.shape[-2:] == (48, 64)  # stride 4
    assert pixel_mask[1].float().mean() < 1


def test_loss_parity_with_masks(pair):
    """Every loss term, the mask terms included, as transformers computes them. Images of one size: transformers
    counts padding pixels in the mask loss (its TODO), hf_detr leaves them out (next test)."""
    reference, ours, _ = pair
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(2, 3, 128, 160, generator=generator)
    pixel_mask = torch.ones(2, 128, 160, dtype=torch.long)
    labels = random_labels((3, 2), 5, generator)
    box_masks(labels, 128, 160, generator)
    reference.train(), ours.train()
    try:
        expected = reference(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=[dict(t) for t in labels])
        actual = ours(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=[dict(t) for t in labels])
    finally:
        reference.eval(), ours.eval()
    for name in ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice"):
        error = abs(actual.loss_dict[name].item() - expected.loss_dict[name].item())
        print(f"{name}: {actual.loss_dict[name].item():.6f} vs {expected.loss_dict[name].item():.6f}")
        assert error < 1e-4, name
    assert abs(actual.loss.item() - expected.loss.item()) < 1e-4
    assert actual.loss_dict["loss_mask"] > 0.01 and actual.loss_dict["loss_dice"] > 0.1


def test_mask_loss_leaves_padding_out():
    """An image padded into a larger batch has the mask loss it has alone (transformers counts its padding as
    background). Mask logits at the target resolution, so upsampling is the identity and the two must be equal."""
    torch.manual_seed(0)
    config = HfDetrConfig(**TINY)
    generator = torch.Generator().manual_seed(2)
    labels = random_labels((2,), 3, generator)
    box_masks(labels, 64, 96, generator)
    heads = {
        "logits": torch.randn(1, 10, 4, generator=generator),
        "pred_boxes": torch.rand(1, 10, 4, generator=generator),
        "pred_masks": torch.randn(1, 10, 64, 96, generator=generator),
        "pixel_mask": torch.ones(1, 64, 96, dtype=torch.bool),
    }
    criterion = build_criterion(config, masks=True)
    _, alone = criterion(heads, labels)

    # the same image on a canvas twice the size, with confident "object" logits on the padding
    padded_masks = torch.full((1, 10, 128, 192), 5.0)
    padded_masks[:, :, :64, :96] = heads["pred_masks"]
    canvas = torch.zeros(1, 128, 192, dtype=torch.bool)
    canvas[:, :64, :96] = True
    padded_labels = [dict(labels[0], masks=torch.nn.functional.pad(labels[0]["masks"], (0, 96, 0, 64)))]
    padded = dict(heads, pred_masks=padded_masks, pixel_mask=canvas)
    _, in_batch = criterion(padded, padded_labels)
    for name in ("loss_mask", "loss_dice"):
        assert abs(in_batch[name].item() - alone[name].item()) < 1e-6, name
    # counting the padding would change the loss a lot
    _, counted = criterion(dict(padded, pixel_mask=torch.ones_like(canvas)), padded_labels)
    assert counted["loss_mask"] > 2 * alone["loss_mask"]


def test_mask_errors_name_the_field():
    model = HfDetrForSegmentation(HfDetrConfig(**TINY)).train()
    pixel_values = torch.randn(1, 3, 64, 64)
    labels = random_labels((2,), 3)
    with pytest.raises(ValueError, match=r'labels\[0\] has no "masks"'):
        model(pixel_values, labels=labels)
    labels[0]["masks"] = torch.zeros(2, 32, 32)
    with pytest.raises(ValueError, match=r'labels\[0\]\["masks"\] has shape \(2, 32, 32\); expected .* \(2, 64, 64\)'):
        model(pixel_values, labels=labels)


def test_images_without_objects_train():
    model = HfDetrForSegmentation(HfDetrConfig(**TINY)).train()
    labels = [
        {"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 64, 64)}
    ]
    outputs = model(torch.randn(1, 3, 64, 64), labels=labels)
    assert outputs.loss_dict["loss_mask"] == 0 and outputs.loss_dict["loss_dice"] == 0
    outputs.loss.backward()


def test_freeze_detection_trains_only_the_head():
    model = HfDetrForSegmentation(HfDetrConfig(**TINY))
    model.freeze_detection()
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"bbox_attention", "mask_head"}
    labels = random_labels((2,), 3)
    box_masks(labels, 64, 64, torch.Generator().manual_seed(0))
    model.train()
    model(torch.randn(1, 3, 64, 64), labels=labels).loss.backward()
    assert model.mask_head.output_conv.weight.grad is not None
    assert model.class_embed.weight.grad is None


def test_checkpoints_move_between_detection_and_segmentation(tmp_path):
    """The detector's weights have the same names in both models: a detection checkpoint starts a segmentation model
    (only the head new), and a segmentation checkpoint loads as a detector."""
    detector = HfDetrForObjectDetection(HfDetrConfig(**TINY)).eval()
    randomize_weights(detector)
    detector.save_pretrained(tmp_path / "detector")
    segmenter, info = HfDetrForSegmentation.from_pretrained(tmp_path / "detector", output_loading_info=True)
    assert info["missing_keys"] and all(k.startswith(("mask_head.", "bbox_attention.")) for k in info["missing_keys"])
    pixel_values = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(segmenter.eval()(pixel_values).logits, detector(pixel_values).logits)
    segmenter.save_pretrained(tmp_path / "segmenter")
    back = HfDetrForObjectDetection.from_pretrained(tmp_path / "segmenter").eval()
    again = HfDetrForSegmentation.from_pretrained(tmp_path / "segmenter").eval()
    with torch.no_grad():
        assert torch.equal(back(pixel_values).pred_boxes, detector(pixel_values).pred_boxes)
        assert torch.equal(again(pixel_values).pred_masks, segmenter(pixel_values).pred_masks)


def test_transformers_segmentation_folder_loads_with_create_model(pair):
    reference, ours, folder = pair
    loaded = create_model(folder)  # DetrForSegmentation: the panoptic model, as the paper's
    assert type(loaded) is HfDetrForSegmentation and loaded.config.task == "panoptic"
    state = ours.state_dict()
    assert all(torch.equal(value, state[key]) for key, value in loaded.state_dict().items())


def test_auto_class_builds_ours(tmp_path):
    model = HfDetrForSegmentation(HfDetrConfig(**TINY))
    model.save_pretrained(tmp_path)
    assert type(AutoModelForImageSegmentation.from_pretrained(tmp_path)) is HfDetrForSegmentation


def test_image_segmentation_pipeline_runs_the_model(tmp_path, caplog):
    """pipeline("image-segmentation") takes an hf_detr folder (no "not supported" complaint) and gives the image
    processor's post-processing of the model's outputs."""
    from PIL import Image
    from transformers import pipeline

    from hf_detr import HfDetrImageProcessor

    model = HfDetrForSegmentation(HfDetrConfig(**TINY)).eval()
    randomize_weights(model)
    with torch.no_grad():  # confident, varied classes: "no object" never wins, so there are segments to compare
        model.class_embed.weight *= 10
        model.class_embed.bias[-1] = -100
    processor = HfDetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    model.save_pretrained(tmp_path), processor.save_pretrained(tmp_path)
    image = Image.fromarray((torch.rand(64, 80, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())
    with caplog.at_level("WARNING"):
        segmenter = pipeline("image-segmentation", model=str(tmp_path))
    assert "not supported" not in caplog.text
    found = segmenter(image, subtask="panoptic", threshold=0.5)
    with torch.no_grad():
        outputs = model(**processor(images=image, return_tensors="pt"))
    # the pipeline's own default overlap_mask_area_threshold is 0.5, the processor's (DETR's) 0.8
    expected = processor.post_process_panoptic_segmentation(
        outputs, threshold=0.5, overlap_mask_area_threshold=0.5, target_sizes=[(64, 80)]
    )[0]
    assert len(found) == len(expected["segments_info"]) > 1
    for segment, info in zip(found, expected["segments_info"]):
        mask = torch.tensor(list(segment["mask"].getdata())).reshape(64, 80) > 0
        assert torch.equal(mask, expected["segmentation"] == info["id"])
        assert segment["label"] == model.config.id2label[info["label_id"]]

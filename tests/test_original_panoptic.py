"""The original DETR's panoptic model (facebookresearch/detr's `DETRsegm`) converts to an `HfDetrForSegmentation` that
gives the original code's outputs.

The fixture tests/data/original_detr_r50_panoptic_outputs.pt was made with the original code at commit
29901c51d7fe8712168b8d0d64351170bc0f83e0 (the commit of the key list), outside this repository: its model built as
`main.py --masks --dataset_file coco_panoptic --backbone resnet50` builds it (models/detr.py `build()`: 250 classes,
`DETRsegm(detr)`; the torchvision ResNet-50 without the ImageNet download), in eval mode, its state dict set to
`original_weights(original_key_list(KEY_LIST))` (these functions, imported from this file), run under
`torch.no_grad()` on `NestedTensor(pixel_values, pixel_mask == 0)` of `batch()`, and `fixture_outputs` of its
`pred_logits`, `pred_boxes` and `pred_masks` saved with `torch.save` (float32; the queries of `LOGIT_QUERIES` and
`MASK_QUERIES` only, to keep the file small: 87 KB).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from helpers import original_key_list, padded_batch
from hf_detr.hub.convert import from_original, to_original
from hf_detr.modeling.modeling_hf_detr import HfDetrForSegmentation

KEY_LIST = "original_detr_r50_panoptic_keys.txt"
OUTPUTS = Path(__file__).parent / "data" / "original_detr_r50_panoptic_outputs.pt"
NUM_LABELS = 250  # the original's num_classes for coco_panoptic ("large enough", not a label count)
LOGIT_QUERIES = slice(None, None, 4)  # of the 100 queries; boxes are kept for all of them
MASK_QUERIES = slice(None, None, 20)
TOLERANCE = 1e-4  # max abs error; the outputs are O(1) (class and mask logits) and O(0.1) (boxes)
# the original's norm layers: LayerNorm (norm*), backbone BatchNorm (bn*, downsample.1), mask head GroupNorm (gn*)
_NORM_WEIGHT = re.compile(r"\.(norm\d?|bn\d|gn\d|downsample\.1)\.weight$")
# gains on the N(0, 1/fan_in) draws, chosen by measuring the original model, so that the outputs depend on every part
# as a trained model's do: without them the 100 queries give the same boxes and masks to 1e-4 and the memory is the
# same at every position to 4%, so a conversion that swapped queries or misplaced the padding would still pass
_GAINS = (
    (re.compile(r"query_embed\.weight$"), 16.0),  # N(0, 1), the original's nn.Embedding init: distinct queries
    # each residual branch would add as much position-independent signal (ReLU means, biases) as the layer keeps
    (re.compile(r"\.(out_proj|linear2)\.weight$"), 0.3),
    (re.compile(r"\.multihead_attn\.in_proj_weight$"), 3.0),  # sharp cross-attention: queries read different places
    (re.compile(r"^bbox_attention\."), 3.0),  # sharp attention maps, which the masks are made from
)
ATTENTION_MAP_GAIN = 30.0  # mask_head.lay1's weights on its attention-map inputs (the masks' only per-query input)


def original_weights(keys: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Deterministic values for every key of the original DETRsegm state dict, drawn in the key list's order from one
    seeded generator. Matrices and kernels ~ N(0, 1/fan_in) times `_GAINS`, norm scales ~ 1 + N(0, 0.1^2),
    BatchNorm variances in [0.5, 1.5), biases and means ~ N(0, 0.1^2). Through the whole ResNet-50 the activations
    keep a std between 0.9 and 2; the class logits and the mask logits have a std of about 1 and 0.5."""
    generator = torch.Generator().manual_seed(0)
    weights = {}
    for key, shape in keys.items():
        if key.endswith("running_var"):
            weights[key] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) > 1:
            gain = next((gain for pattern, gain in _GAINS if pattern.search(key)), 1.0)
            weights[key] = torch.randn(shape, generator=generator) * gain / torch.Size(shape[1:]).numel() ** 0.5
        elif _NORM_WEIGHT.search(key):
            weights[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
        else:
            weights[key] = 0.1 * torch.randn(shape, generator=generator)
    # the first mask convolution reads the projected features (d_model channels), then the heads' attention maps
    d_model = keys["detr.query_embed.weight"][1]
    weights["mask_head.lay1.weight"][:, d_model:] *= ATTENTION_MAP_GAIN
    return weights


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two images, 96x128 and 64x96 (padded to 96x128): `pixel_values [2, 3, 96, 128]`, `pixel_mask [2, 96, 128]`
    (1 on real pixels; the original's NestedTensor mask is its negation)."""
    return padded_batch(sizes=((96, 128), (64, 96)), generator=torch.Generator().manual_seed(1))


def fixture_outputs(
    logits: torch.Tensor, pred_boxes: torch.Tensor, pred_masks: torch.Tensor
) -> dict[str, torch.Tensor]:
    """What the fixture keeps of `logits [2, 100, 251]`, `pred_boxes [2, 100, 4]`, `pred_masks [2, 100, 24, 32]`
    (copies, so that `torch.save` does not write the whole tensors the slices view)."""
    return {
        "logits": logits[:, LOGIT_QUERIES].clone(),
        "pred_boxes": pred_boxes.clone(),
        "pred_masks": pred_masks[:, MASK_QUERIES].clone(),
    }


def test_panoptic_key_set_converts_exactly():
    """Every key and shape of the original DETRsegm converts (no missing or unexpected key), into an
    HfDetrForSegmentation with the original's 250 classes, and writing it back gives exactly the original key set.
    Shapes only, on the meta device."""
    original_keys = original_key_list(KEY_LIST)
    with torch.device("meta"):
        model = from_original({k: torch.empty(shape) for k, shape in original_keys.items()}, "resnet50")
    assert isinstance(model, HfDetrForSegmentation)
    assert model.config.num_labels == NUM_LABELS
    assert (model.config.num_queries, model.config.d_model, model.config.encoder_layers) == (100, 256, 6)
    assert {k: tuple(v.shape) for k, v in to_original(model).items()} == original_keys


def test_converted_panoptic_model_gives_the_original_outputs():
    """The converted model, on the same weights and padded batch, gives the original code's class logits, boxes and
    mask logits; and written back it gives the original state dict, value for value."""
    original = original_weights(original_key_list(KEY_LIST))
    model = from_original(original, "resnet50")
    pixel_values, pixel_mask = batch()
    with torch.no_grad():
        outputs = model(pixel_values, pixel_mask)
    actual = fixture_outputs(outputs.logits, outputs.pred_boxes, outputs.pred_masks)
    expected = torch.load(OUTPUTS, weights_only=True)
    assert expected.keys() == actual.keys()
    for name, reference in expected.items():
        assert actual[name].shape == reference.shape, name
        error = (actual[name] - reference).abs().max().item()
        print(f"{name}: max abs error {error:.2e} (reference std {reference.std().item():.3f})")
        assert error < TOLERANCE, f"{name}: max abs error {error:.2e}"
        # the queries' outputs differ by far more than the tolerance: a model that mixed queries up would fail
        assert (reference - reference.mean(dim=1, keepdim=True)).abs().max() > 50 * TOLERANCE, name
    written_back = to_original(model)
    assert written_back.keys() == original.keys()
    assert all(torch.equal(written_back[k], v) for k, v in original.items())

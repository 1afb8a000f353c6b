"""The shared box check and the normalize / denormalize pair (hf_detr.modeling.boxes)."""

import numpy as np
import pytest
import torch
from torchvision.ops import box_convert

from hf_detr.modeling.boxes import check_boxes, denormalize_boxes, normalize_boxes

# --- check_boxes ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "boxes",
    [
        [[1, 2, 3, 4], [0, 0, 0, 0]],
        np.array([[1, 2, 3, 4], [0, 0, 0, 0]], np.float32),
        torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]], dtype=torch.int32),
        [torch.tensor([1, 2, 3, 4]), (0, 0, 0, 0)],
    ],
    ids=["list", "numpy", "tensor", "list of tensors"],
)
def test_valid_boxes_come_back_as_float64(boxes):
    checked = check_boxes(boxes, "boxes")
    assert checked.dtype == torch.float64 and checked.device.type == "cpu"
    assert checked.tolist() == [[1, 2, 3, 4], [0, 0, 0, 0]]


@pytest.mark.parametrize("empty", [[], (), np.zeros((0, 4)), torch.zeros(0), torch.zeros(0, 4, dtype=torch.float16)])
def test_empty_input_is_zero_boxes(empty):
    checked = check_boxes(empty, "boxes", "xyxy", positive=True, within=(10, 10))
    assert checked.shape == (0, 4) and checked.dtype == torch.float64


def test_float64_tensor_is_not_copied():
    boxes = torch.rand(3, 4, dtype=torch.float64)
    assert check_boxes(boxes, "boxes").data_ptr() == boxes.data_ptr()


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([[1, 2, 3]], r"^b\[0\] = \[1, 2, 3\] is not 4 numbers; boxes are \[x, y, w, h\] in pixels"),
        ([[1, 2, 3, 4], [1, 2]], r"^b\[1\] = \[1, 2\] is not 4 numbers"),  # ragged: the first bad entry
        ([[1, 2, 3, 4], None], r"^b\[1\] = None is not 4 numbers"),
        ([[1, 2, 3, 4], ["a", 2, 3, 4]], r"^b\[1\] = \['a', 2, 3, 4\] is not 4 numbers"),
        ([1, 2, 3, 4], r"^b\[0\] = 1 is not 4 numbers"),  # one flat box is not [n, 4]
        (torch.zeros(2, 5), r"^b\[0\] = \[0.0, 0.0, 0.0, 0.0, 0.0\] is not 4 numbers"),
        (torch.zeros(3, 0), r"^b\[0\] = \[\] is not 4 numbers"),
        (None, r"expected \[n, 4\] boxes at b\[0\], got None"),
        ([[1, 2, 3, 4], [1, float("nan"), 3, 4]], r"^b\[1\] = \[1.0, nan, 3.0, 4.0\] is NaN or infinite"),
        (torch.tensor([[1, 2, float("inf"), 4]]), r"^b\[0\] = .* is NaN or infinite"),
        (
            [[1, 2, 3, 4], [0, 0, 5, 6], [1, 1, 2, -1]],
            r"^b\[2\] = .* has a negative width or height; boxes are "
            r"\[x, y, w, h\] in pixels, not corners \[x0, y0, x1, y1\]",
        ),
    ],
)
def test_bad_boxes_name_the_box_and_the_problem(boxes, message):
    with pytest.raises(ValueError, match=message):
        check_boxes(boxes, "b")


def test_negative_size_is_spelled_out_for_each_format():
    with pytest.raises(
        ValueError,
        match=r"^b\[0\] = \[5.0, 1.0, 3.0, 4.0\] has a negative width or height; boxes "
        r"are corners \[x0, y0, x1, y1\]",
    ):
        check_boxes([[5, 1, 3, 4]], "b", "xyxy")
    with pytest.raises(ValueError, match=r"negative width or height; boxes are \[center_x, center_y, w, h\] normali"):
        check_boxes([[0.5, 0.5, 0.1, -0.1]], "b", "cxcywh")
    # zero size is fine unless positive=True
    check_boxes([[1, 1, 1, 4]], "b", "xyxy")


@pytest.mark.parametrize("fmt, box", [("xywh", [1, 2, 0, 4]), ("xyxy", [1, 2, 3, 2]), ("cxcywh", [0.5, 0.5, 0.2, 0])])
def test_positive_rejects_zero_width_or_height(fmt, box):
    check_boxes([box], "b", fmt)
    with pytest.raises(ValueError, match=r"^b\[1\] = .* has width or height <= 0; .*with width and height > 0"):
        check_boxes([[*box[:2], 1, 1] if fmt != "xyxy" else [0, 0, 1, 1], box], lambda j: f"b[{j}]", fmt, positive=True)


def test_callable_name():
    name = lambda j: f'annotations[0]["annotations"][{j}]["bbox"]'  # noqa: E731
    with pytest.raises(ValueError, match=r'^annotations\[0\]\["annotations"\]\[1\]\["bbox"\] = .* NaN'):
        check_boxes([[0, 0, 1, 1], [0, float("nan"), 1, 1]], name)


@pytest.mark.parametrize(
    ("fmt", "inside", "outside"),
    [
        ("xywh", [0, 0, 40, 30], [30, 2, 12, 6]),  # x + w = 42 > 40
        ("xyxy", [0, 0, 40, 30], [0, -2, 10, 10]),
        ("cxcywh", [20, 15, 40, 30], [38, 15, 6, 2]),  # x1 = 41 > 40
    ],
)
def test_within_checks_the_extent(fmt, inside, outside):
    check_boxes([inside], "b", fmt, within=(40, 30))
    with pytest.raises(ValueError, match=r"^b\[1\] = .* lies outside \[0, 40\] x \[0, 30\]; fix the box, or check"):
        check_boxes([inside, outside], "b", fmt, within=(40, 30))


def test_within_tolerance_and_per_box_sizes():
    box = [[30, 2, 11, 6]]  # reaches 1 px past a 40 px wide image
    check_boxes(box, "b", within=(40, 30), tolerance=1.0)
    with pytest.raises(ValueError, match=r"lies outside \[0, 40\] x \[0, 30\] by more than the tolerance 0.5"):
        check_boxes(box, "b", within=(40, 30), tolerance=0.5)
    # one (width, height) per box: the message gives that box's image
    with pytest.raises(ValueError, match=r"^b\[1\] = .* lies outside \[0, 20\] x \[0, 10\]"):
        check_boxes([[30, 2, 10, 6], [15, 2, 10, 6]], "b", within=[(40, 30), (20, 10)])


def test_normalized_extent_not_each_number():
    # every number is in [0, 1] but the box reaches x = -0.1; the loss must reject it
    with pytest.raises(ValueError, match=r"lies outside \[0, 1\] x \[0, 1\]"):
        check_boxes(torch.tensor([[0.1, 0.5, 0.4, 0.2]]), "b", "cxcywh", within=(1, 1), tolerance=1e-5)
    # a box touching the edge, up to float32 rounding, is fine
    edge = torch.tensor([[0.9, 0.5, 0.2, 0.2]], dtype=torch.float32)
    check_boxes(edge, "b", "cxcywh", within=(1, 1), tolerance=1e-5)


def test_problems_are_reported_in_order_nan_negative_positive_outside():
    boxes = [[50, 0, 1, 1], [0, 0, 0, 1], [0, 0, -1, 1], [0, float("inf"), 1, 1]]
    for expected in ("b\\[3\\] .*NaN", "b\\[2\\] .*negative", "b\\[1\\] .*<= 0", "b\\[0\\] .*outside"):
        with pytest.raises(ValueError, match=expected):
            check_boxes(boxes, "b", positive=True, within=(10, 10))
        boxes = boxes[:-1]


def test_unknown_format():
    with pytest.raises(ValueError, match="fmt must be one of"):
        check_boxes([[0, 0, 1, 1]], "b", "xywhr")


# --- normalize_boxes / denormalize_boxes ----------------------------------------------------------------------------


def _pixel_boxes(n, height, width, generator, dtype=torch.float64):
    corners = torch.rand(n, 2, 2, generator=generator, dtype=dtype).sort(dim=1).values * torch.tensor(
        [width, height], dtype=dtype
    )
    return corners.flatten(1)  # xyxy


@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "cxcywh"])
def test_round_trip(fmt):
    generator = torch.Generator().manual_seed(0)
    xyxy = _pixel_boxes(7, 300, 400, generator)
    boxes = box_convert(xyxy, "xyxy", fmt)
    normalized = normalize_boxes(boxes, fmt, (300, 400))
    assert normalized.dtype == torch.float64 and normalized.shape == (7, 4)
    assert (normalized >= 0).all() and (normalized <= 1).all()
    torch.testing.assert_close(normalized, box_convert(xyxy, "xyxy", "cxcywh") / torch.tensor([400, 300, 400, 300]))
    torch.testing.assert_close(denormalize_boxes(normalized, fmt, (300, 400)), boxes)


def test_height_width_order():
    # a box covering the right half of a 100 (h) x 200 (w) image
    normalized = normalize_boxes(torch.tensor([[100.0, 0.0, 200.0, 100.0]]), "xyxy", (100, 200))
    assert normalized.tolist() == [[0.75, 0.5, 0.5, 1.0]]
    assert denormalize_boxes(normalized, "xywh", torch.tensor([100, 200])).tolist() == [[100.0, 0.0, 100.0, 100.0]]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "cxcywh"])
def test_batched_sizes(batch, fmt):
    generator = torch.Generator().manual_seed(batch)
    sizes = torch.tensor([[300, 400], [50, 30], [640, 480]][:batch])
    normalized = torch.rand(batch, 5, 4, generator=generator)
    pixels = denormalize_boxes(normalized, fmt, sizes)
    assert pixels.shape == (batch, 5, 4) and pixels.dtype == torch.float32  # float32 outputs stay float32
    for image in range(batch):
        torch.testing.assert_close(pixels[image], denormalize_boxes(normalized[image], fmt, sizes[image].tolist()))
    torch.testing.assert_close(normalize_boxes(pixels, fmt, sizes), normalized)


def test_denormalize_matches_post_processing_bit_for_bit():
    generator = torch.Generator().manual_seed(0)
    pred_boxes = torch.rand(2, 6, 4, generator=generator)
    sizes = torch.tensor([[480.0, 640.0], [300.0, 200.0]])
    heights, widths = sizes.unbind(1)
    expected = box_convert(pred_boxes, "cxcywh", "xyxy") * torch.stack([widths, heights, widths, heights], 1)[:, None]
    assert torch.equal(denormalize_boxes(pred_boxes, "xyxy", sizes), expected)


def test_empty_and_integer_boxes():
    assert normalize_boxes(torch.zeros(0, 4, dtype=torch.float64), "xyxy", (10, 20)).shape == (0, 4)
    assert denormalize_boxes(torch.zeros(2, 0, 4), "xyxy", torch.tensor([[10, 20], [5, 5]])).shape == (2, 0, 4)
    integer = normalize_boxes(torch.tensor([[0, 0, 10, 20]]), "xyxy", (20, 10))
    assert integer.dtype == torch.get_default_dtype() and integer.tolist() == [[0.5, 0.5, 1.0, 1.0]]


@pytest.mark.parametrize(
    ("boxes", "size"),
    [(torch.zeros(3, 4), torch.zeros(2, 2)), (torch.zeros(2, 3, 4), torch.zeros(3, 2)), (torch.zeros(3, 4), (1, 2, 3))],
)
def test_bad_sizes(boxes, size):
    with pytest.raises(ValueError, match=r"size must be \(height, width\)"):
        denormalize_boxes(boxes, "xyxy", size)

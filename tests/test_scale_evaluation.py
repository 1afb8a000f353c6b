"""benchmarks/scale_evaluation.py at a tiny size: it measures in a fresh process and its metrics are real (the
ground truth as detections scores 1, noisy detections less). The speed targets live in the benchmark, not here."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from helpers import ROOT

if str(ROOT) not in sys.path:  # the benchmarks package, also under a bare `pytest`
    sys.path.insert(0, str(ROOT))

from benchmarks.scale_evaluation import _scene, measure_evaluation  # noqa: E402

HEADLINE = {"boxes": "map", "masks": "segm_map", "panoptic": "pq"}


def _check(result: dict) -> None:
    assert result["seconds"] > 0 and result["peak_rss_mib"] > 0
    assert 0 <= result["over_baseline_mib"] < result["peak_rss_mib"]


def test_measure_evaluation_gives_positive_numbers_and_real_metrics():
    result = measure_evaluation(20, 10, "boxes", perfect=True)
    _check(result)
    assert result["metrics"]["map"] == result["metrics"]["mar_100"] == 1.0


@pytest.mark.slow  # two fresh processes, each importing hf_detr
# boxes on both backends and masks on pycocotools run in tests/test_bench_scale.py and tests/test_coco_arrays.py
@pytest.mark.parametrize(("kind", "backend"), [("masks", "numpy"), ("panoptic", "pycocotools")])
def test_measure_evaluation_of_each_kind(kind, backend):
    perfect = measure_evaluation(20, 10, kind, backend=backend, perfect=True)
    noisy = measure_evaluation(20, 10, kind, backend=backend)
    _check(perfect)
    _check(noisy)
    assert perfect["metrics"][HEADLINE[kind]] == 1.0
    assert 0.0 < noisy["metrics"][HEADLINE[kind]] < 1.0


def test_the_generated_data_is_seeded_and_measure_evaluation_checks_its_arguments():
    first, second = (_scene(np.random.default_rng(3), 10, False) for _ in range(2))
    assert all(np.array_equal(first[key], second[key]) for key in first)
    with pytest.raises(ValueError, match="kind must be one of"):
        measure_evaluation(20, 10, "keypoints")
    with pytest.raises(ValueError, match="at least 1"):
        measure_evaluation(0, 10, "boxes")

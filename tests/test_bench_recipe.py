"""The same-budget training benchmark (`python -m benchmarks.bench_recipe`) trains both models on the same batches."""

from __future__ import annotations

import pytest

from helpers import ROOT, load_script
from hf_detr.evaluation import coco_evaluate

bench_recipe = load_script(ROOT / "benchmarks" / "bench_recipe.py")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_recipe_trains_both_models_on_the_same_batches(capsys):
    results = bench_recipe.main(["--time_budget", "3", "--num_train", "32", "--num_test", "8", "--threads", "1"])
    reference, ours = results["transformers DETR"], results["hf_detr demo recipe"]
    for row in (reference, ours):
        assert row["steps"] >= 1 and row["train_seconds"] >= 3
        assert len(row["batches"]) == row["steps"]
    # the comparison is fair: the same images in the same order, step for step, as far as the shorter run went
    shared = min(reference["steps"], ours["steps"])
    assert reference["batches"][:shared] == ours["batches"][:shared]
    batch_size = bench_recipe.DEMO.training["per_device_train_batch_size"]
    assert all(len(batch) == batch_size for batch in reference["batches"] + ours["batches"])
    assert f"AP50 {ours['map_50']:.3f} vs {reference['map_50']:.3f}" in capsys.readouterr().out


def test_recall_and_duplicates_counts_found_and_duplicated_objects_per_threshold():
    """Object A has boxes scoring 0.9 and 0.6, object B one scoring 0.4 (all of the right class, IoU 1 with their
    object): recall and duplicated objects at each threshold, counted by hand."""
    reference = {"boxes": [[10, 10, 20, 20], [60, 60, 20, 20]], "labels": [1, 1]}
    prediction = {
        "scores": [0.9, 0.6, 0.4],
        "labels": [1, 1, 1],
        "boxes": [[10, 10, 30, 30], [10, 10, 30, 30], [60, 60, 80, 80]],
    }
    evaluation = coco_evaluate([prediction], [reference], return_evaluation=True)
    curve = {
        threshold: (recall, duplicated)
        for threshold, recall, duplicated in bench_recipe.recall_and_duplicates(evaluation)
    }
    assert curve[0.2] == curve[0.3] == (1.0, 0.5)
    assert curve[0.4] == (1.0, 0.5)  # a score equal to the threshold counts
    assert curve[0.5] == curve[0.6] == (0.5, 0.5)
    assert curve[0.7] == curve[0.8] == (0.5, 0.0)

"""The same-budget training benchmark (`python -m benchmarks.bench_recipe`) trains both models on the same batches."""

from __future__ import annotations

import pytest

from helpers import ROOT, load_script

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

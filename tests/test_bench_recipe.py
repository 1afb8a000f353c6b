"""The same-budget training benchmark runs as documented (`python -m benchmarks.bench_recipe`) and reports both sides."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_recipe_trains_both_models_on_the_same_data():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_recipe", "--time_budget", "3", "--num_train", "32", "--num_test", "8",
         "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = dict(line.split(": ", 1) for line in result.stdout.splitlines() if line.startswith(" "))
    reference, ours = json.loads(rows["   transformers DETR"]), json.loads(rows[" hf_detr demo recipe"])
    for row in (reference, ours):
        assert row["steps"] >= 1 and 0 <= row["map_50"] <= 1 and row["train_seconds"] >= 3
    assert f"AP50 {ours['map_50']:.3f} vs {reference['map_50']:.3f}" in result.stdout

"""One evaluation path: `hf-detr evaluate`, the demo, the training loop and `Trainer` (one process, and two with an
uneven last batch) give the same COCO numbers for the same model and split."""

from __future__ import annotations

import datasets
import pytest
import torch

from helpers import trainer_evaluate, trainer_evaluate_on_two_processes
from hf_detr import HfDetrForObjectDetection, HfDetrImageProcessor, create_model, presets
from hf_detr.apps.cli import main as cli_main
from hf_detr.data.synthetic import ID2LABEL, make_synthetic_dataset
from hf_detr.evaluation import COCO_STAT_NAMES, evaluate, evaluation_loader
from hf_detr.training import TrainConfig, parameter_groups, train

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_IMAGES, BATCH_SIZE = 7, 3  # on 2 processes: 3 + 3 images, then 1 real image and duplicates accelerate drops


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict:
    """A model that finds some of the objects (the demo recipe overfitted for a few steps on the split), its
    processor, the split, and the numbers `evaluate` gives."""
    root = tmp_path_factory.mktemp("scene")
    processor = HfDetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 107})
    split = make_synthetic_dataset(0, NUM_IMAGES, 0, image_size=64, seed=5)["validation"]
    torch.manual_seed(0)
    model = create_model("demo", id2label=ID2LABEL)
    batch = next(iter(evaluation_loader(split, processor, ID2LABEL, batch_size=NUM_IMAGES)))
    optimizer = torch.optim.AdamW(parameter_groups(model, 1.2e-3, 6e-3))
    for _ in range(25):
        optimizer.zero_grad()
        model(batch["pixel_values"], batch["pixel_mask"], labels=batch["labels"]).loss.backward()
        optimizer.step()
    model = model.to_plain_detr().eval()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    datasets.DatasetDict({"validation": split}).save_to_disk(str(root / "data"))
    reference = evaluate(model, processor, split, batch_size=BATCH_SIZE)
    # some boxes found and some missed: a path that lost or duplicated boxes would change the numbers
    assert 0.05 < reference["mar_100"] < 0.95 and reference["map"] > 0.05
    return {"root": root, "model": model, "processor": processor, "split": split, "reference": reference}


def _coco(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {name: metrics[prefix + name] for name in COCO_STAT_NAMES}


def test_hf_detr_evaluate_gives_the_evaluate_numbers(scene, capsys):
    folder, data = scene["root"] / "model", scene["root"] / "data"
    assert cli_main(["evaluate", str(folder), "--dataset", str(data), "--per_device_eval_batch_size", "2"]) == 0
    table = {line.split()[0]: float(line.split()[1]) for line in capsys.readouterr().out.splitlines()[2:14]}
    assert table == _coco(scene["reference"])


def test_the_training_loop_evaluation_gives_the_evaluate_numbers(scene, tmp_path):
    split = scene["split"]
    config = TrainConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        learning_rate=1e-12,
        backbone_learning_rate=1e-12,
        weight_decay=0.0,
        augment="none",
        per_device_train_batch_size=2,
        per_device_eval_batch_size=BATCH_SIZE,
        cpu=True,
        save_steps=0,
        report_to="none",
        disable_tqdm=True,
    )
    start = HfDetrForObjectDetection.from_pretrained(scene["root"] / "model")
    result = train(config, datasets.DatasetDict({"train": split, "validation": split}), start, scene["processor"])
    assert _coco(result.metrics) == _coco(scene["reference"])


def test_the_demo_reports_what_evaluate_gives_for_its_saved_model(tmp_path):
    from hf_detr.apps.demo import run_demo

    metrics = run_demo(tmp_path, time_budget=2, num_train=8, num_validation=0, num_test=NUM_IMAGES, show=2)
    saved = HfDetrForObjectDetection.from_pretrained(tmp_path / "model")
    processor = HfDetrImageProcessor.from_pretrained(tmp_path / "model")
    test = make_synthetic_dataset(0, 0, NUM_IMAGES, image_size=presets.get("demo").image_size, seed=0)["test"]
    assert _coco(metrics) == _coco(evaluate(saved, processor, test, batch_size=3))


def test_trainer_gives_the_evaluate_numbers(scene, tmp_path):
    metrics = trainer_evaluate(scene["root"] / "model", scene["root"] / "data", tmp_path, BATCH_SIZE)
    assert _coco(metrics, "eval_") == _coco(scene["reference"])


def test_trainer_on_two_processes_with_an_uneven_last_batch_gives_the_evaluate_numbers(scene, tmp_path):
    results = trainer_evaluate_on_two_processes(scene["root"], tmp_path, BATCH_SIZE)
    for metrics in results:
        assert _coco(metrics, "eval_") == _coco(scene["reference"])

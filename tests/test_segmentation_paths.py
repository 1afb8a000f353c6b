"""The one evaluation path, for masks: `hf-detr evaluate`, `Trainer` (one process, and two with an uneven last batch)
and `evaluate` on two accelerate processes give `evaluate`'s mask mAP and panoptic quality for the same segmentation
model and split; the Trainer example fine-tunes a segmentation model and reports them."""

from __future__ import annotations

import datasets
import pytest
import torch

from helpers import EXAMPLE, launch_two_processes, load_script, trainer_evaluate, trainer_evaluate_on_two_processes
from hf_detr import HfDetrForSegmentation, HfDetrImageProcessor, create_model
from hf_detr.apps.cli import main as cli_main
from hf_detr.data.sources import load_data
from hf_detr.data.synthetic import ID2LABEL
from hf_detr.evaluation import COCO_STAT_NAMES, evaluate, evaluation_loader
from hf_detr.training import parameter_groups

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_IMAGES, BATCH_SIZE = 7, 3  # on 2 processes: 3 + 3 images, then 1 real image and duplicates accelerate drops
MASK_METRICS = [f"segm_{name}" for name in COCO_STAT_NAMES] + ["pq", "sq", "rq"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict:
    """A segmentation model that finds some objects and masks (the demo's two phases overfitted for a few steps on
    the split: the detector, then the mask head on it), its processor, the split, and the numbers `evaluate` gives."""
    root = tmp_path_factory.mktemp("segmentation_scene")
    processor = HfDetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 107})
    split = load_data(
        "synthetic",
        ["validation"],
        synthetic_sizes={"validation": NUM_IMAGES},
        synthetic_image_size=64,
        seed=5,
        masks=True,
    )["validation"]
    batch = next(iter(evaluation_loader(split, processor, ID2LABEL, batch_size=NUM_IMAGES)))
    torch.manual_seed(0)
    detector = create_model("demo", id2label=ID2LABEL)
    boxes_only = [{name: value for name, value in target.items() if name != "masks"} for target in batch["labels"]]
    _overfit(detector, parameter_groups(detector, 1.2e-3, 6e-3), batch, boxes_only, steps=25)
    detector = detector.to_plain_detr()
    model = HfDetrForSegmentation(detector.config)
    model.load_state_dict(detector.state_dict(), strict=False)  # the detector's weights; the mask head is new
    model.freeze_detection()
    _overfit(model, [p for p in model.parameters() if p.requires_grad], batch, batch["labels"], steps=60)
    model.eval().save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    datasets.DatasetDict({"validation": split}).save_to_disk(str(root / "data"))
    reference = evaluate(model, processor, split, batch_size=BATCH_SIZE)
    # neither nothing nor everything right: a path that lost, duplicated or mis-cropped masks would change them
    assert 0.0 < reference["segm_map_50"] < 1.0 and 0.0 < reference["pq"] < 1.0
    return {"root": root, "model": model, "processor": processor, "split": split, "reference": reference}


def _overfit(model: torch.nn.Module, parameters: list, batch: dict, labels: list[dict], steps: int) -> None:
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        model(batch["pixel_values"], batch["pixel_mask"], labels=labels).loss.backward()
        optimizer.step()


def _masks(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {name: metrics[prefix + name] for name in MASK_METRICS}


def test_hf_detr_evaluate_prints_the_evaluate_mask_numbers(scene, capsys):
    folder, data = scene["root"] / "model", scene["root"] / "data"
    assert cli_main(["evaluate", str(folder), "--dataset", str(data), "--per_device_eval_batch_size", "2"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    table = {row[0]: float(row[1]) for row in rows if len(row) > 1 and row[0] in MASK_METRICS}
    assert table == pytest.approx(_masks(scene["reference"]), abs=5e-5)  # printed to 4 decimals


def test_trainer_gives_the_evaluate_mask_numbers(scene, tmp_path):
    metrics = trainer_evaluate(scene["root"] / "model", scene["root"] / "data", tmp_path, BATCH_SIZE)
    assert _masks(metrics, "eval_") == _masks(scene["reference"])
    assert metrics["eval_map"] == scene["reference"]["map"]  # and the boxes still score as before


def test_trainer_on_two_processes_with_an_uneven_last_batch_gives_the_evaluate_mask_numbers(scene, tmp_path):
    results = trainer_evaluate_on_two_processes(scene["root"], tmp_path, BATCH_SIZE)
    for metrics in results:
        assert _masks(metrics, "eval_") == _masks(scene["reference"])


def test_evaluate_on_two_accelerate_processes_gives_the_one_process_mask_numbers(scene, tmp_path):
    """The training loop's evaluation: each process scores its share, the RLEs are gathered, every image once."""
    results = launch_two_processes(
        f"""
        import datasets
        from accelerate import Accelerator
        from helpers import report_metrics
        from hf_detr import HfDetrForSegmentation, HfDetrImageProcessor
        from hf_detr.evaluation import evaluate, evaluation_loader
        accelerator = Accelerator(cpu=True)
        root = {str(scene["root"])!r}
        model = HfDetrForSegmentation.from_pretrained(root + "/model").eval()
        processor = HfDetrImageProcessor.from_pretrained(root + "/model")
        split = datasets.load_from_disk(root + "/data")["validation"]
        loader = evaluation_loader(split, processor, model.config.id2label, {BATCH_SIZE}, mask_references=True)
        model, loader = accelerator.prepare(model, loader)
        metrics = evaluate(model, processor, loader, accelerator=accelerator)
        report_metrics(metrics)
    """,
        tmp_path,
    )
    for metrics in results:
        assert metrics == scene["reference"]


def test_trainer_without_mask_references_says_how_to_evaluate_masks(scene, tmp_path):
    with pytest.raises(ValueError, match=r"evaluation_collator\(processor, mask_references=True\)"):
        trainer_evaluate(scene["root"] / "model", scene["root"] / "data", tmp_path, BATCH_SIZE, mask_references=False)


def test_the_trainer_example_fine_tunes_a_segmentation_model(scene, tmp_path):
    """`--task instance` from the scene's model: masks in training (the loss has its mask terms) and in the
    evaluation, whose numbers are `evaluate`'s for the saved model."""
    example = load_script(EXAMPLE)
    output_dir = tmp_path / "out"
    metrics = example.main(
        [
            "--model_name_or_path",
            str(scene["root"] / "model"),
            "--task",
            "instance",
            "--output_dir",
            str(output_dir),
            "--dataset",
            str(scene["root"] / "data"),
            "--train_split",
            "validation",
            "--eval_split",
            "validation",
            "--image_size",
            "64",
            "--max_size",
            "107",
            "--augment",
            "flip",
            "--do_train",
            "--do_eval",
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--per_device_eval_batch_size",
            "3",
            "--learning_rate",
            "1e-3",
            "--logging_steps",
            "1",
            "--use_cpu",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
        ]
    )
    saved = HfDetrForSegmentation.from_pretrained(output_dir)
    assert saved.config.architectures == ["HfDetrForSegmentation"]
    start = scene["model"].state_dict()
    assert any(
        not torch.equal(value, start[name])
        for name, value in saved.state_dict().items()
        if name.startswith("mask_head.")
    )
    expected = evaluate(saved, HfDetrImageProcessor.from_pretrained(output_dir), scene["split"], batch_size=3)
    assert _masks(metrics, "eval_") == _masks(expected)


def test_the_trainer_example_checks_its_segmentation_options(scene, tmp_path):
    example = load_script(EXAMPLE)
    with pytest.raises(ValueError, match="--freeze_detection trains a segmentation head"):
        example.main(
            [
                "--model_name_or_path",
                str(scene["root"] / "model"),
                "--task",  # the segmentation model's detector: nothing for --freeze_detection to train
                "detection",
                "--freeze_detection",
                "--output_dir",
                str(tmp_path),
                "--dataset",
                "synthetic",
                "--use_cpu",
            ]
        )

"""`hf-detr demo` / `make demo`: generate the synthetic shapes data, train a small DETR within a time budget on the
CPU, evaluate COCO mAP on the test split, and write the model folder, metrics and pictures.

The recipe (`DEMO_MODEL`, `DEMO_TRAINING`; measurements in docs/RECIPE.md) is for small compute, where steps are
worth more than capacity: a ResNet-18 trained from scratch (trainable BatchNorm and stem: with no ImageNet weights,
frozen BatchNorm would leave the residual branches that timm initializes to zero dead) cut at layer2 (a stride-8
map for 128-pixel images), no encoder layers (the decoder reads the projected features), horizontal flips as the
only augmentation, and two training-only signals: an H-DETR one-to-many query group and a dense head on the
projected features, which let much higher learning rates pay off. The saved model is plain DETR
(`to_plain_detr()`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import Accelerator

from .collate import DetectionCollator, DetectionDataset
from .configuration_hf_detr import HfDetrConfig
from .data import id2label as dataset_id2label
from .data import load_detection_dataset
from .image_processing_hf_detr import HfDetrImageProcessor
from .modeling_hf_detr import HfDetrForObjectDetection
from .synthetic import make_synthetic_dataset
from .train import TrainConfig, evaluate, scaled_detr_transforms, train
from .visualize import draw_detections, save_curves, save_grid

IMAGE_SIZE = 128

DEMO_MODEL: dict[str, Any] = dict(
    backbone="resnet18",
    # stride 8 (layer2: a 16x16 map for 128-pixel images); residual blocks start as in torchvision, not as identities:
    # from scratch with AdamW, timm's zero-initialized last BatchNorm scales need hundreds of steps to open
    backbone_kwargs={"out_indices": (2,), "zero_init_last": False},
    freeze_backbone_batchnorm=False,  # no ImageNet weights here: BatchNorm and stem train from scratch
    freeze_backbone_stem=False,
    d_model=128,
    encoder_layers=0,  # no encoder: its steps were worth more than its layers at this budget (docs/RECIPE.md)
    decoder_layers=3,
    encoder_attention_heads=8,
    decoder_attention_heads=8,
    encoder_ffn_dim=512,
    decoder_ffn_dim=512,
    num_queries=20,
    num_query_groups=2,  # the second group only trains, matched one-to-many (H-DETR)
    one_to_many_repeats=3,
    encoder_loss_coefficient=4.0,  # training-only dense head on the encoder tokens
    auxiliary_loss=True,
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
)

DEMO_TRAINING: dict[str, Any] = dict(
    per_device_train_batch_size=16,
    per_device_eval_batch_size=50,
    learning_rate=1.2e-3,
    backbone_learning_rate=6e-3,
    lr_scheduler="cosine",
    warmup_steps=50,
    image_size=IMAGE_SIZE,
    augment="flip",  # DETR's scale and crop augmentation slows learning at this budget
    logging_steps=20,
)


def run_demo(
    output_dir: str | Path = "demo_output",
    time_budget: float = 600.0,
    seed: int = 0,
    num_train: int = 2000,
    num_validation: int = 100,
    num_test: int = 200,
    show: int = 8,
    dataset: str | None = None,
) -> dict[str, float]:
    """Run the demo; returns the test metrics written to `<output_dir>/metrics.json`.

    `dataset`: instead of the generated shapes, a data set with `train` and `test` splits (and optionally
    `validation`, evaluated during training) that `load_detection_dataset` reads (a `save_to_disk` folder, a COCO
    folder or a Hub id), e.g. a held-out shapes set to check that the recipe was not tuned to the generator.
    """
    started = time.time()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if dataset is None:
        data = make_synthetic_dataset(num_train, num_validation, num_test, image_size=IMAGE_SIZE, seed=seed)
    else:
        data = load_detection_dataset(dataset)
        missing = [split for split in ("train", "test") if split not in data]
        if missing:
            raise ValueError(f"dataset={dataset!r} has no split {missing} (it has {list(data)}); the demo trains on "
                             "'train', tracks 'validation' when present and reports 'test'")
    id2label = dataset_id2label(data["train"])
    model = HfDetrForObjectDetection(HfDetrConfig(**DEMO_MODEL, id2label=id2label))
    processor = demo_processor()
    config = TrainConfig(
        output_dir=str(output_dir / "run"), time_budget=time_budget, seed=seed, cpu=True, save_steps=0,
        eval_steps=None, eval_split="validation" if "validation" in data else None, **DEMO_TRAINING,
    )  # fmt: skip
    result = train(config, dataset=data, model=model, image_processor=processor)
    model = result.model.to_plain_detr().eval()
    model.save_pretrained(output_dir / "model")
    processor.save_pretrained(output_dir / "model")

    metrics = score_split(model, processor, data["test"], id2label, config.per_device_eval_batch_size)
    metrics.update(
        train_seconds=round(result.log_history[-1].get("elapsed", time_budget), 1) if result.log_history else 0.0,
        steps=result.global_step,
        total_seconds=round(time.time() - started, 1),
    )
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _save_pictures(model, processor, data["test"], result.log_history, output_dir, show, id2label)
    return metrics


def demo_processor() -> HfDetrImageProcessor:
    """The image processor of the recipe: shorter side `IMAGE_SIZE`, longer side at most twice that."""
    return HfDetrImageProcessor(size={"shortest_edge": IMAGE_SIZE, "longest_edge": IMAGE_SIZE * 2})


def score_split(
    model: torch.nn.Module,
    processor: HfDetrImageProcessor,
    split: datasets.Dataset,
    id2label: dict[int, str],
    batch_size: int,
) -> dict[str, float]:
    """COCO metrics of `model` on a Hub-COCO `split`, its images resized as the recipe's evaluation resizes them."""
    _, eval_transform = scaled_detr_transforms(IMAGE_SIZE, IMAGE_SIZE * 2)
    loader = torch.utils.data.DataLoader(
        DetectionDataset(split, eval_transform), batch_size=batch_size,
        collate_fn=DetectionCollator(processor, keep_crowd=True),
    )  # fmt: skip
    return evaluate(model, processor, loader, Accelerator(cpu=True), id2label=id2label)


def _save_pictures(model, processor, test, log_history, output_dir: Path, show: int,
                   id2label: dict[int, str]) -> None:
    """Ground truth next to predictions for the first `show` test images; loss and mAP curves."""
    tiles = []
    for example in test.select(range(min(show, len(test)))):
        image = example["image"].convert("RGB")
        boxes = torch.tensor(example["objects"]["bbox"]).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        tiles.append(draw_detections(image, boxes, example["objects"]["category"], id2label))
        inputs = processor(images=image, return_tensors="pt")
        with torch.no_grad():
            outputs = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"])
        found = processor.post_process_object_detection(outputs, 0.5, target_sizes=[(image.height, image.width)])[0]
        tiles.append(draw_detections(image, found["boxes"], found["labels"].tolist(), id2label, found["scores"]))
    save_grid(tiles, output_dir / "predictions.png", columns=4)
    losses = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    maps = [(e["step"], e["eval_map"]) for e in log_history if "eval_map" in e]
    save_curves({"training loss": tuple(zip(*losses)) or ((), ()), "validation mAP": tuple(zip(*maps)) or ((), ())},
                output_dir / "curves.png")

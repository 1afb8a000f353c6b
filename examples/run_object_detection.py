#!/usr/bin/env python
"""Fine-tune hf_detr on a detection data set in the Hub's COCO schema with transformers' `Trainer`.

A thin script around the package: the model and its image processor come from `hf_detr.create_model` (a preset such as
`detr-resnet-50` or a `hub_configs/` folder: new weights; a trained folder or Hub id: fine-tuning, the class head
replaced when the labels differ), the data from `hf_detr.data.load_data`, the batches and the COCO mAP from
`hf_detr.evaluation`, and the `Trainer` subclass from `hf_detr.training.DetrTrainer` (DETR's backbone learning rate,
labels packed so multi-process evaluation keeps every box). DETR's recipe is the default: AdamW at 1e-4 with the
backbone at 1e-5 (`--backbone_learning_rate 0` freezes it), weight decay 1e-4, gradients clipped at 0.1; COCO mAP
after every epoch, and the checkpoint with the best `eval_map` is kept and saved with its image processor;
`--early_stopping_patience N` stops once `--metric_for_best_model` has not improved for N evaluations
(transformers' `EarlyStoppingCallback`).

    python examples/run_object_detection.py --model_name_or_path hub_configs/detr-resnet-50 \
        --model_kwargs '{"use_pretrained_backbone": true}' --dataset cppe-5 --output_dir detr-cppe5 \
        --do_train --do_eval --num_train_epochs 100 --per_device_train_batch_size 8 [--push_to_hub]

    # several GPUs or machines, exactly as any Trainer script:
    accelerate launch examples/run_object_detection.py ...
    torchrun --nproc_per_node 4 examples/run_object_detection.py ...

    # a CPU smoke run on generated shapes:
    python examples/run_object_detection.py --model_name_or_path hub_configs/detr-resnet-50 --dataset synthetic \
        --synthetic_train_size 64 --synthetic_eval_size 16 --image_size 128 \
        --model_kwargs '{"backbone": "resnet18", "d_model": 64, "encoder_layers": 1, "decoder_layers": 1}' \
        --output_dir /tmp/detr-shapes --do_train --do_eval --num_train_epochs 2 --use_cpu

    # instance or panoptic segmentation (HfDetrForSegmentation on the data set's masks; mask mAP and PQ reported as
    # eval_segm_map, eval_pq, ...); --freeze_detection trains the mask head alone on a trained detector:
    python examples/run_object_detection.py --task panoptic --model_name_or_path DETECTOR --freeze_detection ...

The options shared with `hf-detr train` (the model, the data, the image size, the box policy, the backbone learning
rate, early stopping) are the same dataclasses (`hf_detr.training.config`), so they have the same names and help;
the old spellings `--synthetic_num_train`, `--synthetic_num_eval` and `--per_class_metrics` still parse and warn.
`--resume_from_checkpoint <output_dir>/checkpoint-N` continues a run. Every `TrainingArguments` option works
(`--help` lists them).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import transformers
from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

import hf_detr
from hf_detr.builder import set_labels
from hf_detr.data import id2label, load_data
from hf_detr.evaluation import evaluation_collator, evaluation_dataset, make_compute_metrics
from hf_detr.training import DetrTrainer, EpochSetter, OneToOneFinish
from hf_detr.training.config import DataOptions, ModelOptions, RecipeOptions
from hf_detr.training.options import OptionsParser, box_options
from hf_detr.training.setup import training_data, with_image_size

logger = logging.getLogger(__name__)

# DETR's recipe, as defaults of the TrainingArguments fields (still overridable on the command line).
TRAINING_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-4,
    "weight_decay": 1e-4,
    "max_grad_norm": 0.1,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "eval_map",
    "greater_is_better": True,
    # the collator reads `image` and `objects`, which the model's forward does not take
    "remove_unused_columns": False,
    # compute_metrics needs one (logits, pred_boxes) / label array per batch: images have different sizes
    "eval_do_concat_batches": False,
}


@dataclass(kw_only=True)
class ExampleArguments:
    """What this script adds to the options it shares with `hf-detr train` (`ModelOptions`, `DataOptions`,
    `RecipeOptions`) and to transformers' `TrainingArguments`."""

    model_revision: str | None = field(default=None, metadata={"help": "Hub revision of the model."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation images."})
    per_class: bool = field(
        default=False,
        metadata={
            "help": "Also log AP, AP50 and AR@100 of every class (eval_map_class_<name>, ...).",
            "deprecated": ("per_class_metrics",),
        },
    )


def build_parser() -> OptionsParser:
    parser = OptionsParser((ModelOptions, DataOptions, RecipeOptions, ExampleArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    return parser


def load_splits(
    data_args: DataOptions, example_args: ExampleArguments, seed: int, masks: bool = False
) -> tuple[datasets.Dataset | None, datasets.Dataset | None]:
    """The training and evaluation splits (``None`` for an empty split name), cut to ``max_*_samples``; with their
    masks for segmentation."""
    wanted = [name for name in (data_args.train_split, data_args.eval_split) if name]
    sizes = {data_args.train_split: data_args.synthetic_train_size, data_args.eval_split: data_args.synthetic_eval_size}
    loaded = load_data(
        data_args.dataset,
        wanted,
        synthetic_sizes=sizes,
        synthetic_image_size=data_args.synthetic_image_size,
        seed=seed,
        masks=masks,
        **box_options(data_args),
    )
    splits = []
    for name, limit in (
        (data_args.train_split, example_args.max_train_samples),
        (data_args.eval_split, example_args.max_eval_samples),
    ):
        split = loaded[name] if name else None
        splits.append(split.select(range(min(limit, len(split)))) if split is not None and limit is not None else split)
    return splits[0], splits[1]


def _setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def main(args: Sequence[str] | None = None) -> dict[str, float]:
    """Run the script with command-line ``args`` (default: ``sys.argv``); returns the train and eval metrics."""
    model_args, data_args, recipe_args, example_args, training_args = build_parser().parse_args_into_dataclasses(
        args=args
    )
    if model_args.model_name_or_path is None:
        raise ValueError("give --model_name_or_path (a preset, a folder or a Hub id).")
    _setup_logging(training_args)
    if training_args.remove_unused_columns:
        raise ValueError("--remove_unused_columns must be false: the collator reads the `image` and `objects` columns.")
    model_kwargs = model_args.model_kwargs or {}  # JSON checked by the parser
    patience = recipe_args.early_stopping_patience
    if patience is not None:  # EarlyStoppingCallback would only assert these once training starts
        if patience < 1:
            raise ValueError(f"--early_stopping_patience {patience}: give at least 1 evaluation.")
        if not training_args.load_best_model_at_end:
            raise ValueError(
                "--early_stopping_patience needs --load_best_model_at_end true (the default), which "
                "also makes the evaluations and checkpoints follow one strategy."
            )
        if training_args.eval_strategy == "no":
            raise ValueError("--early_stopping_patience watches the evaluations: give --eval_strategy epoch or steps.")
    set_seed(training_args.seed)
    model = hf_detr.create_model(
        model_args.model_name_or_path, model_args.task, revision=example_args.model_revision, **model_kwargs
    )
    revision = example_args.model_revision
    image_processor = hf_detr.create_image_processor(model_args.model_name_or_path, revision=revision)
    segmentation = model.config.predicts_masks  # trained and scored on the data set's masks
    if model_args.freeze_detection and not segmentation:
        raise ValueError("--freeze_detection trains a segmentation head: add --task instance or --task panoptic.")

    train_split, eval_split = load_splits(data_args, example_args, training_args.seed, masks=segmentation)
    if training_args.do_train and train_split is None:
        raise ValueError(f"--do_train needs a training split; --train_split is {data_args.train_split!r}.")
    needs_eval = training_args.do_eval or training_args.eval_strategy != "no"
    if needs_eval and eval_split is None:
        raise ValueError(
            f"Evaluation (--do_eval or --eval_strategy {training_args.eval_strategy}) needs --eval_split; "
            "pass --eval_strategy no without one."
        )
    set_labels(model, id2label(train_split if train_split is not None else eval_split))
    image_processor = with_image_size(image_processor, data_args.image_size, data_args.max_size)
    if model_args.freeze_detection:
        model.freeze_detection()
    if recipe_args.backbone_learning_rate <= 0:
        model.freeze_backbone()

    train_dataset = collator = None
    callbacks: list[transformers.TrainerCallback] = []
    if train_split is not None:
        train_dataset, collator = training_data(train_split, image_processor, data_args.augment, training_args.seed)
        callbacks.append(EpochSetter(train_dataset))
    if patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    if recipe_args.one_to_one_finish > 0:
        callbacks.append(OneToOneFinish(recipe_args.one_to_one_finish))
    trainer = DetrTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=evaluation_dataset(eval_split, model.config.id2label) if eval_split is not None else None,
        data_collator=collator,
        eval_data_collator=evaluation_collator(image_processor, mask_references=segmentation),
        processing_class=image_processor,
        compute_metrics=make_compute_metrics(
            image_processor, id2label=model.config.id2label, per_class=example_args.per_class
        ),
        backbone_learning_rate=recipe_args.backbone_learning_rate,
        per_class=example_args.per_class,
        callbacks=callbacks,
    )

    metrics: dict[str, float] = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()  # with load_best_model_at_end: the best checkpoint, with the image processor
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        metrics.update(result.metrics)
    if training_args.do_eval:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(
            finetuned_from=model_args.model_name_or_path,
            dataset=data_args.dataset,
            tags=["image-segmentation" if segmentation else "object-detection", "vision", "hf_detr"],
        )
    return metrics


if __name__ == "__main__":
    main()

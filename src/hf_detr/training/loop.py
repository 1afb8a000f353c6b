"""Training with accelerate: one loop for one CPU, one GPU, many GPUs and many machines.

    hf-detr train --dataset synthetic --output_dir runs/shapes --num_train_epochs 50 ...          # one device
    accelerate launch --multi_gpu --num_processes 8 -m hf_detr train --output_dir runs/shapes ...  # DDP

From Python: ``train(TrainConfig(output_dir=..., ...))``, optionally with a ready ``datasets.DatasetDict`` and model.

The model comes from `hf_detr.create_model` (`model_name_or_path`, the task, `model_kwargs`), the data from
`hf_detr.data.load_data`; under mixed precision the matcher and the losses stay float32, and evaluation scores every
image exactly once (`hf_detr.evaluation.evaluate`).

Data: a map-style split through a DataLoader that accelerate shares among the processes, or with `streaming` a
streamed split (`hf_detr.data.streaming.StreamedBatches`: each process reads the stream and takes every n-th batch;
the evaluation split is still loaded in full). Either way the training images are prepared by
`dataloader_num_workers` worker processes (`setup.dataloader_workers`), each keyed by (epoch, index) so that the
augmentation, and the run, do not depend on their number. Batches are taken in accumulation groups of the same size
on every process; a streamed epoch ends on all processes together, and a process whose share ended one batch early
steps on a stand-in batch with weight 0, so each image is trained on once per epoch and no process waits forever. A
resumed run skips the batches of the epoch already trained on (a stream: before decoding them) and repeats the
uninterrupted run.

Options for fine-tuning: `ema_decay` keeps an exponential moving average of the weights (`torch.optim.swa_utils.
AveragedModel` of the unwrapped model, updated after every optimizer step; buffers: `_Loop._averaged_model`) which
every evaluation scores and which is saved as the model; `early_stopping_patience` stops once `metric_for_best_model`
has not improved for that many evaluations.
evaluation logs the COCO numbers and each class's AP, AP50 and AR@100 (`eval_map_class_<name>`, ...) to the trackers.

Equivalence with one big batch: the set criterion divides each process's loss by the number of boxes averaged over
processes, and DDP averages the gradients, so N processes step exactly as one process on the whole batch would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import is_tensorboard_available, send_to_device, set_seed
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from ..builder import set_labels
from ..data.schema import id2label as dataset_id2label
from ..data.sources import load_data
from ..data.streaming import StreamedBatches
from ..evaluation.evaluate import evaluate, evaluation_loader
from ..evaluation.metrics import COCO_STAT_NAMES, PER_CLASS_STATS, per_class_key
from ..hub.cards import model_card, push_to_hub, save_model_folder
from ..modeling import HfDetrConfig, HfDetrForObjectDetection, HfDetrImageProcessor
from ..modeling.errors import HfDetrInputError
from ..modeling.matcher import NonFiniteOutputError
from .batches import training_loader, training_split
from .checkpoints import STATE_FILE, Progress, check_ema_state, resume_point, save_checkpoint
from .config import TrainConfig
from .options import box_options
from .schedule import finish_one_to_one, lr_factor
from .setup import dataloader_workers, parameter_groups, training_data, with_image_size

__all__ = ["TrainResult", "TrainingDivergedError", "train"]

_LAYER_SUFFIX = re.compile(r"_\d+$")  # loss_dict keys of the auxiliary decoder layers: loss_ce_0, ...


@dataclass
class TrainResult:
    """What `train` returns (on every process)."""

    model: HfDetrForObjectDetection  # the trained model (with ema_decay: the averaged weights), unwrapped from DDP
    image_processor: HfDetrImageProcessor
    global_step: int
    stop_reason: str  # "completed", "time_budget" or "early_stopping"
    metrics: dict[str, float]  # the last evaluation, per-class keys included ({} without an eval split)
    log_history: list[dict[str, float]]
    output_dir: str
    eval_dataset: Any = None  # the evaluation split (a `datasets.Dataset`), None without one


class TrainingDivergedError(ValueError):
    """The loss or the model outputs became NaN or infinite."""


# ----------------------------------------------------------------------------------------------- the loop


def _trackers(report_to: str) -> list[str] | None:
    if report_to == "auto":
        return ["tensorboard"] if is_tensorboard_available() else None
    return None if report_to == "none" else [report_to]


def _log_line(entry: Mapping[str, float]) -> str:
    """The entry as one line, without the per-class metrics (`<stat>_class_<name>`: three per class)."""
    parts = [f"step {entry['step']}", f"epoch {entry['epoch']:.2f}"]
    parts += [
        f"{key} {value:.4g}"
        for key, value in entry.items()
        if key not in ("step", "epoch", "elapsed") and "_class_" not in key
    ]
    return " | ".join(parts) + f" | {entry['elapsed']:.0f} s"


class _Loop:
    """The state of one training session and the steps of the loop; `train` sets it up and runs it."""

    def __init__(
        self,
        config: TrainConfig,
        accelerator: Accelerator,
        model: nn.Module,
        optimizer: Any,
        image_processor: HfDetrImageProcessor,
        train_loader: Any,
        num_images: int | None,
        eval_loader: Any,
        progress: Progress,
        ema: AveragedModel | None,
    ) -> None:
        self.config, self.accelerator, self.model, self.optimizer = config, accelerator, model, optimizer
        self.ema, self.live = ema, accelerator.unwrap_model(model)
        self.image_processor, self.progress = image_processor, progress
        self.train_loader, self.eval_loader = train_loader, eval_loader
        self.streamed = isinstance(train_loader, StreamedBatches)
        self.stand_in = send_to_device(train_loader.stand_in, accelerator.device) if self.streamed else None
        # a stream of unknown length: None (`train` then requires max_steps or the time budget)
        self.batches_per_epoch = (
            len(train_loader)
            if not self.streamed
            else (
                math.ceil(math.ceil(num_images / config.per_device_train_batch_size) / accelerator.num_processes)
                if num_images
                else None
            )
        )
        epochs_steps = None
        if config.num_train_epochs and self.batches_per_epoch:
            steps_per_epoch = math.ceil(self.batches_per_epoch / config.gradient_accumulation_steps)
            epochs_steps = steps_per_epoch * config.num_train_epochs
        self.total_steps = config.max_steps or epochs_steps  # None: the time budget alone says when to stop
        self.log_file = Path(config.output_dir, "train_log.jsonl")
        self.start = time.monotonic() - progress.elapsed
        self.elapsed = progress.elapsed  # the main process's clock, shared with every process at each batch
        self.window: dict[str, torch.Tensor] = {}  # summed losses since the last log
        self.window_steps = 0
        self.metrics: dict[str, float] = {}
        self.last_evaluated = -1
        self.bar = tqdm(
            total=self.total_steps or config.time_budget,
            unit="step" if self.total_steps else "s",
            initial=progress.global_step if self.total_steps else int(progress.elapsed),
            dynamic_ncols=True,
            disable=config.disable_tqdm or not accelerator.is_local_main_process,
        )
        images = config.per_device_train_batch_size * accelerator.num_processes * config.gradient_accumulation_steps
        per_epoch = (
            f"{num_images} images, {math.ceil(self.batches_per_epoch / config.gradient_accumulation_steps)} "
            "steps per epoch"
            if self.batches_per_epoch
            else "a stream of unknown length"
        )
        accelerator.print(
            f"training on {accelerator.num_processes} process(es) ({accelerator.device}, mixed precision "
            f"{accelerator.mixed_precision}{', streamed' if self.streamed else ''}): {per_epoch}, steps of {images} "
            "images, " + (f"{self.total_steps} steps" if self.total_steps else f"{config.time_budget:g} s")
        )

    @property
    def epoch(self) -> float:
        if self.batches_per_epoch is None:
            return float(self.progress.epoch)
        return self.progress.epoch + self.progress.batches_in_epoch / self.batches_per_epoch

    @property
    def fraction(self) -> float:
        """How much of the training is done: of the steps, or else of the time budget (the main process's clock)."""
        if self.total_steps:
            return self.progress.global_step / self.total_steps
        return self.elapsed / self.config.time_budget

    def run(self) -> str:
        """Train until the step count or the time budget is reached, or early stopping says so; returns
        "completed", "time_budget" or "early_stopping"."""
        progress, config = self.progress, self.config
        last_saved = progress.global_step if progress.global_step else -1  # a resumed session starts at a checkpoint
        stop_reason = None
        self.model.train()
        while stop_reason is None:
            for group in self._groups():
                finish_one_to_one(self.live, self.fraction, config.one_to_one_finish)  # before the step's forward
                for position, batch in enumerate(group):
                    self._accumulate(batch, len(group), sync=position == len(group) - 1)
                self._optimizer_step()
                step = progress.global_step
                if self.total_steps and step >= self.total_steps:
                    stop_reason = "completed"
                elif config.time_budget and self.elapsed >= config.time_budget:
                    stop_reason = "time_budget"
                if step % config.logging_steps == 0 or stop_reason:
                    self._log_losses()
                if self.eval_loader is not None and config.eval_steps and step % config.eval_steps == 0:
                    if self.evaluate() and not stop_reason:
                        stop_reason = "early_stopping"
                if config.save_steps and step % config.save_steps == 0:
                    save_checkpoint(self.accelerator, progress, config)
                    last_saved = step
                if stop_reason:
                    break
            else:  # the epoch ended (on every process: `_groups`)
                progress.epoch, progress.batches_in_epoch = progress.epoch + 1, 0
                if self.eval_loader is not None and not config.eval_steps and self.evaluate():
                    stop_reason = "early_stopping"
        self.bar.close()
        if self.window_steps:  # early stopping came between two logging steps
            self._log_losses()
        if self.eval_loader is not None and self.last_evaluated != progress.global_step:
            self.evaluate()
        if config.save_steps and last_saved != progress.global_step:
            save_checkpoint(self.accelerator, progress, config)
        return stop_reason

    def _groups(self) -> Iterator[list[dict[str, Any] | None]]:
        """The rest of this epoch's accumulation groups, as many and as long on every process:
        `gradient_accumulation_steps` batches each, restarting with every epoch, the last one possibly shorter.

        After a resume, the batches of this epoch already trained on are skipped. A streamed epoch's shares may end
        one batch apart, so the processes agree on each group's length (one small gather per group) and a process
        whose share has ended gets None for its missing batches; the epoch ends when every share has.
        """
        progress, accelerator = self.progress, self.accelerator
        if self.streamed:
            streamed = self.train_loader.epoch(progress.epoch, skip=progress.batches_in_epoch)
            batches = (send_to_device(batch, accelerator.device, non_blocking=True) for batch in streamed)
        else:
            self.train_loader.set_epoch(progress.epoch)
            skip = progress.batches_in_epoch
            batches = accelerator.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
        batches = iter(batches)
        while True:
            group: list[Any] = list(itertools.islice(batches, self.config.gradient_accumulation_steps))
            size = len(group)
            if self.streamed:
                size = int(accelerator.gather(torch.tensor([size], device=accelerator.device)).max())
                if size == 0 and progress.batches_in_epoch == 0:
                    raise HfDetrInputError(f"the training stream of split {self.config.train_split!r} has no images")
            if size == 0:
                return
            yield group + [None] * (size - len(group))

    def _accumulate(self, batch: dict[str, Any] | None, group_size: int, sync: bool) -> None:
        """Forward and backward one batch of an accumulation group of `group_size`, its loss divided by that size;
        only the last batch of a group (`sync`) synchronizes gradients.

        None: this process's share of a streamed epoch has ended before the others'. It still takes part in the
        collectives of the step (the loss normalizers, the gradient average) on the stand-in batch (a black image;
        with masks one object covering it), whose loss counts 0: it adds no gradient, only its own share to that
        step's loss normalizers (the no-object weight of its queries; with masks one box).
        """
        progress = self.progress
        where = f"step {progress.global_step + 1} (epoch {progress.epoch}, batch {progress.batches_in_epoch})"

        def share(value: torch.Tensor) -> torch.Tensor:
            return value * 0.0 if batch is None else value / group_size

        with contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model):
            outputs = self._forward(self.stand_in if batch is None else batch, where)
            self.accelerator.backward(share(outputs.loss))
        # the total and the last decoder layer's terms (auxiliary layers carry a `_<i>` suffix)
        terms = {"loss": outputs.loss, **{k: v for k, v in outputs.loss_dict.items() if not _LAYER_SUFFIX.search(k)}}
        for name, value in terms.items():
            self.window[name] = self.window.get(name, 0.0) + share(value.detach().float())
        progress.batches_in_epoch += 1

    def _forward(self, batch: dict[str, Any], where: str) -> Any:
        """The model's forward pass with the loss; a failure on any process stops every process.

        One small all-reduce per batch tells every process whether one of them failed (so none waits forever in the
        next collective) and shares the main process's clock (so all take the same lr and stopping decisions).
        """
        accelerator, failure, outputs = self.accelerator, None, None
        try:
            outputs = self.model(**batch)
            if not torch.isfinite(outputs.loss):
                failure = TrainingDivergedError(
                    f"training diverged at {where}: the loss is {outputs.loss.item()}. Lower the learning rate (now "
                    f"{self.config.learning_rate}), keep gradient clipping on (max_grad_norm=0.1) or train in "
                    "bf16/float32 instead of fp16."
                )
        except NonFiniteOutputError as error:
            failure = TrainingDivergedError(f"training diverged at {where}: {error}")
        except (ValueError, TypeError) as error:  # bad labels or inputs: name the batch
            failure = type(error)(f"{where}: {error}")
        clock = time.monotonic() - self.start if accelerator.is_main_process else 0.0
        status = torch.tensor([float(failure is not None), clock], dtype=torch.float64, device=accelerator.device)
        status = accelerator.reduce(status, "sum")
        self.elapsed = float(status[1])
        if failure is not None:
            raise failure
        if status[0] > 0:
            raise TrainingDivergedError(f"{where}: another process failed (see its error); stopping")
        return outputs

    def _optimizer_step(self) -> None:
        config, progress = self.config, self.progress
        factor = lr_factor(self.fraction, progress.global_step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        if config.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:  # its first update copies the weights
            self.ema.update_parameters(self.live)
        progress.global_step += 1
        progress.elapsed = self.elapsed
        self.window_steps += 1
        self.bar.update(1 if self.total_steps else max(0, int(self.elapsed) - self.bar.n))

    def _log_losses(self) -> None:
        """Log the losses averaged over the steps since the last log and over processes."""
        names = sorted(self.window)  # the same on every process: the terms depend only on the configuration
        mean = self.accelerator.reduce(torch.stack([self.window[name] for name in names]), "mean") / self.window_steps
        entry = {"step": self.progress.global_step, "epoch": self.epoch, **dict(zip(names, mean.tolist()))}
        entry.update({f"lr_{group['name']}": group["lr"] for group in self.optimizer.param_groups})
        self._record(entry)
        self.bar.set_postfix(loss=f"{entry['loss']:.3f}")
        self.window.clear()
        self.window_steps = 0

    def evaluate(self) -> bool:
        """COCO metrics with each class's AP (of the averaged weights with `ema_decay`), logged; True when early
        stopping says to stop."""
        model = self.model if self.ema is None else self._averaged_model()
        # iterating the loader draws from the global RNG, which the training's dropout must not depend on: at an
        # epoch's end the checkpoint is saved before the evaluation, and a run resumed from it must repeat this one
        device = self.accelerator.device
        with torch.random.fork_rng(devices=[device] if device.type != "cpu" else [], device_type=device.type):
            self.metrics = evaluate(
                model,
                self.image_processor,
                self.eval_loader,
                accelerator=self.accelerator,
                per_class=True,
                backend=self.config.coco_backend,
            )
        self.last_evaluated = self.progress.global_step
        self._record(
            {
                "step": self.progress.global_step,
                "epoch": self.epoch,
                **{f"eval_{name}": value for name, value in self.metrics.items()},
            }
        )
        return self.config.early_stopping_patience is not None and self._patience_exhausted()

    def _averaged_model(self) -> nn.Module:
        """The weight average with the live model's buffers: BatchNorm statistics are not averaged (they train with
        `freeze_backbone_batchnorm=False`, where averaging them breaks training from scratch, docs/RECIPE.md)."""
        with torch.no_grad():
            for averaged, live in zip(self.ema.module.buffers(), self.live.buffers(), strict=True):
                averaged.copy_(live)
        return self.ema.module

    def _patience_exhausted(self) -> bool:
        """Early stopping: record the evaluation; True once `early_stopping_patience` evaluations in a row have not
        beaten the best `metric_for_best_model` (greater is better, strictly)."""
        config, progress = self.config, self.progress
        value = self.metrics[config.metric_for_best_model]
        if progress.best_metric is None or value > progress.best_metric:
            progress.best_metric, progress.best_step, progress.evaluations_since_best = value, progress.global_step, 0
            return False
        progress.evaluations_since_best += 1
        if progress.evaluations_since_best < config.early_stopping_patience:
            return False
        if self.accelerator.is_main_process:
            self.bar.write(
                f"early stopping at step {progress.global_step}: eval_{config.metric_for_best_model} has not improved "
                f"for {progress.evaluations_since_best} evaluations; the best, {progress.best_metric:.4g}, was at step "
                f"{progress.best_step} (the model saved is the one of step {progress.global_step})"
            )
        return True

    def _record(self, entry: dict[str, float]) -> None:
        """Into the history (saved with checkpoints), the trackers, train_log.jsonl and above the progress bar."""
        entry["elapsed"] = self.elapsed
        self.progress.log_history.append(entry)
        self.accelerator.log(entry, step=self.progress.global_step)
        if self.accelerator.is_main_process:
            with self.log_file.open("a") as stream:
                stream.write(json.dumps(entry) + "\n")
            self.bar.write(_log_line(entry))


def _check_early_stopping(config: TrainConfig, eval_loader: Any, data: datasets.DatasetDict) -> None:
    """Before training: early stopping needs evaluation images and a metric the evaluation gives."""
    if eval_loader is None:
        raise HfDetrInputError(
            f"TrainConfig.early_stopping_patience={config.early_stopping_patience}: the eval split "
            f"{config.eval_split!r} has no images to evaluate on; give one that has"
        )
    classes = dataset_id2label(data[config.eval_split]).values()
    names = [*COCO_STAT_NAMES, *(per_class_key(stat, name) for name in classes for stat in PER_CLASS_STATS)]
    if config.metric_for_best_model not in names:
        raise HfDetrInputError(
            f"TrainConfig.metric_for_best_model={config.metric_for_best_model!r} is not a metric of the "
            f"evaluation; choose one of {names}"
        )


def _load_splits(config: TrainConfig, masks: bool) -> dict[str, Any]:
    """The train and eval splits of `config.dataset` (with their masks with `masks`): the train split streamed with
    `config.streaming`, the eval split always in full."""

    def load(splits: list[str], streaming: bool) -> dict[str, Any]:
        return dict(
            load_data(
                config.dataset,
                splits,
                synthetic_sizes={
                    config.train_split: config.synthetic_train_size,
                    config.eval_split: config.synthetic_eval_size,
                },
                synthetic_image_size=config.synthetic_image_size,
                seed=config.seed,
                masks=masks,
                **box_options(config),
                streaming=streaming,
                decode=not streaming,  # workers decode a stream
            )
        )

    evaluated = [config.eval_split] if config.eval_split else []
    if not config.streaming:
        return load([config.train_split, *evaluated], streaming=False)
    return {**load([config.train_split], streaming=True), **(load(evaluated, streaming=False) if evaluated else {})}


def train(
    config: TrainConfig,
    dataset: datasets.DatasetDict | datasets.IterableDatasetDict | Mapping[str, Any] | None = None,
    model: HfDetrForObjectDetection | None = None,
    image_processor: HfDetrImageProcessor | None = None,
) -> TrainResult:
    """Train (or fine-tune) a DETR as `config` says; see the module docstring. Run it under `accelerate launch` for
    several processes. `dataset` (Hub COCO schema, with `config.train_split` and `config.eval_split`; with
    `config.streaming` the train split may be a `datasets.IterableDataset`, the eval split is a `datasets.Dataset`),
    `model` and `image_processor` replace what `config` would build."""
    output_dir = Path(config.output_dir)
    accelerator = Accelerator(
        cpu=config.cpu,
        mixed_precision=config.mixed_precision,
        log_with=_trackers(config.report_to),
        project_dir=str(output_dir),
    )
    resume_from = resume_point(config)
    set_seed(config.seed)

    if model is None:
        # imported at the call: the one place a model is built, which tests replace
        from ..builder import create_image_processor, create_model

        # no name: a new model of HfDetrConfig's defaults (the paper's DETR-R50) with model_kwargs
        source = config.model_name_or_path or HfDetrConfig()
        model = create_model(source, config.task, **(config.model_kwargs or {}))
        if image_processor is None and config.model_name_or_path is not None:
            image_processor = create_image_processor(config.model_name_or_path)
    image_processor = image_processor or HfDetrImageProcessor()
    if config.task is not None and model.config.task != config.task:
        raise HfDetrInputError(
            f"task={config.task!r}, but the model given predicts {model.config.task!r} ({type(model).__name__})"
        )
    if config.freeze_detection and not model.config.predicts_masks:
        raise HfDetrInputError(
            "TrainConfig.freeze_detection trains a segmentation head: set task='instance' or 'panoptic' (or start "
            "from a segmentation model)"
        )
    masks = model.config.predicts_masks  # a segmentation model trains and is scored on the data's masks
    data = dataset if dataset is not None else _load_splits(config, masks)
    for split in [config.train_split] + ([config.eval_split] if config.eval_split else []):
        if split not in data:
            raise HfDetrInputError(f"the data set has no split {split!r}; its splits are {list(data)}")
    if config.eval_split and isinstance(data[config.eval_split], datasets.IterableDataset):
        raise HfDetrInputError(
            f"split {config.eval_split!r} is streamed, but evaluation reads its split in full: give a "
            "datasets.Dataset (load_data(..., streaming=False))"
        )
    train_split, num_images = training_split(config, data)
    set_labels(model, dataset_id2label(train_split))
    if config.freeze_detection:
        model.freeze_detection()
    # the processor that is saved with the model resizes evaluation and inference images; training scales follow it
    image_processor = with_image_size(image_processor, config.image_size, config.max_size)
    train_set, collator = training_data(train_split, image_processor, config.augment, config.seed)
    num_workers = dataloader_workers(config.dataloader_num_workers, accelerator.device, accelerator.num_processes)
    train_loader = training_loader(train_set, collator, config, accelerator, num_workers)
    eval_loader = None
    if config.eval_split is not None and len(data[config.eval_split]) > 0:
        eval_loader = accelerator.prepare(
            evaluation_loader(
                data[config.eval_split],
                image_processor,
                model.config.id2label,
                config.per_device_eval_batch_size,
                num_workers,
                mask_references=masks,
            )
        )
    if config.early_stopping_patience is not None:
        _check_early_stopping(config, eval_loader, data)
    if config.backbone_learning_rate == 0:
        model.freeze_backbone()
    groups = parameter_groups(model, config.learning_rate, config.backbone_learning_rate)
    for group in groups:  # the schedule's reference, kept in the optimizer state so a resumed run has it
        group["base_lr"] = group["lr"]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    if config.streaming:  # each process already reads its own share of the stream
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    ema = None
    if config.ema_decay is not None:
        # of the unwrapped model (a copy on its device); parameters only: `_Loop._averaged_model` gives it the buffers
        ema = AveragedModel(
            accelerator.unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=False
        )
        accelerator.register_for_checkpointing(ema)  # saved and restored with the states of --resume

    progress = Progress()
    if resume_from is not None:
        check_ema_state(resume_from, ema is not None)
        accelerator.load_state(str(resume_from))  # weights, optimizer, scaler and this process's RNG states
        progress = Progress(**json.loads((resume_from / STATE_FILE).read_text()))
        accelerator.print(f"resumed from {resume_from} at step {progress.global_step}")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        # the log restarts from the checkpoint's history, dropping what a killed session wrote after it
        Path(output_dir, "train_log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in progress.log_history))
        accelerator.init_trackers(
            "hf_detr", config={k: v for k, v in dataclasses.asdict(config).items() if isinstance(v, (int, float, str))}
        )
    loop = _Loop(
        config, accelerator, model, optimizer, image_processor, train_loader, num_images, eval_loader, progress, ema
    )
    stop_reason = loop.run()

    # without the training's autocast wrapper, which accelerate keeps on `forward` by default: a model trained in
    # bf16 would go on predicting in bf16, unlike its saved folder
    trained = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    if ema is not None:  # the average is the model saved (with the live buffers, which `trained` holds)
        with torch.no_grad():
            for weight, averaged in zip(trained.parameters(), ema.module.parameters(), strict=True):
                weight.copy_(averaged)
    trained.to_plain_detr()  # training-only options (Group DETR queries, trainable BatchNorm) become plain DETR
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        source = f"Trained with `hf-detr train` for {progress.global_step} steps on `{config.dataset}`."
        # one card for the local folder and the Hub copy
        card = model_card(trained.config, config.hub_model_id or str(output_dir), source=source)
        save_model_folder(output_dir, trained, image_processor, card, state_dict=state_dict)
        (output_dir / "eval_results.json").write_text(json.dumps(loop.metrics, indent=1))
        if config.push_to_hub:
            push_to_hub(trained, config.hub_model_id, image_processor, card=card)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(
        model=trained,
        image_processor=image_processor,
        global_step=progress.global_step,
        stop_reason=stop_reason,
        metrics=loop.metrics,
        log_history=progress.log_history,
        output_dir=str(output_dir),
        eval_dataset=data[config.eval_split] if eval_loader is not None else None,
    )

"""Per-process script of `test_distributed.py::test_two_processes_step_like_one_process_on_the_whole_batch`.

    accelerate launch --multi_gpu --num_processes 2 tests/distributed_step.py OUT.pt --cpu [--segmentation]

Every process builds the same model and batch (`step_inputs`), takes its half of the batch, and the processes make one
SGD step together (DDP over gloo); the main process saves the updated state dict to OUT.pt. The test makes the same
step in one process on the whole batch and compares. With `--segmentation`: an `HfDetrForSegmentation` whose labels
carry masks, so the mask losses are normalized across processes too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).parent))
from helpers import padded_batch, random_labels, tiny_config_kwargs  # noqa: E402
from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrForSegmentation  # noqa: E402

# 4 images; the first process gets 4 boxes, the second 1 (one of its images has none)
BOX_COUNTS = (3, 1, 1, 0)
LEARNING_RATE = 0.01


Inputs = tuple[HfDetrForObjectDetection, torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]


def step_inputs(segmentation: bool = False) -> Inputs:
    """The model (dropout off, so one process and two see the same function) and the whole batch; with
    `segmentation`, a segmentation model and a random mask per box at the padded size."""
    torch.manual_seed(0)
    config = HfDetrConfig(**tiny_config_kwargs(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0))
    model = (HfDetrForSegmentation if segmentation else HfDetrForObjectDetection)(config)
    generator = torch.Generator().manual_seed(1)
    pixel_values, pixel_mask = padded_batch(((64, 64), (48, 64), (64, 40), (56, 56)), generator=generator)
    labels = random_labels(BOX_COUNTS, config.num_labels, generator=generator)
    if segmentation:
        for label, image in zip(labels, pixel_mask):
            masks = torch.rand(len(label["boxes"]), *image.shape, generator=generator) > 0.5
            label["masks"] = (masks & image.bool()).float()
    return model, pixel_values, pixel_mask, labels


def main(output: str) -> None:
    accelerator = Accelerator(cpu="--cpu" in sys.argv)
    model, pixel_values, pixel_mask, labels = step_inputs("--segmentation" in sys.argv)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    model, optimizer = accelerator.prepare(model, optimizer)
    half = len(labels) // accelerator.num_processes
    mine = slice(accelerator.process_index * half, (accelerator.process_index + 1) * half)
    loss = model(pixel_values[mine], pixel_mask[mine], labels=labels[mine]).loss
    accelerator.backward(loss)
    optimizer.step()
    if accelerator.is_main_process:
        state_dict = accelerator.get_state_dict(model)
        torch.save({"num_processes": accelerator.num_processes, "state_dict": state_dict}, output)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the process group: left to interpreter exit, gloo can abort (SIGABRT)


if __name__ == "__main__":
    main(sys.argv[1])

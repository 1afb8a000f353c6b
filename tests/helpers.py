"""Small builders shared by the tests."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import torch
from accelerate.state import AcceleratorState, GradientState

from hf_detr import presets
from training_commands import free_port

DATA = Path(__file__).parent / "data"


def reset_accelerator() -> None:
    """`train` (and the demo, which trains in bf16 where the CPU has it) creates an Accelerator, whose process-wide
    state, mixed precision included, a later Accelerator of the same process would otherwise inherit."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def tiny_config_kwargs(**overrides):
    """A model small enough for CPU tests in well under a second per forward: the `tiny` preset, with `overrides`."""
    return {**copy.deepcopy(dict(presets.get("tiny").model)), **overrides}  # a copy: the preset's dicts stay intact


def padded_batch(sizes=((160, 224), (128, 96)), channels=3, generator=None):
    """Random images of different sizes padded to a common canvas, with their pixel mask."""
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    pixel_values = torch.zeros(len(sizes), channels, height, width)
    pixel_mask = torch.zeros(len(sizes), height, width, dtype=torch.long)
    for i, (h, w) in enumerate(sizes):
        pixel_values[i, :, :h, :w] = torch.randn(channels, h, w, generator=generator)
        pixel_mask[i, :h, :w] = 1
    return pixel_values, pixel_mask


def original_key_list(name: str) -> dict[str, tuple[int, ...]]:
    """A committed key list of an original DETR model in tests/data: `key [d0, d1, ...]` per line (see its header)."""
    keys = {}
    for line in (DATA / name).read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            keys[key] = tuple(int(d) for d in shape.strip("[]").split(",") if d.strip())
    return keys


def random_labels(counts, num_labels, generator=None):
    """transformers-format labels with valid normalized (cx, cy, w, h) boxes."""
    labels = []
    for n in counts:
        wh = torch.rand(n, 2, generator=generator) * 0.4 + 0.05
        center = wh / 2 + torch.rand(n, 2, generator=generator) * (1 - wh)
        labels.append(
            {
                "class_labels": torch.randint(0, num_labels, (n,), generator=generator),
                "boxes": torch.cat([center, wh], dim=1),
            }
        )
    return labels


@torch.no_grad()
def randomize_weights(model: torch.nn.Module) -> None:
    """Give every weight and BatchNorm statistic a random value of a sensible scale.

    transformers' default init leaves the box head near zero (every box ~ the image centre) and the attention
    weights tiny, which would let a wrong implementation pass a parity test; this makes every part matter.
    """
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        if name.endswith("running_var"):
            tensor.uniform_(0.5, 1.5)
        elif tensor.ndim > 1:
            tensor.normal_(0, tensor[0].numel() ** -0.5)
        elif "norm" in name or "bn" in name or "downsample.1" in name:
            tensor.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
        else:
            tensor.normal_(0, 0.1)


ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "run_object_detection.py"


def load_script(path: Path) -> ModuleType:
    """Import a script of the repository (examples/, benchmarks/) as a module named after its file, registered in
    `sys.modules` (where dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_example_fine_tuning(model: str | Path, output_dir: str | Path, steps: int = 2) -> None:
    """`examples/run_object_detection.py` fine-tuning `model` for a few steps on 4 generated 64-px images, with the
    backbone frozen (learning rate 0), no evaluation and no checkpoints."""
    load_script(EXAMPLE).main(
        [
            "--model_name_or_path",
            str(model),
            "--output_dir",
            str(output_dir),
            "--dataset",
            "synthetic",
            "--synthetic_image_size",
            "64",
            "--image_size",
            "64",
            "--synthetic_train_size",
            "4",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
            "--do_train",
            "--max_steps",
            str(steps),
            "--backbone_learning_rate",
            "0",
            "--learning_rate",
            "1e-3",
            "--per_device_train_batch_size",
            "2",
            "--use_cpu",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
        ]
    )


def trainer_evaluate(
    folder: Path, data: Path, output_dir: Path, batch_size: int, mask_references: bool | None = None
) -> dict[str, float]:
    """`DetrTrainer.evaluate` of the saved model in `folder` on the `validation` split saved in `data`, as the example
    sets it up (`mask_references`, None: for a segmentation model); runs in this process or under torchrun."""
    import datasets
    from transformers import TrainingArguments

    from hf_detr.apps.predict import load_model
    from hf_detr.evaluation import evaluation_collator, evaluation_dataset, make_compute_metrics
    from hf_detr.training import DetrTrainer

    model, processor = load_model(folder)
    if mask_references is None:
        mask_references = model.config.predicts_masks
    split = datasets.load_from_disk(str(data))["validation"]
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_eval_batch_size=batch_size,
        use_cpu=True,
        report_to="none",
        eval_do_concat_batches=False,
        remove_unused_columns=False,
    )
    trainer = DetrTrainer(
        model=model,
        args=args,
        eval_dataset=evaluation_dataset(split, model.config.id2label),
        eval_data_collator=evaluation_collator(processor, mask_references=mask_references),
        processing_class=processor,
        compute_metrics=make_compute_metrics(processor, id2label=model.config.id2label),
    )
    return trainer.evaluate()


def report_metrics(metrics: dict) -> None:
    """Called by a script under `launch_two_processes` with its process's metrics: a file per process, since two
    processes printing to one pipe interleave their output (CI once read "METRICSMETRICS {...}")."""
    Path(os.environ["METRICS_DIR"], f"{os.environ['RANK']}.json").write_text(json.dumps(metrics))


TEARDOWN = """
import torch.distributed
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
"""


def launch_two_processes(script: str, tmp_path: Path) -> list[dict[str, float]]:
    """Run `script` (which can import `helpers`) on 2 processes with torchrun, offline and one thread each; the
    metrics each process gave `report_metrics`, by rank. The script's process group is destroyed after it: left to
    interpreter exit, gloo's threads can abort the process ("terminate called without an active exception", once in
    CI)."""
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n" + textwrap.dedent(script) + TEARDOWN
    )
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "METRICS_DIR": str(metrics_dir),
    }
    done = subprocess.run(
        # a port of its own: under pytest-xdist another test may be launching processes at the same time
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            str(launcher),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = sorted(metrics_dir.glob("*.json"))
    assert [path.stem for path in reports] == ["0", "1"], done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(path.read_text()) for path in reports]


def trainer_evaluate_on_two_processes(root: Path, tmp_path: Path, batch_size: int) -> list[dict[str, float]]:
    """`trainer_evaluate` of `root`/model on `root`/data on 2 processes; each process's metrics."""
    return launch_two_processes(
        f"""
        from pathlib import Path
        from helpers import report_metrics, trainer_evaluate
        root = Path({str(root)!r})
        report_metrics(trainer_evaluate(root / "model", root / "data", Path({str(tmp_path / "out")!r}), {batch_size}))
    """,
        tmp_path,
    )

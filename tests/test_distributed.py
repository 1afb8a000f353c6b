"""Training on several processes (gloo on the CPU) equals training on one.

Every test launches real processes with this venv's `accelerate launch --multi_gpu` and the scripts' `--cpu` flag:
accelerate's own `--cpu` launcher flag starts a single process unless MPI is set up, while `--multi_gpu` spawns the
processes through torch.distributed.run, and `Accelerator(cpu=True)` in each joins them with gloo. Nothing reads an
accelerate config file or the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distributed_step import LEARNING_RATE, step_inputs
from hf_detr import HfDetrForObjectDetection
from hf_detr.data.synthetic import ID2LABEL
from hf_detr.training import latest_checkpoint
from training_commands import TINY, command, free_port, launch_argv

TESTS = Path(__file__).parent
ACCELERATE = str(Path(sys.executable).parent / "accelerate")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of the launched processes: no accelerate config, caches in tmp_path, no network."""
    return {
        **os.environ,
        "ACCELERATE_CONFIG_FILE": str(tmp_path / "no_accelerate_config.yaml"),
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }


def run(argv: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        output = f"{result.stdout}\n{result.stderr[-6000:]}"
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{output}")
    return result


def sgd_step(model: HfDetrForObjectDetection, batches: list[tuple]) -> dict[str, torch.Tensor]:
    """One SGD step on the mean of the losses of `batches` (each normalized by its own box count here)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    for pixel_values, pixel_mask, labels in batches:
        (model(pixel_values, pixel_mask, labels=labels).loss / len(batches)).backward()
    optimizer.step()
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("segmentation", [False, True], ids=["detection", "segmentation"])
def test_two_processes_step_like_one_process_on_the_whole_batch(
    tmp_path: Path, env: dict[str, str], segmentation: bool
) -> None:
    out = tmp_path / "ddp.pt"
    launcher = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())]
    flags = ["--cpu", "--segmentation"] if segmentation else ["--cpu"]
    run([*launcher, str(TESTS / "distributed_step.py"), str(out), *flags], env)
    ddp = torch.load(out, weights_only=True)
    assert ddp["num_processes"] == 2

    model, pixel_values, pixel_mask, labels = step_inputs(segmentation)
    initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    whole = sgd_step(model, [(pixel_values, pixel_mask, labels)])
    if segmentation:  # the mask head learned: the mask losses reached the step
        head = [name for name in whole if name.startswith("mask_head.")]
        assert any(not torch.equal(whole[name], initial[name]) for name in head)
    # the halves' box counts differ (4 vs 1): normalizing each by its own count gives another step entirely
    model, *_ = step_inputs(segmentation)
    halves = [(pixel_values[:2], pixel_mask[:2], labels[:2]), (pixel_values[2:], pixel_mask[2:], labels[2:])]
    naive = sgd_step(model, halves)

    assert max_difference(whole, initial) > 1e-2  # the step moved the weights
    assert max_difference(naive, whole) > 1e-3  # so a wrong normalization could not pass
    assert max_difference(ddp["state_dict"], whole) < 1e-5


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path: Path, env: dict[str, str]) -> None:
    documented = command("multi-gpu")
    # 12 images in batches of 2 x 2 processes: 3 steps per epoch; the kill comes after step 2, inside the first
    # epoch, and the run ends after step 4, in the second. Dropout and augmentation are on: the random states matter.
    args = [*TINY, "--synthetic_train_size", "12", "--eval_split", "none", "--max_steps", "4", "--save_steps", "2"]
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"

    run([*launch_argv(documented, 2, free_port()), *args, "--output_dir", str(uninterrupted)], env)
    killer = [str(TESTS / "kill_after_checkpoint.py")]
    killed = run(
        [*launch_argv(documented, 2, free_port(), script=killer), *args, "--output_dir", str(interrupted)],
        env,
        check=False,
    )
    assert killed.returncode != 0
    assert latest_checkpoint(interrupted).name == "step_2"
    assert not (interrupted / "model.safetensors").exists()

    resumed = run([*launch_argv(documented, 2, free_port()), *args, "--output_dir", str(interrupted), "--resume"], env)
    assert "resumed from" in resumed.stdout and "at step 2" in resumed.stdout

    expected = load_file(uninterrupted / "model.safetensors")
    actual = load_file(interrupted / "model.safetensors")
    assert max_difference(actual, expected) < 1e-6
    # the losses logged after the resume are those of the uninterrupted run
    logs = [
        [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
        for folder in (uninterrupted, interrupted)
    ]
    assert [entry["step"] for entry in logs[1]] == [1, 2, 3, 4]
    assert [entry["loss"] for entry in logs[1]] == pytest.approx([entry["loss"] for entry in logs[0]], abs=1e-6)


def test_uneven_evaluation_scores_every_image_once(tmp_path: Path, env: dict[str, str]) -> None:
    from accelerate import Accelerator

    from distributed_eval import NUM_IMAGES
    from distributed_eval import run as evaluate_once

    out = tmp_path / "eval.json"
    launcher = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())]
    run([*launcher, str(TESTS / "distributed_eval.py"), str(out), "--cpu"], env)
    two = json.loads(out.read_text())
    one = evaluate_once(Accelerator(cpu=True))  # conftest resets the accelerate state after the test

    assert two["num_processes"] == 2
    ids = [image["image_id"] for image in two["images"]]
    assert sorted(ids) == list(range(NUM_IMAGES))  # 5 images, though accelerate fed the processes 8
    # and each arrives whole: gather_for_metrics must not cut the label tensors of the padded last batch
    by_id = {image["image_id"]: image for image in one["images"]}
    assert sorted(by_id) == list(range(NUM_IMAGES))
    assert all(image == by_id[image["image_id"]] for image in two["images"])
    assert sum(len(image["boxes"]) for image in two["images"]) > NUM_IMAGES
    assert all(image["orig_size"] == [64, 64] for image in two["images"])
    assert two["metrics"] == pytest.approx(one["metrics"], abs=1e-9)


@pytest.mark.slow
def test_documented_multi_node_command_on_two_local_machines(tmp_path: Path, env: dict[str, str]) -> None:
    documented = command("multi-node")
    port, output = free_port(), tmp_path / "run"
    args = [
        *TINY,
        "--synthetic_train_size",
        "4",
        "--synthetic_eval_size",
        "3",
        "--max_steps",
        "2",
        "--output_dir",
        str(output),
    ]
    machines = [
        subprocess.Popen(
            [*launch_argv(documented, 2, port, replace={"$MACHINE_RANK": str(rank), "$MAIN_IP": "127.0.0.1"}), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [machine.communicate(timeout=300) for machine in machines]
    for machine, (stdout, stderr) in zip(machines, outputs):
        assert machine.returncode == 0, f"{stdout}\n{stderr[-6000:]}"
    assert "training on 2 process(es)" in outputs[0][0]
    model = HfDetrForObjectDetection.from_pretrained(output)
    assert model.config.id2label == ID2LABEL  # the synthetic set's classes got a new head
    metrics = json.loads((output / "eval_results.json").read_text())
    assert set(metrics) >= {"map", "map_50", "mar_100"}

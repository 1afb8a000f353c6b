"""Training from a stream (`hf-detr train --streaming`, `hf_detr.data.streaming`) and DataLoader workers: a streamed
epoch is the map-style path's batches of the same order, on every process, resumable mid-epoch exactly; neither path
depends on the number of workers.

The two-process tests launch `accelerate launch --multi_gpu ... --cpu` as `test_distributed.py` does (its `env` and
`run`), with the README's multi-GPU command and the tiny settings of `training_commands.TINY`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_detr import HfDetrImageProcessor
from hf_detr.data.streaming import StreamedBatches
from hf_detr.data.synthetic import make_synthetic_dataset
from hf_detr.training import TrainConfig, latest_checkpoint, train
from hf_detr.training.setup import training_data
from test_distributed import env, max_difference, run  # noqa: F401 (env: the launched processes' fixture)
from test_train import tiny_config
from training_commands import TINY, command, free_port, launch_argv

TESTS = Path(__file__).parent

pytestmark = pytest.mark.usefixtures("one_thread")


def config(tmp_path: Path, name: str, **overrides) -> TrainConfig:
    """`test_train.tiny_config` on 64-pixel shapes, in its own folder `name`."""
    return tiny_config(tmp_path, output_dir=str(tmp_path / name), synthetic_image_size=64, **overrides)


def weights(result) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in result.model.state_dict().items()}


def image_ids(batch: dict) -> list[int]:
    return [int(label["image_id"][0]) for label in batch["labels"]]


# ----------------------------------------------------------------------------------------------- in one process


def test_a_streamed_epoch_is_the_map_style_batches_of_its_rows() -> None:
    split = make_synthetic_dataset(13, 0, 0, image_size=64, seed=0)["train"]  # image_id i is row i
    processor = HfDetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 107})
    mapped, collator = training_data(split, processor, "detr", seed=3)
    # three shards: datasets reorders shards when it shuffles unless their order is pinned, which would give the
    # examples the row indices of another order
    streamed, _ = training_data(split.to_iterable_dataset(num_shards=3), processor, "detr", seed=3)

    def epoch_one(rank: int, skip: int = 0, workers: int = 0) -> list[dict]:
        batches = StreamedBatches(
            streamed,
            collator,
            batch_size=2,
            seed=3,
            shuffle_buffer_size=4,
            rank=rank,
            num_processes=2,
            num_workers=workers,
            persistent_workers=workers > 0,
        )
        return list(batches.epoch(1, skip=skip))

    shares = [epoch_one(0), epoch_one(1)]
    assert [len(share) for share in shares] == [4, 3]  # 7 batches (the last of 1 image), every other one
    ids = [image_ids(batch) for share in shares for batch in share]
    assert sorted(sum(ids, [])) == list(range(13))  # every image once
    assert sum(ids, []) != sorted(sum(ids, []))  # shuffled
    for batch in shares[0] + shares[1]:  # each image augmented as the map-style path does example i in epoch 1
        expected = collator([mapped[1, i] for i in image_ids(batch)])
        assert torch.equal(batch["pixel_values"], expected["pixel_values"])
        assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(batch["labels"], expected["labels"]))
    # a resumed epoch continues with the same batches; workers change nothing
    for resumed, uninterrupted in zip(epoch_one(0, skip=2) + epoch_one(1, workers=2), shares[0][2:] + shares[1]):
        assert torch.equal(resumed["pixel_values"], uninterrupted["pixel_values"])
        assert image_ids(resumed) == image_ids(uninterrupted)


def test_streaming_needs_a_bound_when_the_stream_has_no_size(tmp_path: Path) -> None:
    stream = make_synthetic_dataset(4, 0, 0, image_size=64, seed=0)["train"].to_iterable_dataset()  # no size recorded
    with pytest.raises(
        ValueError,
        match=r"num_train_epochs=2 with streaming.*bound the run with max_steps or "
        r"time_budget",
    ):
        train(config(tmp_path, "run", streaming=True, num_train_epochs=2), dataset={"train": stream})


def test_epochs_of_a_stream_that_records_its_size(tmp_path: Path) -> None:
    # load_data's streams record their size (here the synthetic set's; a COCO folder's, a saved set's too)
    result = train(config(tmp_path, "run", streaming=True, num_train_epochs=2, synthetic_train_size=7))
    assert result.global_step == 8  # 4 batches of 2 per epoch
    assert [entry["epoch"] for entry in result.log_history][3::4] == [1.0, 2.0]


@pytest.mark.parametrize("streaming", [False, True], ids=["map_style", "streamed"])
def test_results_do_not_depend_on_the_number_of_workers(tmp_path: Path, streaming: bool) -> None:
    # 7 images in batches of 2: the run goes into the second epoch, whose augmentation persistent workers must draw
    runs = [
        weights(
            train(
                config(
                    tmp_path,
                    f"workers_{workers}",
                    streaming=streaming,
                    synthetic_train_size=7,
                    max_steps=6,
                    dataloader_num_workers=workers,
                )
            )
        )
        for workers in (0, 2)
    ]
    assert max_difference(*runs) == 0


# ---------------------------------------------------------------------------------------------- on two processes

# 13 images in batches of 2 on 2 processes: process 0 gets 4 batches per epoch, process 1 gets 3 and a stand-in.
# With 2 batches per step that is 2 steps per epoch; 4 steps are 2 epochs. Augmentation and dropout are on.
ODD = [
    *TINY,
    "--streaming",
    "--synthetic_train_size",
    "13",
    "--eval_split",
    "none",
    "--gradient_accumulation_steps",
    "2",
    "--max_steps",
    "4",
    "--save_steps",
    "1",
    "--shuffle_buffer_size",
    "5",
]


def launch(output: Path, args: list[str], environ: dict[str, str], script: str | None = None, check: bool = True):
    argv = launch_argv(command("multi-gpu"), 2, free_port(), script=[str(TESTS / script)] if script else None)
    return run([*argv, *args, "--output_dir", str(output)], environ, check=check)


@pytest.mark.slow
def test_two_streamed_processes_train_on_every_image_once_per_epoch_and_resume_exactly(
    tmp_path: Path,
    env: dict[str, str],  # noqa: F811 (the imported `env` fixture)
) -> None:
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    launch(uninterrupted, ODD, env, script="record_trained_images.py")
    records = [
        [json.loads(line) for line in (uninterrupted / f"images_{rank}.jsonl").read_text().splitlines()]
        for rank in (0, 1)
    ]
    assert len(records[0]) == len(records[1]) == 8
    for epoch in (0, 1):
        trained = [record["image_ids"] for rank in records for record in rank if record["epoch"] == epoch]
        assert sorted(i for ids in trained if ids for i in ids) == list(range(13))
        # the shares end one batch apart: process 1 steps on the stand-in once, and the epoch ends for both
        stand_ins = [record["image_ids"] is None for record in records[1] if record["epoch"] == epoch]
        assert stand_ins == [False, False, False, True]

    # killed after the checkpoint of step 1, in the middle of the first epoch, then resumed
    killed = launch(interrupted, ODD, env, script="kill_after_checkpoint.py", check=False)
    assert killed.returncode != 0
    assert latest_checkpoint(interrupted).name == "step_1"
    resumed = launch(interrupted, [*ODD, "--resume"], env)
    assert "at step 1" in resumed.stdout
    assert (
        max_difference(load_file(interrupted / "model.safetensors"), load_file(uninterrupted / "model.safetensors"))
        < 1e-6
    )
    logs = [
        [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
        for folder in (uninterrupted, interrupted)
    ]
    assert [entry["step"] for entry in logs[1]] == [1, 2, 3, 4]
    assert [entry["loss"] for entry in logs[1]] == pytest.approx([entry["loss"] for entry in logs[0]], abs=1e-6)


@pytest.mark.slow
def test_a_streamed_run_equals_a_non_streamed_run_given_the_same_order(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    # 12 images in batches of 2 on 2 processes: 3 steps per epoch, 4 steps reach the second epoch
    args = [
        *TINY,
        "--no-shuffle",
        "--synthetic_train_size",
        "12",
        "--eval_split",
        "none",
        "--max_steps",
        "4",
        "--save_steps",
        "0",
    ]
    launch(tmp_path / "map_style", args, env)
    launch(tmp_path / "streamed", [*args, "--streaming"], env)
    assert (
        max_difference(
            load_file(tmp_path / "streamed" / "model.safetensors"),
            load_file(tmp_path / "map_style" / "model.safetensors"),
        )
        < 1e-6
    )


@pytest.mark.slow
def test_a_streamed_segmentation_run_steps_on_the_stand_in(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    # the mask head runs only on matched queries, and DDP needs every parameter in every backward: the stand-in of a
    # segmentation run carries an object, or the processes' gradient all-reduces would not match
    output = tmp_path / "segmentation"
    args = [
        *TINY,
        "--streaming",
        "--task",
        "instance",
        "--synthetic_train_size",
        "13",
        "--eval_split",
        "none",
        "--max_steps",
        "4",
        "--save_steps",
        "0",
    ]
    launch(output, args, env, script="record_trained_images.py")
    records = [json.loads(line) for line in (output / "images_1.jsonl").read_text().splitlines()]
    assert [record["image_ids"] is None for record in records] == [False, False, False, True]


@pytest.mark.slow
def test_a_broken_image_in_one_process_s_share_stops_both_with_its_name(tmp_path: Path, env: dict[str, str]) -> None:  # noqa: F811
    import datasets

    from hf_detr.data.synthetic import make_synthetic_dataset as shapes

    # 8 shapes, batches of 2 on 2 processes, in order: image 6 is in process 1's second batch (the second step)
    source = shapes(8, 0, 0, image_size=64, seed=0)["train"]
    rows = source.cast_column("image", datasets.Image(decode=False)).to_list()
    rows[6]["image"] = {"bytes": b"not a png", "path": "shape_6.png"}
    datasets.Dataset.from_list(rows, features=source.features).save_to_disk(str(tmp_path / "broken"))
    args = [
        *TINY,
        "--dataset",
        str(tmp_path / "broken"),
        "--streaming",
        "--no-shuffle",
        "--eval_split",
        "none",
        "--max_steps",
        "4",
        "--save_steps",
        "0",
    ]
    failed = launch(tmp_path / "run", args, env, check=False)  # run() times out after 300 s: a hang fails the test
    assert failed.returncode != 0
    assert "example 6 (image_id=6): cannot decode the image shape_6.png" in failed.stderr
    logged = [json.loads(line)["step"] for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert logged == [1]  # the first step trained; the second stopped at the broken image

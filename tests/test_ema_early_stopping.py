"""Fine-tuning options of the accelerate loop and the Trainer example: the weight average (`ema_decay`), early stopping
and the per-class AP scalars every evaluation sends to the trackers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from accelerate.tracking import GeneralTracker
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook

from helpers import EXAMPLE, load_script, reset_accelerator, tiny_config_kwargs
from hf_detr import HfDetrConfig, HfDetrForObjectDetection
from hf_detr.data.synthetic import ID2LABEL, make_synthetic_dataset
from hf_detr.evaluation import PER_CLASS_STATS, per_class_key
from hf_detr.training import TrainConfig, loop, train
from training_commands import TINY_MODEL

pytestmark = pytest.mark.usefixtures("one_thread")

DECAY = 0.6
STEPS = 3


@pytest.fixture(scope="module")
def shapes():
    return make_synthetic_dataset(4, 2, 0, image_size=64, seed=0)


def tiny_config(output_dir: Path, **overrides) -> TrainConfig:
    kwargs = dict(
        output_dir=str(output_dir),
        model_kwargs=TINY_MODEL,
        cpu=True,
        image_size=64,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        logging_steps=1,
        disable_tqdm=True,
        eval_split=None,
        save_steps=0,
        report_to="none",
    )
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def ema_config(output_dir: Path, **overrides) -> TrainConfig:
    """3 steps of 2 per epoch at a high learning rate (the weights move far between steps, so an average is far from
    the last weights), saved after every step, evaluated after the first epoch (step 2) and at the end (step 3)."""
    options = dict(
        max_steps=STEPS,
        ema_decay=DECAY,
        learning_rate=1e-3,
        backbone_learning_rate=1e-3,
        max_grad_norm=0.0,
        lr_scheduler="constant",
        eval_split="validation",
        save_steps=1,
    )
    return tiny_config(output_dir, **{**options, **overrides})


def trainable_batchnorm_model() -> HfDetrForObjectDetection:
    # BatchNorm trains (as from scratch): its running statistics change at every forward pass
    return HfDetrForObjectDetection(HfDetrConfig(**TINY_MODEL, id2label=ID2LABEL, freeze_backbone_batchnorm=False))


class RecordingTracker(GeneralTracker):
    """An accelerate tracker that keeps what it is given."""

    name, requires_logging_directory = "recording", False

    def __init__(self) -> None:
        super().__init__()
        self.logged: list[tuple[int | None, dict]] = []

    @property
    def tracker(self) -> RecordingTracker:
        return self

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.logged.append((step, dict(values)))


def _snapshot(model: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "parameters": {name: p.detach().clone() for name, p in model.named_parameters()},
        "buffers": {name: b.detach().clone() for name, b in model.named_buffers()},
    }


@pytest.fixture(scope="module")
def ema_run(shapes, tmp_path_factory):
    """One EMA run, recording the live weights after each optimizer step, the weights each evaluation was given and
    what the tracker received."""
    model = trainable_batchnorm_model()
    live, evaluated, tracker = [], [], RecordingTracker()
    real_evaluate = loop.evaluate

    def recording_evaluate(model, *args, **kwargs):
        evaluated.append(_snapshot(model))
        return real_evaluate(model, *args, **kwargs)

    handle = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: live.append(_snapshot(model)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(loop, "evaluate", recording_evaluate)
            patch.setattr(loop, "_trackers", lambda report_to: [tracker])
            output = tmp_path_factory.mktemp("ema") / "run"
            result = train(ema_config(output), dataset=shapes, model=model)
    finally:
        handle.remove()
        torch.set_num_threads(threads)
        reset_accelerator()
    return dict(output=output, result=result, live=live, evaluated=evaluated, tracker=tracker)


def hand_ema(snapshots: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """ema_1 = w_1 (the first update copies), ema_t = DECAY * ema_{t-1} + (1 - DECAY) * w_t."""
    average = {name: value.clone() for name, value in snapshots[0].items()}
    for weights in snapshots[1:]:
        average = {name: DECAY * average[name] + (1 - DECAY) * weights[name] for name in average}
    return average


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[name].double() - b[name].double()).abs().max()) for name in a)


# ------------------------------------------------------------------------------------------------------ EMA


def test_the_saved_model_is_the_average_with_the_live_batchnorm_statistics(ema_run) -> None:
    live = ema_run["live"]
    assert len(live) == STEPS
    expected = hand_ema([snapshot["parameters"] for snapshot in live])
    saved = load_file(ema_run["output"] / "model.safetensors")
    weights = {name: saved[name] for name in expected if name in saved}
    assert len(weights) > 0.9 * len(expected)  # to_plain_detr drops training-only parts only
    assert max_difference(weights, {name: expected[name] for name in weights}) < 1e-6
    last = {name: live[-1]["parameters"][name] for name in weights}
    assert max_difference(weights, last) > 1e-4  # the average is far from the last weights: the check could fail
    assert ema_run["result"].model.class_embed.weight.equal(saved["class_embed.weight"])  # TrainResult.model too

    # BatchNorm statistics (policy): the live model's after the last step, not their average
    statistics = [name for name in live[-1]["buffers"] if name.endswith(("running_mean", "running_var"))]
    assert statistics
    final = {name: live[-1]["buffers"][name] for name in statistics}
    for name in statistics:
        torch.testing.assert_close(saved[name], final[name], rtol=0, atol=0, msg=name)
    averaged = hand_ema([{name: s["buffers"][name] for name in statistics} for s in live])
    assert max_difference(final, averaged) > 1e-4  # averaging them would give other numbers
    assert max_difference(final, {name: live[0]["buffers"][name] for name in statistics}) > 1e-4  # they trained


def test_every_evaluation_scores_the_average_so_far(ema_run) -> None:
    live, evaluated = ema_run["live"], ema_run["evaluated"]
    assert len(evaluated) == 2
    for step, scored in zip((2, 3), evaluated):
        expected = hand_ema([snapshot["parameters"] for snapshot in live[:step]])
        assert max_difference(scored["parameters"], expected) < 1e-6, step
        for name, value in live[step - 1]["buffers"].items():  # with the live buffers of that step
            assert torch.equal(scored["buffers"][name], value), (step, name)


def test_resume_continues_the_average_and_refuses_a_mismatched_checkpoint(ema_run, shapes, tmp_path) -> None:
    # saved at the end of the first epoch, before that epoch's evaluation (which must not change the random state
    # the next step's dropout draws from)
    checkpoint = ema_run["output"] / "checkpoints" / "step_2"
    resumed = train(
        ema_config(tmp_path / "resumed", resume=str(checkpoint)), dataset=shapes, model=trainable_batchnorm_model()
    )
    assert resumed.global_step == STEPS
    uninterrupted = load_file(ema_run["output"] / "model.safetensors")
    # an average restarted at the resume would be the step-3 weights, more than 1e-4 away (previous test)
    assert max_difference(load_file(tmp_path / "resumed" / "model.safetensors"), uninterrupted) < 1e-6
    reset_accelerator()

    with pytest.raises(ValueError, match="holds a weight average .saved with --ema_decay.: pass --ema_decay again"):
        train(ema_config(tmp_path / "no-ema", resume=str(checkpoint), ema_decay=None), dataset=shapes)
    reset_accelerator()
    without = tmp_path / "without-ema"
    shutil.copytree(checkpoint, without, ignore=shutil.ignore_patterns("custom_checkpoint_*"))
    with pytest.raises(ValueError, match="holds no weight average"):
        train(ema_config(tmp_path / "ema", resume=str(without)), dataset=shapes)


# ------------------------------------------------------------------------------------------------ trackers


def test_every_evaluation_sends_each_class_ap_to_the_trackers(ema_run) -> None:
    evaluations = [(step, values) for step, values in ema_run["tracker"].logged if "eval_map" in values]
    assert [step for step, _ in evaluations] == [2, 3]
    keys = {f"eval_{per_class_key(stat, name)}" for name in ID2LABEL.values() for stat in PER_CLASS_STATS}
    assert len(keys) == 3 * len(ID2LABEL)
    for _, values in evaluations:
        assert keys <= set(values)
    final = evaluations[-1][1]
    assert {key: final[key] for key in keys} == {key: ema_run["result"].metrics[key[5:]] for key in keys}
    # a class of the validation images has a defined AP (not COCO's -1 for "no ground truth"): real numbers
    assert any(final[key] >= 0 for key in keys)
    # train_log.jsonl has them too; the printed line leaves them out
    logged = [json.loads(line) for line in (ema_run["output"] / "train_log.jsonl").read_text().splitlines()]
    assert keys <= set(logged[-1])
    assert "_class_" not in loop._log_line(logged[-1]) and "eval_map 0" in loop._log_line(logged[-1])


# ------------------------------------------------------------------------------------------ early stopping


def scripted_evaluate(values: list[float], calls: list[int]):
    """An `evaluate` giving `values[i]` as `map` at the i-th call, counting the calls."""

    def evaluate(model, *args, **kwargs):
        calls.append(1)
        return {"map": values[len(calls) - 1], "map_50": 0.5}

    return evaluate


@pytest.mark.parametrize(
    "values, epochs, stops_after",
    [
        ([0.1, 0.3, 0.2, 0.25, 0.29, 0.9, 0.9, 0.9], 8, 5),  # three evaluations without beating 0.3
        ([0.1, 0.3, 0.2, 0.25, 0.31, 0.3], 6, None),  # 0.31 beats 0.3 in time: all 6 epochs
    ],
)
def test_early_stopping_stops_after_patience_evaluations_without_improvement(
    tmp_path, shapes, monkeypatch, capsys, values, epochs, stops_after
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(loop, "evaluate", scripted_evaluate(values, calls))
    config = tiny_config(
        tmp_path,
        num_train_epochs=epochs,
        eval_split="validation",
        early_stopping_patience=3,
        save_steps=4,
        logging_steps=4,
    )
    result = train(config, dataset=shapes)  # 4 images in batches of 2: 2 steps per epoch, evaluated after each
    evaluations = [entry for entry in result.log_history if "eval_map" in entry]
    output = capsys.readouterr().out
    if stops_after is None:
        assert result.stop_reason == "completed" and result.global_step == 2 * epochs
        assert [entry["epoch"] for entry in evaluations] == list(range(1, epochs + 1))
        assert "early stopping" not in output
        assert [entry["step"] for entry in result.log_history if "loss" in entry] == [4, 8, 12]
        return
    assert result.stop_reason == "early_stopping"
    assert result.global_step == 2 * stops_after and len(calls) == stops_after  # and no evaluation more at the end
    assert [entry["epoch"] for entry in evaluations] == list(range(1, stops_after + 1))
    message = "early stopping at step 10: eval_map has not improved for 3 evaluations; the best, 0.3, was at step 4"
    assert message in output
    assert result.metrics["map"] == 0.29 and (tmp_path / "model.safetensors").is_file()  # the model at the stop
    # the losses since the last logging step are logged at the stop, and the record is in the last checkpoint
    assert [entry["step"] for entry in result.log_history if "loss" in entry] == [4, 8, 10]
    state = json.loads((tmp_path / "checkpoints" / "step_10" / "trainer_state.json").read_text())
    assert (state["best_metric"], state["best_step"], state["evaluations_since_best"]) == (0.3, 4, 3)


def test_options_are_checked_before_training(tmp_path, shapes) -> None:
    for decay in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=rf"ema_decay={decay} is invalid: the decay is in \(0, 1\)"):
            tiny_config(tmp_path, max_steps=1, ema_decay=decay)
    with pytest.raises(ValueError, match="early_stopping_patience=2 is invalid: .* give an eval_split"):
        tiny_config(tmp_path, max_steps=1, early_stopping_patience=2)
    with pytest.raises(ValueError, match="early_stopping_patience=0 is invalid"):
        tiny_config(tmp_path, max_steps=1, early_stopping_patience=0, eval_split="validation")
    with pytest.raises(ValueError, match=r"metric_for_best_model='eval_map' is not a metric .* \['map', 'map_50'"):
        train(
            tiny_config(
                tmp_path,
                max_steps=1,
                eval_split="validation",
                early_stopping_patience=2,
                metric_for_best_model="eval_map",
            ),
            dataset=shapes,
        )
    reset_accelerator()
    empty = make_synthetic_dataset(4, 0, 0, image_size=64, seed=0)
    with pytest.raises(ValueError, match="'validation' has no images to evaluate on"):
        train(tiny_config(tmp_path, max_steps=1, eval_split="validation", early_stopping_patience=2), dataset=empty)


# ------------------------------------------------------------------------------- the Trainer example


TINY = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=8)


@pytest.fixture(scope="module")
def start_model(tmp_path_factory) -> str:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("start")
    HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs(**TINY, id2label=ID2LABEL))).save_pretrained(folder)
    return str(folder)


def example_args(start_model: str, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path",
        start_model,
        "--output_dir",
        str(output_dir),
        "--dataset",
        "synthetic",
        "--synthetic_train_size",
        "4",
        "--synthetic_eval_size",
        "2",
        "--synthetic_image_size",
        "64",
        "--image_size",
        "64",
        "--do_train",
        "--num_train_epochs",
        "8",
        "--per_device_train_batch_size",
        "2",
        "--per_device_eval_batch_size",
        "2",
        "--learning_rate",
        "1e-3",
        "--backbone_learning_rate",
        "0",
        "--use_cpu",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        *extra,
    ]


def test_trainer_example_stops_early_and_keeps_the_best_checkpoint(start_model, tmp_path, monkeypatch) -> None:
    example = load_script(EXAMPLE)
    values = iter([0.1, 0.3, 0.2, 0.25, 0.29, 0.9, 0.9, 0.9])
    # the script's compute_metrics, scripted: one map per evaluation (Trainer logs it as eval_map)
    monkeypatch.setattr(
        example, "make_compute_metrics", lambda *args, **kwargs: lambda prediction: {"map": next(values)}
    )
    output_dir = tmp_path / "out"
    example.main(example_args(start_model, output_dir, "--early_stopping_patience", "3"))

    state = json.loads((output_dir / "trainer_state.json").read_text())
    evaluations = [entry for entry in state["log_history"] if "eval_map" in entry]
    assert [entry["eval_map"] for entry in evaluations] == [0.1, 0.3, 0.2, 0.25, 0.29]  # 8 epochs asked for
    assert state["global_step"] == 5 * 2  # 2 steps per epoch
    assert state["best_metric"] == 0.3 and Path(state["best_model_checkpoint"]).name == "checkpoint-4"
    saved, best = (
        load_file(output_dir / "model.safetensors"),
        load_file(Path(state["best_model_checkpoint"]) / "model.safetensors"),
    )
    final = load_file(output_dir / "checkpoint-10" / "model.safetensors")
    assert all(torch.equal(saved[name], best[name]) for name in saved)  # the best model is the one saved
    assert any(not torch.equal(saved[name], final[name]) for name in saved)  # which is not the last one

    for extra, message in (
        (["--early_stopping_patience", "0"], "at least 1 evaluation"),
        (
            ["--early_stopping_patience", "2", "--load_best_model_at_end", "false"],
            "needs --load_best_model_at_end true",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            example.main(example_args(start_model, tmp_path / "bad", *extra))

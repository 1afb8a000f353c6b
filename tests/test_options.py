"""One options schema (issue 24): every `hf-detr` subcommand's `--help` shows underscore-style long options only, and
every long option parses in its dash spelling too; renamed options keep their old spelling as a warning alias."""

from __future__ import annotations

import argparse
import copy
import re
import warnings

import pytest

from hf_detr.apps.cli import build_parser
from hf_detr.training.config import TrainConfig
from hf_detr.training.options import OptionsParser

# the short options the commands document
SHORT_OPTIONS = {"-h"}
# positional arguments, for parsing one option at a time
POSITIONALS = {
    "convert": ["--from", "original", "source.pth", "out"],
    "predict": ["model", "image.png"],
    "train": ["--output_dir", "out", "--max_steps", "1"],
    "evaluate": ["model", "--dataset", "synthetic"],
    "demo": [],
    "check-data": ["synthetic"],
    "app": ["model"],
    "export": ["model", "out"],
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _value(action: argparse.Action) -> list[str]:
    """A valid value for the option (none for a flag that takes none)."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [str(next(iter(action.choices)))]
    kind = action.type
    if kind in (int, float):
        return ["1"]
    if action.dest == "model_kwargs":
        return ['{"d_model": 64}']
    if action.nargs == "?" and action.const is True:  # HfArgumentParser's booleans
        return ["true"]
    return ["x"]


def _option_texts(parser: argparse.ArgumentParser) -> list[str]:
    """What `--help` shows of the options: the usage and each option's invocation (not the prose)."""
    formatter = parser._get_formatter()
    texts = [parser.format_usage()]
    texts += [formatter._format_action_invocation(a) for a in parser._actions if a.help != argparse.SUPPRESS]
    return texts


def test_every_subcommand_is_listed():
    assert set(_subparsers(build_parser())) == set(POSITIONALS)


@pytest.mark.parametrize("command", sorted(POSITIONALS))
def test_help_shows_one_style_and_every_option_parses_with_dashes(command, capsys):
    parser = _subparsers(build_parser())[command]
    shown = set()
    for option_text in _option_texts(parser):
        shown |= set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", option_text))
    long_shown = {option for option in shown if option.startswith("--")}
    assert not {option for option in long_shown if "-" in option[2:]}, "dash-style options in --help"
    assert {option for option in shown if not option.startswith("--")} <= SHORT_OPTIONS
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or not action.option_strings or action.dest == "help":
            continue
        for option in action.option_strings:
            if not option.startswith("--"):
                continue
            dashed = "--" + option[2:].replace("_", "-")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                args, unknown = parser.parse_known_args([*POSITIONALS[command], dashed, *_value(action)])
            assert unknown == [], (command, dashed)
            assert getattr(args, action.dest) is not None or action.default is None, (command, dashed)


@pytest.mark.parametrize("command", sorted(POSITIONALS))
def test_help_gives_each_option_its_own_text_and_one_default(command):
    parser = _subparsers(build_parser())[command]
    formatter = parser._get_formatter()
    helps = {}
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or not action.option_strings or action.dest == "help":
            continue
        assert action.help, (command, action.option_strings, "no help")
        shown = copy.copy(action)
        shown.help = formatter._get_help_string(action)
        text = formatter._expand_help(shown)
        # the "(default: X)" argparse appends, after a help that explains its own default, would say it twice
        assert text.count("default:") <= 1, (command, text)
        helps.setdefault(text, []).append(action.option_strings[0])
    assert not {text: names for text, names in helps.items() if len(names) > 1}, "options sharing one help"


@pytest.mark.parametrize(
    ("argv", "dest", "value", "new"),
    [
        (
            ["predict", "m", "i.png", "--batch-size", "4"],
            "per_device_eval_batch_size",
            4,
            "--per_device_eval_batch_size",
        ),
        (["predict", "m", "i.png", "--no-progress"], "disable_tqdm", True, "--disable_tqdm"),
        (["evaluate", "m", "--dataset", "d", "--batch_size", "2"], "per_device_eval_batch_size", 2, None),
        (["export", "m", "o", "--batch-size", "2"], "per_device_eval_batch_size", 2, None),
        (
            ["train", "--output_dir", "o", "--max_steps", "1", "--synthetic_num_train", "5"],
            "synthetic_train_size",
            5,
            None,
        ),
    ],
)
def test_old_spellings_parse_and_warn_naming_the_new_flag(argv, dest, value, new):
    with pytest.warns(FutureWarning, match=f"is deprecated: use {new or '--' + dest}"):
        args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value


def test_the_old_spellings_are_hidden(capsys):
    _subparsers(build_parser())["predict"].print_help()
    out = capsys.readouterr().out
    assert "--per_device_eval_batch_size" in out
    assert not {"--batch_size", "--batch-size", "--no_progress", "--no-progress"} & set(out.split())


def test_the_trainer_example_shares_train_options():
    parser = OptionsParser(TrainConfig)
    (config,) = parser.parse_args_into_dataclasses(
        ["--output-dir", "o", "--max-steps", "2", "--box-tolerance", "2.5", "--model", "demo"], look_for_args_file=False
    )
    assert (config.output_dir, config.max_steps, config.box_tolerance, config.model_name_or_path) == (
        "o",
        2,
        2.5,
        "demo",
    )

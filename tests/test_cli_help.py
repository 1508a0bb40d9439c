"""The CLI teaches: every command has an example block and a full summary, every option says what it does, and one
vocabulary runs across commands (old spellings still work, hidden)."""

from __future__ import annotations

import json

import click
import pytest

from abswin_convert import families
from abswin_convert.cli import main
from abswin_convert.demo import example_path
from abswin_convert.vocabulary import FAMILY_NAMES

COMMANDS = sorted(main.commands)


def test_the_help_family_list_is_the_registry():
    assert set(FAMILY_NAMES) == set(families.NAMES)


def test_top_level_help_lists_every_command_with_a_whole_summary(cli):
    result = cli("--help")
    assert result.exit_code == 0 and "Examples:" in result.output
    for name in COMMANDS:
        line = next(line for line in result.output.splitlines() if line.strip().startswith(name + " "))
        assert not line.rstrip().endswith("..."), line


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help(name):
    command = main.commands[name]
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts} has no help"


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "zoo"])  # zoo's help belongs to the zoo module
def test_every_command_shows_examples(cli, name):
    result = cli(name, "--help")
    assert result.exit_code == 0
    examples = result.output.split("Examples:")[1].split("Options:")[0]
    assert examples.count(f"abswin-convert {name}") >= 2


def test_source_may_be_a_hub_name_and_choices_are_listed(cli):
    text = cli("convert", "--help").output
    assert "Hugging Face Hub name" in text and "[baked|timm-abswin|sam2]" in text
    assert "[hiera|sam|vitdet|sam2|generic]" in " ".join(text.split())


@pytest.mark.parametrize("command, old, new", [
    ("convert", "--to", "--target"), ("eval", "--limit", "--eval-limit"), ("demo", "--out", "--output"),
])
def test_old_spellings_are_hidden_but_still_accepted(cli, command, old, new):
    text = cli(command, "--help").output
    assert new in text and f"{old} " not in text and f"{old}," not in text


def test_the_old_to_spelling_still_converts(cli, tmp_path):
    old = cli("convert", example_path(), "-o", tmp_path / "old", "--img-size", 128, "--to", "timm-abswin", "--json")
    new = cli("convert", example_path(), "-o", tmp_path / "new", "--img-size", 128, "--target", "timm-abswin", "--json")
    assert old.exit_code == new.exit_code == 0
    targets = [json.loads(r.output)["metadata"]["abswin.target"] for r in (old, new)]
    assert targets == ["timm-abswin", "timm-abswin"]


def test_eval_defaults_to_the_converted_size_and_refuses_a_non_square_one(cli, tmp_path):
    assert cli("convert", example_path(), "-o", tmp_path / "c", "--img-size", 128).exit_code == 0
    result = cli("eval", tmp_path / "c", "--data", "fashion-mnist", "--limit", 16, "--device", "cpu", "-q", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["img_size"] == 128
    bad = cli("eval", tmp_path / "c", "--data", "fashion-mnist", "--img-size", "128x256")
    assert bad.exit_code == 2
    assert bad.stderr == ("abswin-convert: error: eval and finetune build square models; pass a square --img-size such as "
                          "256, not 128x256\n")


def test_eval_without_a_recorded_size_names_the_flag(cli):
    bad = cli("eval", example_path(), "--data", "fashion-mnist")
    assert bad.exit_code == 2 and "no abswin.img_size in its metadata to default to; pass --img-size" in bad.stderr


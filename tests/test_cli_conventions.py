"""The CLI behaves like the tools users know: --version / -V, -h, bare `hawk` prints help, one name per concept
across commands, help text shown as written, --debug and the scorer choices listed, shell completion, and one
visual-token budget given as --ratio, --keep or --keep-tokens with the per-image kept counts reported."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer.main
from cli_helpers import run_cli
from tiny_models import random_image

from hawk_cli import __version__
from hawk_cli.cli.app import app
from hawk_cli.cli.options import SCORER_CHOICES

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [["run"], ["bench"], ["calibrate"], ["eval"], ["weights", "show"]]


def _command(path: list[str]):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _help(capsys, *path: str, flag: str = "--help") -> str:
    code, out, err = run_cli(capsys, *path, flag)
    assert code == 0 and err == "", err
    return out


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(capsys, flag):
    code, out, err = run_cli(capsys, flag)
    assert (code, out, err) == (0, f"hawk {__version__}\n", "")


@pytest.mark.parametrize("path", [[]] + COMMANDS + [["weights"]])
def test_dash_h_is_help_everywhere(capsys, path):
    assert _help(capsys, *path, flag="-h") == _help(capsys, *path, flag="--help")


@pytest.mark.parametrize("path", [[], ["weights"]])
def test_bare_command_group_prints_help_without_an_error(capsys, path):
    code, out, err = run_cli(capsys, *path)
    assert code == 0 and "Usage: hawk" in out and "error" not in err


@pytest.mark.parametrize("path", COMMANDS)
def test_every_command_lists_debug(capsys, path):
    assert "--debug" in _help(capsys, *path)


def _normalised(text: str) -> str:
    return re.sub(r"\s+", "", text)  # help wraps lines, also after a hyphen


@pytest.mark.parametrize("path", COMMANDS)
def test_help_text_is_shown_as_written(capsys, path):
    """Every option's help appears verbatim: brackets ('hawk-vlm[plot]', '[0, 1)') are not eaten as markup."""
    shown = _normalised(_help(capsys, *path))
    for param in _command(path).params:
        if getattr(param, "help", None) and not getattr(param, "hidden", False):
            assert _normalised(param.help) in shown, param.help


def test_the_markup_check_can_fail():
    """Negative control: rendered as Rich markup, a bracketed word vanishes, which the check above would see."""
    from rich.text import Text

    assert "[plot]" not in Text.from_markup("pip install 'hawk-vlm[plot]'").plain


def test_scorer_choices_in_help_are_the_registry(capsys):
    from hawk_cli.scorers import SCORERS

    assert set(SCORER_CHOICES) == set(SCORERS) - {"oracle"}  # oracle needs eval's ground truth
    for path in (["run"], ["bench"]):
        shown = _normalised(_help(capsys, *path))
        assert all(name in shown for name in SCORER_CHOICES)
    assert "oracle" in _normalised(_help(capsys, "eval"))


# One flag per concept, in every command that has the concept; the old names only as hidden aliases.
CONCEPTS = {
    "--batch-size": ["run", "bench", "calibrate", "eval"],
    "--ratio": ["run", "bench", "eval"],
    "--scorer": ["run", "bench", "eval"],
    "--limit": ["calibrate", "eval"],
    "-n": ["calibrate", "eval"],
    "--max-new-tokens": ["run", "bench", "calibrate"],
    "--model": ["run", "bench", "calibrate", "eval"],
    "--json": ["run", "bench", "calibrate", "eval"],
    "--debug": ["run", "bench", "calibrate", "eval"],
}
OLD_NAMES = ("--batch", "--ratios", "--methods", "--questions")


def test_one_name_per_concept_across_commands():
    for flag, commands in CONCEPTS.items():
        for name in commands:
            visible = {o for p in _command([name]).params if not getattr(p, "hidden", False) for o in p.opts}
            assert flag in visible, (name, flag)
    for name in ("run", "bench", "calibrate", "eval"):
        visible = {o for p in _command([name]).params if not getattr(p, "hidden", False) for o in p.opts}
        assert not visible & set(OLD_NAMES), name


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["eval", "--ratios", "0.5,2"], "--ratio must be in [0, 1), got 2.0"),
        (["eval", "--methods", "bogus"], "unknown scorer 'bogus'"),
        (["eval", "--questions", "0"], "-n must be at least 1"),
        (["bench", "--batch", "0"], "batch sizes must be at least 1, got [0]"),
    ],
)
def test_old_names_still_work(capsys, argv, fragment):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and fragment in err


def test_shell_completion_is_installable_and_completes(capsys):
    """`hawk --install-completion` writes the script for the user's shell (detected from the parent processes); the
    script calls hawk with _HAWK_COMPLETE set, which is the protocol checked here."""
    shown = _normalised(_help(capsys))
    assert "--install-completion" in shown and "--show-completion" in shown
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-m", "hawk_cli"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "_HAWK_COMPLETE": "complete_bash", "COMP_WORDS": "hawk run --kee", "COMP_CWORD": "2"},
    )
    assert set(completed.stdout.split()) == {"--keep", "--keep-tokens"}
    script = subprocess.run(  # the script itself, for a shell named explicitly
        [sys.executable, "-m", "hawk_cli", "--show-completion", "bash"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"},
    )
    assert script.returncode == 0 and "_HAWK_COMPLETE=complete_bash" in script.stdout


# --- one budget: --ratio, --keep or --keep-tokens ------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("budget")
    random_image(224, 224, 1).save(folder / "big.png")  # 8x8 merged cells: 64 visual tokens in the tiny model
    random_image(112, 112, 2).save(folder / "small.png")  # 16 visual tokens
    return folder


def _record(capsys, model_dir, images, *flags):
    code, out, err = run_cli(
        capsys,
        "run",
        images / "big.png",
        images / "small.png",
        "what color ?",
        "-m",
        model_dir,
        "--max-new-tokens",
        1,
        "--json",
        *flags,
    )
    assert code == 0, err
    return json.loads(out)


def test_keep_is_the_complement_of_ratio(capsys, model_dir, images):
    kept = _record(capsys, model_dir, images, "--keep", "0.3")
    removed = _record(capsys, model_dir, images, "--ratio", "0.7")
    assert kept["visual_tokens_kept"] == removed["visual_tokens_kept"] == math.ceil(80 * 3 / 10) == 24
    assert kept["ratio"] == 0.7 and kept["answer"] == removed["answer"]


@pytest.mark.parametrize("budget, expected", [(10, 10), (1, 1), (1000, 80)])
def test_keep_tokens_keeps_that_many_and_reports_them_per_image(capsys, model_dir, images, budget, expected):
    record = _record(capsys, model_dir, images, "--keep-tokens", budget)
    assert record["visual_tokens_kept"] == expected and record["keep_tokens"] == budget and record["ratio"] is None
    assert record["visual_tokens_per_image"] == [64, 16]
    assert sum(record["visual_tokens_kept_per_image"]) == expected
    assert all(0 <= k <= n for k, n in zip(record["visual_tokens_kept_per_image"], [64, 16], strict=True))


def test_the_stats_line_shows_the_budget_and_each_images_kept_count(capsys, model_dir, images):
    code, _, err = run_cli(
        capsys,
        "run",
        images / "big.png",
        images / "small.png",
        "what color ?",
        "-m",
        model_dir,
        "--max-new-tokens",
        1,
        "--keep-tokens",
        10,
    )
    match = re.search(r"kept 10/80 visual tokens \(keep-tokens 10; per image (\d+)/64, (\d+)/16\)", err)
    assert code == 0 and match and int(match.group(1)) + int(match.group(2)) == 10, err


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--ratio", "0.5", "--keep", "0.5"], "--ratio and --keep each set the visual-token budget"),
        (["--keep", "0.2", "--keep-tokens", "5"], "--keep and --keep-tokens each set the visual-token budget"),
        (["--keep", "0"], "--keep must be in (0, 1], got 0.0"),
        (["--keep-tokens", "0"], "--keep-tokens must be at least 1, got 0"),
    ],
)
def test_budget_flags_exclude_each_other_before_the_model_loads(capsys, tmp_path, images, flags, fragment):
    code, out, err = run_cli(capsys, "run", images / "big.png", "q ?", "-m", tmp_path / "no-model", *flags)
    assert code == 2 and out == "" and fragment in err


def test_jsonl_lines_take_keep_and_keep_tokens(capsys, model_dir, images, tmp_path):
    requests = tmp_path / "r.jsonl"
    requests.write_text(
        "".join(
            json.dumps(row) + "\n"
            for row in [
                {"id": "tokens", "images": ["big.png", "small.png"], "question": "what ?", "keep_tokens": 5},
                {"id": "keep", "images": ["big.png"], "question": "what ?", "keep": 0.5},
                {"id": "both", "images": ["big.png"], "question": "what ?", "keep": 0.5, "ratio": 0.5},
                {"id": "default", "images": ["small.png"], "question": "what ?"},
            ]
        )
        .replace("big.png", str(images / "big.png"))
        .replace("small.png", str(images / "small.png"))
    )
    code, out, _ = run_cli(
        capsys,
        "run",
        "--input",
        requests,
        "-m",
        model_dir,
        "--max-new-tokens",
        1,
        "--batch-size",
        4,
        "--keep-tokens",
        3,
    )
    records = {r["id"]: r for r in map(json.loads, out.splitlines())}
    assert code == 1
    assert records["tokens"]["visual_tokens_kept"] == 5 and sum(records["tokens"]["visual_tokens_kept_per_image"]) == 5
    assert records["keep"]["visual_tokens_kept"] == 32 and records["keep"]["ratio"] == 0.5
    assert "'ratio' and 'keep' all set the visual-token budget" in records["both"]["error"]
    assert records["default"]["visual_tokens_kept"] == 3 and records["default"]["keep_tokens"] == 3  # the flag's


def test_kept_per_image_splits_the_keep_mask_at_image_boundaries():
    from hawk_cli.engine.results import grid_blocks, visual_blocks
    from hawk_cli.engine.session import Answer

    flags = torch.tensor([0, 1, 1, 1, 0, 0, 1, 1, 0, 1], dtype=torch.bool)  # text, 3 image tokens, 2, then 1
    assert visual_blocks(flags) == (3, 2, 1)
    assert grid_blocks(((1, 2, 6), (2, 2, 4), (1, 2, 2)), merge_size=2) == (3, 4, 1)  # t*h*w / merge^2 per grid
    answer = Answer(
        text="",
        tokens=[],
        stats=None,
        visual_keep=torch.tensor([1, 0, 1, 0, 0, 1], dtype=torch.bool),
        visual_blocks=(3, 2, 1),
    )
    assert answer.kept_per_block() == (2, 0, 1)
    assert Answer(text="", tokens=[], stats=None, visual_blocks=(3, 2, 1)).kept_per_block() == (3, 2, 1)  # unpruned

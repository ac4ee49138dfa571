"""Command lines as users expect: one spelling per option with its aliases, each default stated once,
every entry point answers --help."""

from __future__ import annotations

import contextlib
import io
import runpy
import sys

import pytest

import test_models
from ops.train_args import get_args_parser
from tests.helpers import REPO

TOOLS = sorted(p for p in (REPO / "tools").glob("*.py") if p.name != "__init__.py")


def test_main_accepts_the_other_spellings_of_its_options():
    args = get_args_parser().parse_args([
        "x", "RGB", "--batch_size", "3", "--input_size", "100", "--eval_freq", "2", "--lmdb_path", "/store",
        "--lr-steps", "3", "4", "--fc-lr5", "--no_VAP", "--weight_decay", "0.01"])
    assert (args.batch_size, args.crop_size, args.eval_freq, args.lmdb) == (3, 100, 2, "/store")
    assert (args.lr_steps, args.fc_lr5, args.VAP, args.weight_decay) == ([3.0, 4.0], True, False, 0.01)
    assert get_args_parser().parse_args(["x", "RGB", "--fc-lr5", "--no-fc-lr5"]).fc_lr5 is False


def test_test_models_accepts_the_other_spellings_of_its_options():
    args = test_models.get_args_parser().parse_args([
        "x", "--weights", "w", "--batch-size", "4", "--crop_size", "96", "--test-crops", "3", "--skip_bad",
        "--output-dir", "out", "--lmdb_path", "/store"])
    assert (args.batch_size, args.input_size, args.test_crops, args.skip_bad) == (4, 96, 3, True)
    assert (args.output_dir, args.lmdb) == ("out", "/store")


@pytest.mark.parametrize("parser", [get_args_parser(), test_models.get_args_parser()], ids=["main", "test_models"])
def test_help_states_each_default_once(parser):
    text = parser.format_help()
    assert "(default: None)" not in text
    for action in parser._actions:
        helped = parser._get_formatter()._get_help_string(action) if action.help else ""
        assert helped.count("default:") <= 1, (action.option_strings, helped)  # one statement of it


@pytest.mark.parametrize("tool", TOOLS, ids=lambda p: p.name)
def test_every_tool_answers_help(tool, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(tool), "--help"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        runpy.run_path(str(tool), run_name="__main__")
    assert stop.value.code == 0 and out.getvalue().startswith("usage:"), out.getvalue()[:300]


@pytest.mark.parametrize("tool, canonical, other, dest, value", [
    ("bench_pa", "--num_segments", "--segments", "segments", "4"),
    ("visualize_pa", "--num_segments", "--segments", "segments", "4"),
    ("make_synthetic", "--output_dir", "--out", "out", "/tmp/x"),
    ("build_lmdb", "--output_dir", "--output", "output", "/tmp/x"),
    ("export", "--out", "--output", "output", "/tmp/x"),
    ("demo", "--repeats", "--repeat", "repeat", "3"),
])
def test_tools_share_the_projects_option_names_and_keep_their_old_ones(tool, canonical, other, dest, value):
    """One name across the project (--num_segments, --output_dir for folders, --out for files, --repeats),
    the tool's earlier name accepted as an alias."""
    import importlib

    parser = importlib.import_module(f"tools.{tool}").get_args_parser()
    required = {"visualize_pa": ["in.mp4", "--out", "o.png"], "build_lmdb": ["--list_file", "l.txt"],
                "export": ["--weights", "w.pth"], "demo": ["in.mp4", "--weights", "w.pth"]}.get(tool, [])
    if tool == "build_lmdb":
        required = [*required, "--root_path", "/r"]
    for flag in (canonical, other):
        argv = [a for a in required if a != canonical] + [flag, value]
        if tool == "visualize_pa" and flag in ("--out", "--output"):
            argv = ["in.mp4", flag, value]
        args = parser.parse_args(argv)
        assert str(getattr(args, dest)) == value, (flag, argv)
    assert canonical in parser.format_help() and other not in parser.format_help().replace(canonical, "")


LIGHT_TOOLS = ["check_data", "compare_models", "gen_label", "make_synthetic", "plot_run"]


@pytest.mark.parametrize("tool", LIGHT_TOOLS)
def test_help_of_tools_that_need_no_model_does_not_import_torch(tool):
    """Their --help answers at once (torch takes a second or more to import)."""
    import subprocess

    probe = (f"import runpy, sys\nsys.argv = [{str(REPO / 'tools' / (tool + '.py'))!r}, '--help']\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().endswith("False"), out.stdout[-500:]

"""The one data check (ops.dataset.check_lists) behind main.py --check-data and tools/check_data.py.

Problems are structured (:class:`ops.dataset.Problem`) and print as before,
``file:line: path: reason``; a list file with bad lines carries its good records,
so main.py checks their files without matching error strings.
"""

from __future__ import annotations

from argparse import Namespace
from types import SimpleNamespace

import pytest

import main
from ops.dataset import ListFileError, Problem, check_lists, parse_list_file
from tests.helpers_data import make_frames
from tools import build_lmdb, check_data


def test_a_problem_prints_as_file_line_path_reason():
    assert str(Problem("l.txt", 3, "frames/a", "frame folder does not exist")) == \
        "l.txt:3: frames/a: frame folder does not exist"
    assert str(Problem("l.txt", 3, None, "label 9 is outside [0, 2)")) == "l.txt:3: label 9 is outside [0, 2)"
    assert str(Problem("l.txt", None, None, "list file has no entries")) == "l.txt: list file has no entries"


def test_a_list_file_error_carries_structured_problems_and_the_good_records(tmp_path):
    lf = tmp_path / "l.txt"
    lf.write_text("a 3 0\nbroken\nb 2 5\nc 4 1\n")
    with pytest.raises(ListFileError) as err:
        parse_list_file(str(lf), num_class=2)
    assert [(p.line, p.path) for p in err.value.details] == [(2, None), (3, None)]
    assert err.value.problems == [str(p) for p in err.value.details]
    assert err.value.problems[1] == f"{lf}:3: label 5 is outside [0, 2)"
    assert [(r.path, r.line) for r in err.value.records] == [("a", 1), ("c", 4)]


@pytest.fixture
def lists(tmp_path):
    make_frames(tmp_path / "frames" / "a", 3)
    make_frames(tmp_path / "frames" / "c", 3)
    (tmp_path / "frames" / "c" / "img_00002.jpg").write_bytes(b"not a jpeg")  # seen by the full check only
    (tmp_path / "one.txt").write_text("frames/a 3 0\nframes/gone 3 0\nbroken line\n")
    (tmp_path / "two.txt").write_text("frames/c 3 1\nframes/a 3 1\n")
    return tmp_path


def test_bad_lines_and_files_list_by_list(lists):
    one, two = str(lists / "one.txt"), str(lists / "two.txt")
    report = check_lists([one, two], str(lists), num_class=2)
    assert [(p.list_file, p.line) for p in report.problems] == [(one, 3), (one, 2)]  # two.txt: quick is fine
    assert report.problems[1].path == str(lists / "frames" / "gone") and report.num_videos == 4
    full = check_lists([one, two], str(lists), num_class=2, files="full")
    assert [(p.list_file, p.line) for p in full.problems] == [(one, 3), (one, 2), (two, 1)]
    assert full.problems[2].path.endswith("c/img_00002.jpg") and "not a readable image" in full.problems[2].reason
    # The tool's choice: a list with bad lines gets its files checked once fixed.
    tool = check_lists([one, two], str(lists), num_class=2, files="full", files_of_bad_lists=False)
    assert [(p.list_file, p.line) for p in tool.problems] == [(one, 3), (two, 1)] and tool.num_videos == 2
    off = check_lists([one, two], str(lists), num_class=2, files="off")
    assert [(p.list_file, p.line) for p in off.problems] == [(one, 3)]


def test_main_and_the_tool_report_the_same_problems_of_good_lists(lists, tmp_path):
    (lists / "one.txt").write_text("frames/a 3 0\nframes/gone 3 0\n")
    (lists / "two.txt").write_text("frames/a 3 1\nframes/a 4 1\n")
    cfg = SimpleNamespace(train_list=str(lists / "one.txt"), val_list=str(lists / "two.txt"), num_class=2,
                          root_path=str(lists), image_tmpl="img_{:05d}.jpg", video=False)
    args = Namespace(check_data="quick", workers=1, lmdb=None)
    with pytest.raises(main.DataCheckError) as err:
        main.check_data(cfg, args, str(tmp_path / "report.txt"))
    tool = check_data.main(check_data.get_args_parser().parse_args(
        ["--root_path", str(lists), "--list_file", "one.txt", "--list_file", "two.txt", "--num_class", "2",
         "--workers", "1"]))
    assert err.value.problems == tool and len(tool) == 2
    assert all(isinstance(p, Problem) for p in err.value.details)
    assert (tmp_path / "report.txt").read_text().splitlines() == tool


@pytest.mark.parametrize("flag", ["--lmdb", "--lmdb_path"])
def test_the_tool_takes_lmdb_as_main_does_and_lmdb_path_still(lists, flag):
    (lists / "ok.txt").write_text("frames/a 3 0\n")
    store = lists / "s.lmdb"
    build_lmdb.main(build_lmdb.get_args_parser().parse_args(
        ["--root_path", str(lists), "--list_file", "ok.txt", "--output", str(store), "--workers", "1"]))
    (lists / "more.txt").write_text("frames/a 3 0\nframes/b 2 0\n")
    argv = ["--root_path", str(lists), "--list_file", "more.txt", "--workers", "1", flag, str(store)]
    problems = check_data.main(check_data.get_args_parser().parse_args(argv))
    assert problems == [f"{lists / 'more.txt'}:2: {store}:frames/b/img_00001.jpg: missing frame",
                        f"{lists / 'more.txt'}:2: {store}:frames/b/img_00002.jpg: missing frame"]

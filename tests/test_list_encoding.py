"""List, annotation and label files that are not plain UTF-8.

A list file that is not UTF-8 is a ListFileError naming the file, the line and the byte
offset (it used to be a bare UnicodeDecodeError), and the data check reports it with the
other problems. A leading UTF-8 byte-order mark (what some Windows editors write) is
accepted in list files and in the annotation CSV/JSON/text files tools/gen_label.py reads
(it used to become part of the first path, class or header).
"""

from __future__ import annotations

import json
from argparse import Namespace
from types import SimpleNamespace

import pytest

import main
from ops.dataset import ListFileError, TSNDataSet, check_records, parse_list_file
from ops.dataset_config import load_categories
from tests.helpers_data import make_frames
from tools import check_data, gen_label

BOM = b"\xef\xbb\xbf"


def run(module, argv):
    return module.main(module.get_args_parser().parse_args([str(a) for a in argv]))


# ------------------------------------------------------------------ list files


def test_a_list_file_that_is_not_utf8_names_the_file_line_and_byte_offset(tmp_path):
    lf = tmp_path / "l.txt"
    lf.write_bytes(b"frames/a 3 0\nframes/caf\xe9 3 0\nframes/b 3 1\n")  # Latin-1, as some tools save
    with pytest.raises(ListFileError) as err:
        parse_list_file(str(lf))
    assert len(err.value.problems) == 1
    problem = err.value.details[0]
    assert (problem.list_file, problem.line) == (str(lf), 2)
    assert "not UTF-8" in problem.reason and "byte 0xe9" in problem.reason and "byte offset 23" in problem.reason
    assert str(err.value.problems[0]).startswith(f"{lf}:2: ")
    assert [r.line for r in err.value.records] == [1, 3]  # the other lines are still read


def test_the_byte_offset_counts_a_byte_order_mark_and_every_bad_line_is_named(tmp_path):
    lf = tmp_path / "l.txt"
    lf.write_bytes(BOM + b"x 1 0\r\n\xff 1 0\r\nok 1 0\r\ny\xc3 1 0\r\n")
    with pytest.raises(ListFileError) as err:
        parse_list_file(str(lf))
    assert [(p.line, p.reason.split("byte offset ")[1].split()[0]) for p in err.value.details] == \
        [(2, "10"), (4, "26")]


def test_the_data_check_reports_a_non_utf8_list_with_the_other_problems(tmp_path, capsys):
    make_frames(tmp_path / "frames" / "a", 3)
    (tmp_path / "one.txt").write_bytes(b"frames/a 3 0\nframes/\xe9t\xe9 3 0\n")
    (tmp_path / "two.txt").write_text("frames/gone 3 0\n")
    problems = run(check_data, ["--root_path", tmp_path, "--list_file", "one.txt", "--list_file", "two.txt",
                                "--workers", 1])
    assert len(problems) == 2
    assert problems[0].startswith(f"{tmp_path / 'one.txt'}:2: ") and "not UTF-8" in problems[0]
    assert "frames/gone: frame folder does not exist" in problems[1]
    cfg = SimpleNamespace(train_list=str(tmp_path / "one.txt"), val_list=str(tmp_path / "two.txt"), num_class=None,
                          root_path=str(tmp_path), image_tmpl="img_{:05d}.jpg", video=False)
    with pytest.raises(main.DataCheckError) as err:
        main.check_data(cfg, Namespace(check_data="quick", workers=1, lmdb=None), None)
    assert err.value.problems == problems


def test_a_byte_order_mark_is_accepted_at_the_start_of_a_list_file(tmp_path):
    make_frames(tmp_path / "frames" / "a", 3)
    (tmp_path / "l.txt").write_bytes(BOM + "frames/a 3 0\n".encode())
    records = parse_list_file(str(tmp_path / "l.txt"))
    assert records[0].path == "frames/a"
    assert check_records(records, str(tmp_path), workers=1) == []
    assert TSNDataSet(str(tmp_path), str(tmp_path / "l.txt"), num_segments=1, mode="val")[0][0].shape[0] == 3


# ------------------------------------------------------------------ annotation files of gen_label


def bom_text(path, text: str) -> None:
    path.write_bytes(BOM + text.encode("utf-8"))


def frames_for(root, folders, n=2):
    for f in folders:
        make_frames(root / "frames" / f, n, size=(8, 8))


def listed(path) -> list[tuple[str, int, int]]:
    return [(r.path, r.num_frames, r.label) for r in parse_list_file(str(path))]


def test_gen_label_accepts_a_byte_order_mark_in_semicolon_csv_files(tmp_path):
    anno = tmp_path / "anno"
    anno.mkdir()
    bom_text(anno / "jester-v1-labels.csv", "Swiping Left\nSwiping Right\n")
    bom_text(anno / "jester-v1-train.csv", "10;Swiping Right\n")
    bom_text(anno / "jester-v1-validation.csv", "11;Swiping Left\n")
    frames_for(tmp_path, ["10", "11"])
    run(gen_label, ["jester", "--root_path", tmp_path, "--anno_dir", anno])
    assert load_categories(str(tmp_path / "category.txt")) == ["Swiping Left", "Swiping Right"]
    assert listed(tmp_path / "train_videofolder.txt") == [("frames/10", 2, 1)]


def test_gen_label_accepts_a_byte_order_mark_in_json_files(tmp_path):
    anno = tmp_path / "anno"
    anno.mkdir()
    bom_text(anno / "something-something-v2-labels.json", json.dumps({"Holding something": "0"}))
    for part, vid in (("train", "5"), ("validation", "6")):
        bom_text(anno / f"something-something-v2-{part}.json",
                 json.dumps([{"id": vid, "template": "Holding [something]", "placeholders": ["x"]}]))
    frames_for(tmp_path, ["5", "6"])
    run(gen_label, ["somethingv2", "--root_path", tmp_path, "--anno_dir", anno])
    assert listed(tmp_path / "val_videofolder.txt") == [("frames/6", 2, 0)]


def test_gen_label_accepts_a_byte_order_mark_in_the_kinetics_csv_header(tmp_path):
    anno = tmp_path / "anno"
    anno.mkdir()
    for part, row in (("train", "abseiling,abc,0,10,train"), ("val", "abseiling,def,5,15,val")):
        bom_text(anno / f"kinetics_{part}.csv", f"label,youtube_id,time_start,time_end,split\n{row}\n")
    frames_for(tmp_path, ["abseiling/abc_000000_000010", "abseiling/def_000005_000015"])
    run(gen_label, ["kinetics", "--root_path", tmp_path, "--anno_dir", anno])
    assert listed(tmp_path / "train_videofolder.txt") == [("frames/abseiling/abc_000000_000010", 2, 0)]


def test_gen_label_accepts_a_byte_order_mark_in_ucf101_and_hmdb51_text_files(tmp_path):
    anno = tmp_path / "ucf"
    anno.mkdir()
    bom_text(anno / "classInd.txt", "1 Archery\n")
    bom_text(anno / "trainlist01.txt", "Archery/v_a.avi 1\n")
    bom_text(anno / "testlist01.txt", "Archery/v_b.avi\n")
    frames_for(tmp_path, ["Archery/v_a", "Archery/v_b"])
    run(gen_label, ["ucf101", "--root_path", tmp_path, "--anno_dir", anno])
    assert listed(tmp_path / "ucf101_train_split_1.txt") == [("frames/Archery/v_a", 2, 0)]

    hmdb = tmp_path / "hmdb"
    hmdb.mkdir()
    bom_text(hmdb / "brush_hair_test_split1.txt", "a.avi 1 \nb.avi 2 \n")
    frames_for(tmp_path, ["brush_hair/a", "brush_hair/b"])
    run(gen_label, ["hmdb51", "--root_path", tmp_path, "--anno_dir", hmdb])
    assert listed(tmp_path / "hmdb51_train_split_1.txt") == [("frames/brush_hair/a", 2, 0)]

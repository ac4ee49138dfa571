"""Hardening: Kinetics classes with spaces reach the lists; listed videos without frames fail gen_label.

Before: ``tools/vid2img.py --layout kinetics`` kept ``air drumming/``, ``tools/gen_label.py
kinetics`` looked for ``air_drumming/``, left those videos out and exited 0. The convention
(docs/DATA.md): class folders use ``_`` for spaces, in both tools.
"""

from __future__ import annotations

import pytest

from ops.dataset import parse_list_file
from ops.dataset_config import load_categories
from tests.helpers_data import make_frames, make_video
from tools import gen_label, vid2img

TRAIN_CSV = ("label,youtube_id,time_start,time_end,split\n"
             "air drumming,abc,14,24,train\nabseiling,def,0,10,train\n")
VAL_CSV = "label,youtube_id,time_start,time_end,split\nair drumming,ghi,5,15,val\n"


def run(module, argv):
    return module.main(module.get_args_parser().parse_args([str(a) for a in argv]))


def annotations(tmp_path, train_csv=TRAIN_CSV, val_csv=VAL_CSV):
    anno = tmp_path / "anno"
    anno.mkdir(exist_ok=True)
    (anno / "kinetics_train.csv").write_text(train_csv)
    (anno / "kinetics_val.csv").write_text(val_csv)
    return anno


def listed(root, name):
    return [(r.path, r.num_frames, r.label) for r in parse_list_file(str(root / name))]


def test_vid2img_and_gen_label_agree_on_class_folders_with_spaces(tmp_path):
    videos = tmp_path / "videos"
    make_video(videos / "air drumming" / "abc_000014_000024.mp4", 4)
    make_video(videos / "air drumming" / "ghi_000005_000015.mp4", 3)
    make_video(videos / "abseiling" / "def_000000_000010.mp4", 5)
    counts = run(vid2img, [videos, tmp_path / "frames", "--layout", "kinetics", "--workers", 1])
    assert sorted(counts) == ["abseiling/def_000000_000010", "air_drumming/abc_000014_000024",
                              "air_drumming/ghi_000005_000015"]
    report = run(gen_label, ["kinetics", "--root_path", tmp_path, "--anno_dir", annotations(tmp_path)])
    assert load_categories(str(tmp_path / "category.txt")) == ["abseiling", "air drumming"]  # names keep spaces
    assert listed(tmp_path, "train_videofolder.txt") == [("frames/air_drumming/abc_000014_000024", 4, 1),
                                                         ("frames/abseiling/def_000000_000010", 5, 0)]
    assert listed(tmp_path, "val_videofolder.txt") == [("frames/air_drumming/ghi_000005_000015", 3, 1)]
    assert report["train_videofolder.txt"]["without_frames"] == []


def test_listed_videos_without_frames_fail_unless_allowed_and_are_counted(tmp_path, capsys):
    anno = annotations(tmp_path)
    make_frames(tmp_path / "frames" / "air_drumming" / "abc_000014_000024", 3, size=(8, 8))
    make_frames(tmp_path / "frames" / "abseiling" / "def_000000_000010", 3, size=(8, 8))
    with pytest.raises(SystemExit, match=r"(?s)1 of 3 listed videos have no frames.*frames/air_drumming/ghi_000005_000015"
                                         r".*--allow-missing"):
        run(gen_label, ["kinetics", "--root_path", tmp_path, "--anno_dir", anno])
    assert not (tmp_path / "train_videofolder.txt").exists() and not (tmp_path / "category.txt").exists()
    report = run(gen_label, ["kinetics", "--root_path", tmp_path, "--anno_dir", anno, "--allow-missing"])
    assert report["val_videofolder.txt"] == {"videos": 0, "without_frames": ["frames/air_drumming/ghi_000005_000015"]}
    assert "val_videofolder.txt: 0 videos written, 1 without frames" in capsys.readouterr().out
    assert listed(tmp_path, "train_videofolder.txt")[0][0] == "frames/air_drumming/abc_000014_000024"


def test_a_class_without_any_frames_fails_even_when_missing_videos_are_allowed(tmp_path):
    anno = annotations(tmp_path)
    # The frames were extracted with spaces kept (an older vid2img): every 'air drumming' video is missing.
    make_frames(tmp_path / "frames" / "air drumming" / "abc_000014_000024", 3, size=(8, 8))
    make_frames(tmp_path / "frames" / "abseiling" / "def_000000_000010", 3, size=(8, 8))
    with pytest.raises(SystemExit, match=r"(?s)class 'air drumming'.*none of its 2 videos.*"
                                         r"frames/air_drumming/abc_000014_000024"):
        run(gen_label, ["kinetics", "--root_path", tmp_path, "--anno_dir", anno, "--allow-missing"])

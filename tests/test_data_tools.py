"""Preparation tools, driven through their argument parsers on files the tests write."""

import json
import os

import pytest
from PIL import Image

from ops.dataset import parse_list_file
from ops.dataset_config import load_categories
from tests.helpers_data import make_frames, make_video
from tools import bench_transforms, check_data, gen_label, vid2img


def run(module, argv):
    return module.main(module.get_args_parser().parse_args([str(a) for a in argv]))


class TestVid2Img:
    def test_tree_layout_counts_and_resumes(self, tmp_path, capsys):
        src, dst = tmp_path / "videos", tmp_path / "frames"
        make_video(src / "abseiling" / "x1.mp4", 12)
        make_video(src / "abseiling" / "x2.mp4", 7)
        make_video(src / "air drumming" / "y.mp4", 9, size=(80, 48))
        counts = run(vid2img, [src, dst, "--layout", "kinetics", "--workers", 2, "--counts_file", tmp_path / "c.txt"])
        assert counts == {"abseiling/x1": 12, "abseiling/x2": 7, "air_drumming/y": 9}
        assert sorted(os.listdir(dst / "abseiling" / "x2")) == [f"img_{i:05d}.jpg" for i in range(1, 8)]
        assert "abseiling/x1 12" in capsys.readouterr().out
        assert (tmp_path / "c.txt").read_text().splitlines()[2] == "air_drumming/y 9"

        # Resume: finished folders are skipped, a half-written one is redone.
        done = dst / "abseiling" / "x1" / "img_00001.jpg"
        mtime = done.stat().st_mtime_ns
        os.rename(dst / "abseiling" / "x2", dst / "abseiling" / "x2.part")
        (dst / "abseiling" / "x2.part" / "img_00007.jpg").unlink()
        counts = run(vid2img, [src, dst, "--layout", "kinetics", "--workers", 1])
        assert counts["abseiling/x2"] == 7 and not (dst / "abseiling" / "x2.part").exists()
        assert done.stat().st_mtime_ns == mtime

    def test_somethingv2_layout_resize_and_fps(self, tmp_path):
        src, dst = tmp_path / "v", tmp_path / "f"
        make_video(src / "101.webm", 10, size=(64, 48), codec="libvpx-vp9", fps=10)
        make_video(src / "skip.mp4", 4)
        counts = run(vid2img, [src, dst, "--layout", "somethingv2", "--short_side", 24, "--fps", 5, "--workers", 1])
        assert counts == {"101": 5}
        assert sorted(os.listdir(dst / "101"))[0] == "000001.jpg"
        assert Image.open(dst / "101" / "000001.jpg").size == (32, 24)

    def test_undecodable_video_fails_without_a_folder(self, tmp_path):
        src, dst = tmp_path / "v", tmp_path / "f"
        src.mkdir()
        (src / "bad.mp4").write_bytes(b"nope" * 100)
        with pytest.raises(SystemExit):
            run(vid2img, [src, dst, "--workers", 1])
        assert not (dst / "bad").exists() and not (dst / "bad.part").exists()


def frames_for(root, folders, n=3):
    for f in folders:
        make_frames(root / "frames" / f, n, size=(8, 8))


class TestGenLabel:
    def check(self, root, list_name, expected):
        recs = parse_list_file(str(root / list_name))
        assert [(r.path, r.num_frames, r.label) for r in recs] == expected

    def test_something_v1(self, tmp_path, capsys):
        anno = tmp_path / "anno"
        anno.mkdir()
        (anno / "something-something-v1-labels.csv").write_text("Holding something\nPushing something from left to right\n")
        (anno / "something-something-v1-train.csv").write_text("1;Pushing something from left to right\n2;Holding something\n")
        (anno / "something-something-v1-validation.csv").write_text("3;Holding something\n4;Holding something\n")
        frames_for(tmp_path, ["1", "2", "3"])
        report = run(gen_label, ["something", "--root_path", tmp_path, "--anno_dir", anno, "--allow-missing"])
        assert load_categories(str(tmp_path / "category.txt")) == ["Holding something", "Pushing something from left to right"]
        self.check(tmp_path, "train_videofolder.txt", [("frames/1", 3, 1), ("frames/2", 3, 0)])
        self.check(tmp_path, "val_videofolder.txt", [("frames/3", 3, 0)])
        assert report["val_videofolder.txt"]["without_frames"] == ["frames/4"]
        assert "no frames: frames/4" in capsys.readouterr().out

    def test_something_v2_resolves_placeholders(self, tmp_path):
        anno = tmp_path / "anno"
        anno.mkdir()
        (anno / "something-something-v2-labels.json").write_text(json.dumps(
            {"Putting something on a surface": "1", "Approaching something with your camera": "0"}))
        (anno / "something-something-v2-train.json").write_text(json.dumps([
            {"id": "78687", "label": "putting a cup on a table", "template": "Putting [something] on a surface",
             "placeholders": ["a cup"]}]))
        (anno / "something-something-v2-validation.json").write_text(json.dumps([
            {"id": "42", "label": "approaching keys with your camera",
             "template": "Approaching [something] with your camera", "placeholders": ["keys"]}]))
        frames_for(tmp_path, ["78687", "42"])
        run(gen_label, ["somethingv2", "--root_path", tmp_path, "--anno_dir", anno])
        assert load_categories(str(tmp_path / "category.txt"))[0] == "Approaching something with your camera"
        self.check(tmp_path, "train_videofolder.txt", [("frames/78687", 3, 1)])
        self.check(tmp_path, "val_videofolder.txt", [("frames/42", 3, 0)])

    def test_jester(self, tmp_path):
        anno = tmp_path / "anno"
        anno.mkdir()
        (anno / "jester-v1-labels.csv").write_text("Swiping Left\nSwiping Right\n")
        (anno / "jester-v1-train.csv").write_text("10;Swiping Right\n")
        (anno / "jester-v1-validation.csv").write_text("11;Swiping Left\n")
        frames_for(tmp_path, ["10", "11"])
        run(gen_label, ["jester", "--root_path", tmp_path, "--anno_dir", anno])
        self.check(tmp_path, "train_videofolder.txt", [("frames/10", 3, 1)])

    def test_kinetics(self, tmp_path):
        anno = tmp_path / "anno"
        anno.mkdir()
        (anno / "kinetics_train.csv").write_text(
            "label,youtube_id,time_start,time_end,split\n"
            "air drumming,abc,14,24,train\nabseiling,def,0,10,train\n")
        (anno / "kinetics_val.csv").write_text(
            "label,youtube_id,time_start,time_end,split\nabseiling,ghi,5,15,val\n")
        frames_for(tmp_path, ["air_drumming/abc_000014_000024", "abseiling/def_000000_000010",
                              "abseiling/ghi_000005_000015"])
        run(gen_label, ["kinetics", "--root_path", tmp_path, "--anno_dir", anno])
        assert load_categories(str(tmp_path / "category.txt")) == ["abseiling", "air drumming"]
        self.check(tmp_path, "train_videofolder.txt",
                   [("frames/air_drumming/abc_000014_000024", 3, 1), ("frames/abseiling/def_000000_000010", 3, 0)])
        self.check(tmp_path, "val_videofolder.txt", [("frames/abseiling/ghi_000005_000015", 3, 0)])

    def test_ucf101(self, tmp_path):
        anno = tmp_path / "ucfTrainTestlist"
        anno.mkdir()
        (anno / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
        (anno / "trainlist01.txt").write_text("Archery/v_Archery_g08_c01.avi 2\n")
        (anno / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
        frames_for(tmp_path, ["Archery/v_Archery_g08_c01", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01"])
        run(gen_label, ["ucf101", "--root_path", tmp_path, "--anno_dir", anno, "--split", 1])
        self.check(tmp_path, "ucf101_train_split_1.txt", [("frames/Archery/v_Archery_g08_c01", 3, 1)])
        self.check(tmp_path, "ucf101_val_split_1.txt", [("frames/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", 3, 0)])

    def test_hmdb51(self, tmp_path):
        anno = tmp_path / "splits"
        anno.mkdir()
        (anno / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
        (anno / "cartwheel_test_split1.txt").write_text("d.avi 1 \n")
        frames_for(tmp_path, ["brush_hair/a", "brush_hair/b", "cartwheel/d"])
        run(gen_label, ["hmdb51", "--root_path", tmp_path, "--anno_dir", anno])
        assert load_categories(str(tmp_path / "category.txt")) == ["brush_hair", "cartwheel"]
        self.check(tmp_path, "hmdb51_train_split_1.txt", [("frames/brush_hair/a", 3, 0), ("frames/cartwheel/d", 3, 1)])
        self.check(tmp_path, "hmdb51_val_split_1.txt", [("frames/brush_hair/b", 3, 0)])

    def test_bad_annotation_line_is_named(self, tmp_path):
        anno = tmp_path / "anno"
        anno.mkdir()
        (anno / "jester-v1-labels.csv").write_text("A\n")
        (anno / "jester-v1-train.csv").write_text("1;A\n2;Nope\n")
        (anno / "jester-v1-validation.csv").write_text("")
        with pytest.raises(SystemExit, match="jester-v1-train.csv:2"):
            run(gen_label, ["jester", "--root_path", tmp_path, "--anno_dir", anno])


def test_check_data_reports_every_problem(tmp_path, capsys):
    make_frames(tmp_path / "frames" / "a", 3)
    (tmp_path / "l.txt").write_text("frames/a 3 0\nframes/gone 3 0\nbroken line\nframes/a 3 9\n")
    problems = run(check_data, ["--root_path", tmp_path, "--list_file", "l.txt", "--num_class", 2, "--workers", 2])
    assert len(problems) == 2 and any(":3:" in p for p in problems) and any(":4:" in p for p in problems)
    (tmp_path / "l.txt").write_text("frames/a 3 0\nframes/gone 3 0\n")
    problems = run(check_data, ["--root_path", tmp_path, "--list_file", "l.txt", "--full"])
    assert len(problems) == 1 and "frames/gone" in problems[0]
    assert "1 problem(s)" in capsys.readouterr().out


def test_check_data_with_a_registry_name(tmp_path):
    make_frames(tmp_path / "frames" / "v", 2)
    (tmp_path / "train_list.txt").write_text("frames/v 2 11\n")
    (tmp_path / "val_list.txt").write_text("frames/v 2 12\n")
    problems = run(check_data, ["--dataset", "synthetic", "--root_path", tmp_path])
    assert len(problems) == 1 and "val_list.txt:1" in problems[0] and "[0, 12)" in problems[0]


def test_benchmark_runs(capsys):
    res = run(bench_transforms, ["--size", "48x32", "--crop", 24, "--segments", 2, "--length", 2,
                                 "--clips", 2, "--rounds", 1, "--frames", 6])
    assert set(res) == {"train plain", "train ops.transforms", "eval plain", "eval ops.transforms"}
    assert "clips/s" in capsys.readouterr().out

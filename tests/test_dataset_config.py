"""The dataset registry: entries, roots from the flag or the environment, overrides, custom sets."""

import json
import os

import pytest

from ops.dataset_config import (
    DATA_ROOT_ENV,
    DATASETS_FILE_ENV,
    get_dataset_config,
    known_datasets,
    load_categories,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    monkeypatch.delenv(DATASETS_FILE_ENV, raising=False)


@pytest.mark.parametrize(
    "name, num_class, tmpl, flip",
    [
        ("something", 174, "{:05d}.jpg", False),
        ("somethingv2", 174, "{:06d}.jpg", False),
        ("jester", 27, "{:05d}.jpg", False),
        ("ucf101", 101, "img_{:05d}.jpg", True),
        ("hmdb51", 51, "img_{:05d}.jpg", True),
        ("kinetics", 400, "img_{:05d}.jpg", True),
        ("synthetic", 12, "img_{:05d}.jpg", False),
    ],
)
def test_entries(name, num_class, tmpl, flip, tmp_path):
    cfg = get_dataset_config(name, str(tmp_path))
    assert (cfg.name, cfg.num_class, cfg.image_tmpl, cfg.flip) == (name, num_class, tmpl, flip)
    assert cfg.root_path == str(tmp_path)
    for p in (cfg.train_list, cfg.val_list, cfg.category_file):
        assert os.path.dirname(p) == str(tmp_path)
    assert cfg.video is False


def test_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    cfg = get_dataset_config("kinetics")
    assert cfg.root_path == os.path.join(str(tmp_path), "kinetics")
    assert cfg.train_list.startswith(cfg.root_path)


def test_flag_beats_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ROOT_ENV, "/elsewhere")
    assert get_dataset_config("jester", str(tmp_path)).root_path == str(tmp_path)


def test_missing_root_names_flag_and_variable():
    with pytest.raises(ValueError, match=r"--root_path.*PAN_DATA_ROOT"):
        get_dataset_config("kinetics")


def test_synthetic_has_a_default_root_in_the_repo():
    cfg = get_dataset_config("synthetic")
    assert cfg.root_path.endswith(os.path.join("data", "synthetic"))
    assert cfg.train_list == os.path.join(cfg.root_path, "train_list.txt")
    assert cfg.category_file == os.path.join(cfg.root_path, "category.txt")


def test_synthetic_video_lists(tmp_path):
    cfg = get_dataset_config("synthetic", str(tmp_path), video=True)
    assert cfg.video
    assert cfg.train_list == os.path.join(str(tmp_path), "train_videolist.txt")
    assert cfg.val_list == os.path.join(str(tmp_path), "val_videolist.txt")


def test_overrides_replace_entry_values(tmp_path):
    cfg = get_dataset_config(
        "ucf101", str(tmp_path), train_list="/abs/train.txt", val_list="v.txt",
        image_tmpl="{:04d}.png", num_class=7, video=True,
    )
    assert cfg.train_list == "/abs/train.txt"
    assert cfg.val_list == os.path.join(str(tmp_path), "v.txt")
    assert (cfg.image_tmpl, cfg.num_class, cfg.video) == ("{:04d}.png", 7, True)


def test_custom_dataset_needs_lists_and_class_count(tmp_path):
    cfg = get_dataset_config("mine", str(tmp_path), train_list="a.txt", val_list="b.txt", num_class=3)
    assert cfg.num_class == 3 and cfg.category_file is None and cfg.flip
    with pytest.raises(ValueError) as e:
        get_dataset_config("mine", str(tmp_path), train_list="a.txt")
    msg = str(e.value)
    assert "--val_list" in msg and "--num_class" in msg and "kinetics" in msg and "something" in msg


def test_registration_file(monkeypatch, tmp_path):
    reg = tmp_path / "datasets.json"
    reg.write_text(json.dumps({"birds": {
        "num_class": 5, "train_list": "tr.txt", "val_list": "va.txt", "category_file": "c.txt",
        "image_tmpl": "{:06d}.jpg", "flip": True, "flip_label_map": {"1": 2, "2": 1},
        "root_path": str(tmp_path / "birds")}}))
    monkeypatch.setenv(DATASETS_FILE_ENV, str(reg))
    assert "birds" in known_datasets()
    cfg = get_dataset_config("birds")
    assert cfg.root_path == str(tmp_path / "birds")
    assert cfg.flip_label_map == {1: 2, 2: 1}
    assert cfg.train_list == str(tmp_path / "birds" / "tr.txt")


def test_registration_file_errors(tmp_path):
    reg = tmp_path / "d.json"
    reg.write_text(json.dumps({"x": {"num_class": 2, "train_list": "a", "val_list": "b", "colour": 1}}))
    with pytest.raises(ValueError, match="unknown keys.*colour"):
        get_dataset_config("x", str(tmp_path), dataset_file=str(reg))
    reg.write_text("{ not json")
    with pytest.raises(ValueError, match=str(reg)):
        get_dataset_config("x", str(tmp_path), dataset_file=str(reg))


@pytest.mark.parametrize("key, label_map, message", [
    ("reverse_label_map", {"0": 1}, r"must swap pairs: 0 -> 1, but 1 -> 1"),
    ("flip_label_map", {"0": 1, "1": 2, "2": 0}, r"must swap pairs: 0 -> 1, but 1 -> 2"),
    ("reverse_label_map", {"0": 3, "3": 0}, r"label 3 is outside 0\.\.2 \(num_class 3\)"),
    ("reverse_label_map", {"left": "right"}, r"'left' -> 'right' is not a pair of class indices"),
    ("flip_label_map", [[0, 1]], r"must be a JSON object of label -> label, got list"),
])
def test_a_label_map_that_is_not_a_swap_of_valid_labels_is_refused_naming_the_file_and_entry(
        tmp_path, key, label_map, message):
    reg = tmp_path / "d.json"
    reg.write_text(json.dumps({"x": {"num_class": 3, "train_list": "a", "val_list": "b", "flip": True,
                                     key: label_map}}))
    with pytest.raises(ValueError, match=rf"{reg}: entry 'x': {key}.*{message}"):
        get_dataset_config("x", str(tmp_path), dataset_file=str(reg))


def test_a_label_map_may_leave_labels_out_and_those_keep_their_label(tmp_path):
    reg = tmp_path / "d.json"
    reg.write_text(json.dumps({"x": {"num_class": 3, "train_list": "a", "val_list": "b",
                                     "reverse_label_map": {"0": 1, "1": 0}}}))
    assert get_dataset_config("x", str(tmp_path), dataset_file=str(reg)).reverse_label_map == {0: 1, 1: 0}


def test_load_categories(tmp_path):
    p = tmp_path / "category.txt"
    p.write_text("push\npull\nHolding something\n")
    assert load_categories(str(p)) == ["push", "pull", "Holding something"]
    p.write_text("a\n\nb\na\n")
    with pytest.raises(ValueError) as e:
        load_categories(str(p))
    assert f"{p}:2" in str(e.value) and f"{p}:4" in str(e.value)


def test_a_category_file_with_a_byte_order_mark_gives_the_names_without_it(tmp_path):
    path = tmp_path / "category.txt"
    path.write_bytes("\ufeffpushing\npulling\n".encode("utf-8"))
    assert load_categories(str(path)) == ["pushing", "pulling"]


def test_a_category_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    path = tmp_path / "category.txt"
    path.write_bytes("pushing\n".encode() + "caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{path}:2: category file is not UTF-8"):
        load_categories(str(path))

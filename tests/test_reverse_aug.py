"""--reverse_aug: training clips played backwards half of the time, relabelled by the dataset's reverse_label_map."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import main
from ops.dataset_config import DATASETS_FILE_ENV, get_dataset_config
from ops.train_args import UsageError, get_args_parser
from ops.transforms import train_transform
from tools.make_synthetic import NUM_CLASSES, mirror_of


def _frames(count: int) -> list[Image.Image]:
    """Frames of one flat grey level each (10, 20, ...), so a frame's place shows whatever the crop."""
    return [Image.new("RGB", (40, 30), (10 * (i + 1),) * 3) for i in range(count)]


def _order(out) -> list[int]:
    """The grey level of each frame of a ``[F*3, S, S]`` output, in output order (denormalised)."""
    t = train_transform(24, None, flip=False)
    mean, std = t.mean[0], t.std[0]
    return [round(float(out[3 * i, 0, 0]) * std * 255 + mean * 255) for i in range(out.shape[0] // 3)]


def test_half_of_the_clips_play_backwards_with_the_reversed_label():
    t = train_transform(24, None, flip=False, reverse_label_map={0: 1, 1: 0})
    frames = _frames(6)
    forward, backward = [10, 20, 30, 40, 50, 60], [60, 50, 40, 30, 20, 10]
    seen = []
    for seed in range(40):
        out, label = t.apply(frames, np.random.default_rng(seed), 0)
        order = _order(out)
        assert (order, label) in ((forward, 0), (backward, 1)), (seed, order, label)
        seen.append(label)
    assert 10 <= seen.count(1) <= 30
    assert t.apply(frames, np.random.default_rng(0), 5)[1] == 5  # a label outside the map keeps its value


def test_without_a_map_no_clip_is_reversed_and_the_crops_are_unchanged():
    plain = train_transform(24, None, flip=False)
    with_map = train_transform(24, None, flip=False, reverse_label_map={0: 1, 1: 0})
    frames = _frames(4)
    for seed in range(20):
        out, label = plain.apply(frames, np.random.default_rng(seed), 0)
        assert _order(out) == [10, 20, 30, 40] and label == 0
        # the map adds a draw after the crop's: the crop of a seed is the same with or without it
        assert plain.draw(40, 30, np.random.default_rng(seed)) == with_map.draw(40, 30, np.random.default_rng(seed))


def test_the_synthetic_set_maps_each_class_to_its_time_reversed_twin():
    cfg = get_dataset_config("synthetic")
    assert cfg.reverse_label_map == {label: mirror_of(label) for label in range(NUM_CLASSES)}


def test_a_registration_file_gives_its_own_map(monkeypatch, tmp_path):
    reg = tmp_path / "datasets.json"
    reg.write_text(json.dumps({"doors": {"num_class": 2, "train_list": "tr.txt", "val_list": "va.txt",
                                         "reverse_label_map": {"0": 1, "1": 0}, "root_path": str(tmp_path)}}))
    monkeypatch.setenv(DATASETS_FILE_ENV, str(reg))
    assert get_dataset_config("doors").reverse_label_map == {0: 1, 1: 0}


def test_the_flag_is_off_by_default_and_refused_for_a_dataset_without_a_map(tmp_path):
    parser = get_args_parser()
    assert not parser.parse_args(["synthetic", "Lite"]).reverse_aug
    args = parser.parse_args(["synthetic", "Lite", "--root_path", str(tmp_path), "--reverse_aug"])
    assert main.dataset_config(args).reverse_label_map
    args = parser.parse_args(["ucf101", "Lite", "--root_path", str(tmp_path), "--reverse_aug"])
    with pytest.raises(UsageError, match="--reverse_aug: dataset 'ucf101' has no reverse_label_map"):
        main.dataset_config(args)

"""Bad data: checked lists at start-up, replaced samples during training, thresholds, NaN loss.

Each test is one promise of docs/RELIABILITY.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import main
from ops.bad_samples import BadSampleMonitor, SubstitutingDataset, TooManyBadSamples
from ops.checkpoint_files import CKPT_NAME, non_finite_entries, read_verified_checkpoint
from ops.dataset import SampleLoadError
from ops.engine import NonFiniteLossError
from tests.train_support import (
    make_tiny_dataset,
    train,
)


def test_bad_lists_stop_the_run_before_training_listing_every_file_line(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_train=2, n_val=1)
    train_list = data / "train_list.txt"
    train_list.write_text(train_list.read_text() + "only_two fields\nframes/train_000 0 1\nframes/train_001 6 7\n"
                          "frames/ghost 6 1\n")
    with open(data / "val_list.txt", "a") as f:
        f.write("frames/val_000 6 -1\n")
    with pytest.raises(main.DataCheckError) as err:
        train(data, tmp_path / "out")
    text = str(err.value)
    for where in (f"{train_list}:3:", f"{train_list}:4:", f"{train_list}:5:", f"{train_list}:6:",
                  f"{data / 'val_list.txt'}:2:"):
        assert where in text, where
    assert "5 problem(s)" in text and "frame folder does not exist" in text
    assert (tmp_path / "out" / "log" / "run" / "data_problems.txt").read_text().count("\n") == 5
    assert not (tmp_path / "out" / "log" / "run" / "steps.tsv").exists()
    assert list((tmp_path / "out" / "ckpt" / "run").iterdir()) == []


@pytest.fixture
def broken_data(tmp_path) -> Path:
    """8 training videos, 2 of which fail to load: one folder is gone, one has undecodable frames."""
    data = make_tiny_dataset(tmp_path / "data")
    shutil.rmtree(data / "frames" / "train_003")
    for frame in (data / "frames" / "train_005").iterdir():
        frame.write_bytes(b"not a jpeg")
    return data


def bad_rows(out: Path) -> list[list[str]]:
    return [line.split("\t") for line in (out / "log" / "run" / "bad_samples.tsv").read_text().splitlines()[1:]]


def test_failing_samples_are_replaced_logged_and_counted(broken_data, tmp_path):
    train(broken_data, tmp_path, "--epochs", "1", "--check-data", "off", "--max-bad-fraction", "0.5", "-j", "1")
    rows = bad_rows(tmp_path)
    paths = {row[4] for row in rows}
    assert any(p.endswith("train_003") for p in paths) and any("train_005" in p for p in paths)
    for _, epoch, step, index, path, reason, replacement in rows:
        assert reason and int(replacement) != int(index)
    log = (tmp_path / "log" / "run" / "log.txt").read_text()
    assert f"({len(rows)} bad sample loads so far)" in log and "replaced by item" in log
    assert read_verified_checkpoint(str(tmp_path / "ckpt" / "run" / CKPT_NAME))["bad_samples"]["bad"] == len(rows)


def test_run_aborts_when_bad_share_exceeds_the_threshold(broken_data, tmp_path):
    with pytest.raises(TooManyBadSamples, match=r"of 1\d training sample loads failed .*--max-bad-fraction 0.1"):
        train(broken_data, tmp_path, "--epochs", "1", "--check-data", "off", "--max-bad-fraction", "0.1")


def test_run_aborts_after_n_bad_loads_in_a_row(tmp_path):
    data = make_tiny_dataset(tmp_path / "data")
    shutil.rmtree(data / "frames")
    with pytest.raises(TooManyBadSamples, match="^3 loads in a row failed"):  # from a worker process
        train(data, tmp_path, "--check-data", "off", "--max-bad-in-row", "3", "-j", "1")


class FakeClips:
    """Item i is ``[4*3, 2, 2]`` filled with i; item 0 decodes only half its frames, item 1 raises."""

    records = None

    def __len__(self):
        return 6

    def __getitem__(self, i):
        if i == 1:
            raise SampleLoadError(f"video_{i}.mp4", "truncated")
        frames = 2 if i == 0 else 4
        return torch.full((frames * 3, 2, 2), float(i)), i


def test_short_or_failing_sample_is_replaced_by_another_sample_chosen_by_a_seeded_generator():
    ds = SubstitutingDataset(FakeClips(), seed=5, expected_channels=12)
    x, label, reports = ds[0]
    assert reports[0].index == 0 and "yields 2 frames, 4 were asked for" in reports[0].reason
    assert label != 0 and torch.all(x == label)  # another clip, whole; never frames of clip 0
    again = SubstitutingDataset(FakeClips(), seed=5, expected_channels=12)
    assert again[0][1] == label and again[1][1] == ds[1][1]  # same seed, same replacement
    picks = set()
    for epoch in range(20):
        ds.set_epoch(epoch)
        picks.add(ds.replacement(0, 0))
    assert 0 not in picks and len(picks) > 1


def test_bad_share_is_judged_once_enough_samples_are_seen():
    monitor = BadSampleMonitor(max_fraction=0.01)
    monitor.update(loads=10, bad=1)
    monitor.check()  # 10 % of 10 loads, but 100 are needed to judge 1 %
    monitor.update(loads=90, bad=0)
    monitor.check()  # 1 of 100 is not more than 1 %
    monitor.update(loads=1, bad=1)
    with pytest.raises(TooManyBadSamples, match=r"2 of 101 .*1.980% > --max-bad-fraction 0.01"):
        monitor.check()


def test_bad_validation_file_fails_naming_it_after_saving_the_epoch(tmp_path):
    data = make_tiny_dataset(tmp_path / "data")
    shutil.rmtree(data / "frames" / "val_002")
    with pytest.raises(SampleLoadError, match="^.*val_002.*frame folder does not exist"):  # from a worker
        train(data, tmp_path, "--epochs", "1", "--check-data", "off", "-j", "1")
    assert read_verified_checkpoint(str(tmp_path / "ckpt" / "run" / CKPT_NAME))["epoch"] == 1


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_last_good_checkpoint(tmp_path):
    data = make_tiny_dataset(tmp_path / "data")
    # Without the shift: a huge step leaves this model's weights finite but its next loss NaN.
    train(data, tmp_path, "--epochs", "1", "--no-shift")
    # A learning rate that makes the weights huge (1e20 times a gradient: finite in float32, with room for any
    # gradient the data give) after one step: the next forward overflows and its loss is NaN.
    with pytest.raises(NonFiniteLossError, match=r"loss is (nan|inf) at epoch 1, step 1: stopping"):
        train(data, tmp_path, "--resume", "auto", "--lr", "1e20", "--gd", "0", "--save-every", "1", "--no-shift")
    # The checkpoint after step 0 (huge but finite weights) is the last one; step 1's NaN is never saved.
    ckpt = read_verified_checkpoint(str(tmp_path / "ckpt" / "run" / CKPT_NAME))
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (1, 1)
    assert non_finite_entries(ckpt["state_dict"]) == []

"""Frame sampling follows the TSN/TSM rules (0-based segment starts)."""

import numpy as np
import pytest

from ops.frame_sampling import (
    dense_train_offsets,
    num_test_views,
    test_offsets,
    train_offsets,
    val_offsets,
)


def rng(seed=0):
    return np.random.default_rng(seed)


def published_centres(num_frames, num_segments, new_length, phase_start=False):
    tick = (num_frames - new_length + 1) / float(num_segments)
    if phase_start:
        return [int(tick * x) for x in range(num_segments)]
    return [int(tick / 2.0 + tick * x) for x in range(num_segments)]


GRID = [(n, t, m) for n in (1, 2, 3, 5, 8, 9, 16, 37, 64, 65, 100, 301) for t in (1, 3, 8, 16) for m in (1, 4)]


class TestTrain:
    def test_one_random_start_in_each_equal_span(self):
        for seed in range(50):
            off = train_offsets(30, 3, 1, rng(seed))
            assert off.dtype == np.int64 and off.shape == (3,)
            assert 0 <= off[0] < 10 and 10 <= off[1] < 20 and 20 <= off[2] < 30

    def test_spans_leave_room_for_consecutive_frames(self):
        # 33 frames, m=4: 30 valid starts -> spans of 10.
        for seed in range(50):
            off = train_offsets(33, 3, 4, rng(seed))
            assert all(10 * i <= o < 10 * (i + 1) for i, o in enumerate(off))

    def test_every_start_is_reachable(self):
        seen = set()
        for seed in range(400):
            seen.update(train_offsets(12, 3, 1, rng(seed)).tolist())
        assert seen == set(range(12))

    def test_short_video_sorted_random(self):
        # 10 frames, 8 segments, m=4: average span 0, more frames than segments.
        for seed in range(30):
            off = train_offsets(10, 8, 4, rng(seed))
            assert list(off) == sorted(off)
            assert off.min() >= 0 and off.max() <= 10 - 4

    def test_very_short_video_starts_at_frame_one(self):
        np.testing.assert_array_equal(train_offsets(3, 8, 1, rng()), np.zeros(8))
        np.testing.assert_array_equal(train_offsets(8, 8, 4, rng()), np.zeros(8))

    def test_video_shorter_than_new_length(self):
        # The published code crashes here; we sample from frame 1.
        np.testing.assert_array_equal(train_offsets(2, 1, 4, rng()), [0])

    def test_same_generator_state_same_offsets(self):
        np.testing.assert_array_equal(train_offsets(300, 8, 4, rng(5)), train_offsets(300, 8, 4, rng(5)))

    def test_within_bounds_on_grid(self):
        for n, t, m in GRID:
            off = train_offsets(n, t, m, rng(n * 31 + t))
            assert off.shape == (t,)
            assert off.min() >= 0 and off.max() <= max(n - m, 0)


class TestVal:
    def test_centres(self):
        np.testing.assert_array_equal(val_offsets(30, 3, 1), [5, 15, 25])

    def test_matches_published_formula(self):
        for n, t, m in GRID:
            expected = published_centres(n, t, m) if n > t + m - 1 else [0] * t
            np.testing.assert_array_equal(val_offsets(n, t, m, rng()), expected)

    def test_deterministic(self):
        np.testing.assert_array_equal(val_offsets(97, 8, 4, rng(1)), val_offsets(97, 8, 4, rng(2)))


class TestTest:
    def test_single_view_is_centres(self):
        for n, t, m in GRID:
            if n - m + 1 >= 1:
                np.testing.assert_array_equal(test_offsets(n, t, m), published_centres(n, t, m))
            off = test_offsets(n, t, m)
            assert off.min() >= 0

    def test_twice_sample_centres_then_starts(self):
        np.testing.assert_array_equal(test_offsets(30, 3, 1, twice_sample=True), [5, 15, 25, 0, 10, 20])
        for n, t, m in GRID:
            if n - m + 1 >= 1:
                expected = published_centres(n, t, m) + published_centres(n, t, m, phase_start=True)
                np.testing.assert_array_equal(test_offsets(n, t, m, twice_sample=True), expected)

    def test_num_clips_shift_views_by_a_fraction_of_a_span(self):
        np.testing.assert_array_equal(test_offsets(30, 3, 1, num_clips=2), [2, 12, 22, 7, 17, 27])
        assert test_offsets(300, 8, 1, num_clips=5).shape == (40,)

    def test_dense_ten_windows(self):
        off = test_offsets(200, 8, 1, dense_sample=True)
        assert off.shape == (80,)
        windows = off.reshape(10, 8)
        starts = np.linspace(0, 200 - 64, 10, dtype=int)
        np.testing.assert_array_equal(windows[:, 0], starts)
        np.testing.assert_array_equal(np.diff(windows, axis=1), np.full((10, 7), 8))

    def test_dense_short_video_wraps_around(self):
        np.testing.assert_array_equal(test_offsets(20, 4, 1, dense_sample=True)[:4], [0, 16, 12, 8])

    def test_view_counts(self):
        assert num_test_views() == 1
        assert num_test_views(twice_sample=True) == 2
        assert num_test_views(dense_sample=True) == 10
        assert num_test_views(dense_sample=True, num_clips=4) == 4
        assert num_test_views(num_clips=3) == 3

    def test_exclusive_options(self):
        with pytest.raises(ValueError, match="exclusive"):
            test_offsets(100, 8, 1, twice_sample=True, dense_sample=True)
        with pytest.raises(ValueError, match="num_clips"):
            test_offsets(100, 8, 1, twice_sample=True, num_clips=2)


class TestDenseTrain:
    def test_window_of_stride_64_over_segments(self):
        for seed in range(30):
            off = dense_train_offsets(300, 8, 1, rng(seed))
            assert np.all(np.diff(off) == 8)
            # Published range of the start: [0, num_frames - 64 - 1).
            assert 0 <= off[0] < 300 - 64

    def test_short_video_starts_at_zero_and_wraps(self):
        np.testing.assert_array_equal(dense_train_offsets(40, 8, 1, rng()), [0, 8, 16, 24, 32, 0, 8, 16])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_frames"):
        train_offsets(0, 8, 1, rng())
    with pytest.raises(ValueError, match="num_segments"):
        val_offsets(10, 0, 1)

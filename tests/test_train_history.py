"""Training with history (``--train_history``): each batch is shifted as one stream, as tools/stream.py runs it."""

from __future__ import annotations

import pytest
import torch

from ops.models import PAN
from ops.streaming import StreamingPAN, split_frames, stream_logits
from ops.temporal_shift import TemporalShift, clips_as_one_stream
from ops.train_args import UsageError, check_args, get_args_parser
from tests.test_stream import SIZE, T, assert_close, tiny


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clips(model: PAN, count: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(count, T * model.new_length * 3, SIZE, SIZE, generator=g)


def _segments(model: PAN) -> list[int]:
    return [m.n_segment for m in model.modules() if isinstance(m, TemporalShift)]


@pytest.mark.parametrize("modality", ["Lite", "RGB"])
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_each_clip_of_a_batch_gets_the_logits_of_a_stream_that_saw_the_clips_before_it(modality, arch):
    model = tiny(modality, arch)
    clips = _clips(model, 3)
    with torch.no_grad():
        alone = model(clips)
        with clips_as_one_stream(model, len(clips)):
            chained = model(clips)
    assert chained.shape == (3, model.num_class)
    # The stream pushes clip 0, then clip 1, then clip 2, frame by frame; after each clip's last
    # segment its window of T segments is that clip, with the earlier clips in its shift buffers.
    outputs = stream_logits(StreamingPAN(model), [f for k in range(3) for f in split_frames(clips[k:k + 1])])
    scale = float(chained.abs().max())
    for k in range(3):
        assert_close(outputs[(k + 1) * T - 1].logits[0], chained[k], scale)
    assert_close(chained[0], alone[0], scale)  # the first clip starts from an empty history, as a stream does
    assert float((chained[1:] - alone[1:]).abs().max()) > 1e-3 * scale  # the later clips do not


def test_the_shifts_get_their_segment_count_back_even_after_an_error():
    model = tiny("Lite")
    before = _segments(model)
    assert before and set(before) == {T}
    with clips_as_one_stream(model, 5):
        assert set(_segments(model)) == {5 * T}
    with pytest.raises(RuntimeError, match="boom"), clips_as_one_stream(model, 5):
        raise RuntimeError("boom")
    assert _segments(model) == before


def test_a_two_way_model_is_refused_because_it_would_see_the_next_clip():
    model = tiny("Lite", shift_mode="bidirectional")
    with pytest.raises(ValueError, match="one-way shift"), clips_as_one_stream(model, 2):
        pass
    assert set(_segments(model)) == {T}


BASE = ["something", "Lite", "--arch", "resnet18", "--pretrain", "none"]


def test_the_flag_is_off_by_default_and_accepted_with_a_one_way_shift():
    parser = get_args_parser()
    assert not parser.parse_args(BASE).train_history
    args = parser.parse_args(BASE + ["--shift_mode", "online", "--train_history"])
    assert args.train_history
    check_args(args)


@pytest.mark.parametrize("extra", [["--shift_mode", "bidirectional"], ["--shift_mode", "online", "--base", "TSN"],
                                   ["--shift_mode", "online", "--no-shift"]])
def test_the_flag_is_refused_without_a_one_way_shift(extra):
    args = get_args_parser().parse_args(BASE + ["--train_history"] + extra)
    with pytest.raises(UsageError, match="--train_history needs a one-way temporal shift"):
        check_args(args)

"""Streaming PAN equals the offline model: per-segment features, logits over the last T, windows; state; export."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from ops.models import PAN
from ops.streaming import (ExportedStep, StreamError, StreamingPAN, apply_head, export_step, offline_features,
                           split_frames, split_segments, step_parity, stream_logits)

T, M, SIZE = 4, 4, 32


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(modality: str, arch: str = "resnet18", vap: bool = True, shift_mode: str = "online", **kw) -> PAN:
    torch.manual_seed(0)
    model = PAN(7, T, modality, base_model=arch, pretrain=None, is_shift=True, shift_mode=shift_mode, has_VAP=vap,
                partial_bn=False, dropout=0.5, **kw).eval()
    with torch.no_grad():  # a head that gives logits of a visible scale (the published init is 0.001)
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.05)
    return model


def clip(model: PAN, segments: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, segments * model.new_length * 3, SIZE, SIZE, generator=g)


def assert_close(got: torch.Tensor, expected: torch.Tensor, scale: float) -> None:
    diff = float((got - expected).abs().max())
    assert diff <= 1e-4 * scale, f"max|diff| {diff:.3g} above 1e-4 of the logit scale {scale:.3g}"


@pytest.mark.parametrize("modality", ["Lite", "PA", "RGB"])
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("vap", [True, False], ids=["VAP", "consensus"])
def test_online_stream_equals_the_offline_model(modality, arch, vap):
    model = tiny(modality, arch, vap)
    segments = T + 2
    x = clip(model, segments)
    stream = StreamingPAN(model)
    assert stream.mode == "online"
    outputs = stream_logits(stream, split_frames(x))
    assert [o.segment for o in outputs] == list(range(segments))
    assert [o.warm for o in outputs] == [t + 1 >= T for t in range(segments)]
    features = offline_features(model, x)[0]  # [S, D]
    feature_scale = float(features.abs().max())
    for t, out in enumerate(outputs):
        assert_close(out.feature[0], features[t], feature_scale)
    with torch.no_grad():
        heads = [apply_head(model, features[t + 1 - T:t + 1].unsqueeze(0)) for t in range(T - 1, segments)]
        clip_logits = model(x[:, :T * model.new_length * 3])
    scale = max(float(h.abs().max()) for h in heads)
    for t, expected in zip(range(T - 1, segments), heads):
        assert_close(outputs[t].logits, expected, scale)
    assert_close(outputs[T - 1].logits, clip_logits, scale)
    if modality == "RGB":
        assert outputs[0].pa is None
    else:
        assert outputs[0].pa.shape == (1, M - 1, SIZE, SIZE)


@pytest.mark.parametrize("modality", ["Lite", "RGB"])
def test_window_mode_equals_offline_evaluation_of_each_window(modality):
    model = tiny(modality, vap=True, shift_mode="bidirectional")
    with pytest.raises(StreamError, match="two-way temporal shift.*window"):
        StreamingPAN(model, mode="online")
    stream = StreamingPAN(model, stride=2)
    assert stream.mode == "window"
    segments = T + 4
    x = clip(model, segments)
    outputs = stream_logits(stream, split_frames(x))
    per = model.new_length * 3
    emitted = [o.segment for o in outputs if o.logits is not None]
    assert emitted == [T - 1, T + 1, T + 3]
    with torch.no_grad():
        expected = {t: model(x[:, (t + 1 - T) * per:(t + 1) * per]) for t in emitted}
    scale = max(float(e.abs().max()) for e in expected.values())
    for t in emitted:
        assert_close(outputs[t].logits, expected[t], scale)


def test_state_copies_resets_and_segments_equal_frames():
    model = tiny("Lite")
    x = clip(model, T + 3)
    frames = split_frames(x)
    stream = StreamingPAN(model)
    reference = [o.logits for o in stream_logits(stream, frames)]

    stream.reset()
    assert stream.segments_seen == 0
    head = stream_logits(stream, frames[:6])  # one segment and 2 frames into the next
    saved = stream.copy_state()
    rest = stream_logits(stream, frames[6:])
    assert all(torch.equal(a.logits, b) for a, b in zip(head + rest, reference))
    stream.load_state(saved)  # continue again from the copy: the same numbers
    again = stream_logits(stream, frames[6:])
    assert all(torch.equal(a.logits, b.logits) for a, b in zip(rest, again))

    other = StreamingPAN(model)
    by_segment = [other.push_segment(s).logits for s in split_segments(x, M)]
    scale = float(torch.stack(reference).abs().max())
    for a, b in zip(by_segment, reference):
        assert_close(a, b, scale)
    other.push_frame(frames[0])
    with pytest.raises(StreamError, match="middle of a segment"):
        other.push_segment(split_segments(x, M)[0])


def test_temporal_pool_streams_only_in_window_mode():
    model = PAN(5, T, "RGB", base_model="resnet18", pretrain=None, is_shift=True, temporal_pool=True).eval()
    with pytest.raises(StreamError, match="temporal pooling"):
        StreamingPAN(model, mode="online")
    assert StreamingPAN(model).mode == "window"


ONNX = all(importlib.util.find_spec(p) for p in ("onnx", "onnxscript", "onnxruntime"))


@pytest.mark.parametrize("ext", [".pt2", pytest.param(".onnx", marks=pytest.mark.skipif(
    not ONNX, reason="the optional ONNX packages (requirements-deploy.txt) are not installed"))])
def test_the_step_exports_with_its_state_and_keeps_parity(tmp_path, ext):
    model = tiny("Lite", "resnet18", vap=True)
    stream = StreamingPAN(model)
    path = str(tmp_path / f"step{ext}")
    metadata = export_step(stream, path, SIZE, SIZE, source="tiny")
    assert metadata["mode"] == "online" and metadata["config"]["shift_mode"] == "online"
    assert len(metadata["inputs"]) == 3 + stream.num_shift_buffers
    exported = ExportedStep(path)
    assert exported.metadata["inputs"] == metadata["inputs"]
    x = clip(model, T + 2, seed=3)
    parity = step_parity(stream, exported, split_segments(x, M))
    assert parity.steps == T + 2 and parity.top1_agree == T + 2
    assert parity.max_rel_diff <= 1e-4, parity

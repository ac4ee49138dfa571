"""Streaming PAN: frames go in one at a time, logits come out after every segment.

A stream cuts its frames into consecutive segments of ``m`` frames (``m = 1``
for RGB) and keeps its whole state as explicit tensors (:class:`StreamState`):

* the previous frame of the current segment (PA input) and the PA maps made so
  far: each new frame costs one PA convolution on one frame difference, not
  ``m`` (PA of ``m`` frames is ``m - 1`` maps of consecutive differences);
* the current segment's first frame (the RGB input of Lite and RGB);
* ``online`` mode: one shift buffer per shifted block (the ``1/shift_div``
  channel slot the next segment takes from this one) and a ring of the last
  ``T`` segment features; the head (VAP or linear + consensus) runs over the
  ring after every segment;
* ``window`` mode: a ring of the last ``T`` segment inputs (after PA); every
  ``stride`` segments the whole model re-runs on that window.

``online`` needs a causal model: one-way shift (``shift_mode='online'``,
``--shift_mode online``) or no shift, and no temporal pooling. Segment ``t``
then depends on segments ``<= t`` only, so the stream's per-segment features are
those of the offline model run over every segment seen so far
(:func:`offline_features`) and its logits after segment ``t`` are the head
applied to the last ``T`` of them (:func:`apply_head`); after the first ``T``
segments they are the offline clip logits of those ``T`` segments. Before
``T`` segments the ring is filled with copies of the first segment's feature
(``StepOutput.warm`` is False). ``window`` mode runs any model, the released
two-way ones included, and equals offline evaluation of each window; it emits
from the ``T``-th segment on, every ``stride`` segments.

The segment step (:meth:`StreamingPAN.segment_step`: one segment's ``m`` frames
and the state in, logits and the new state out) is a pure function of tensors,
so it exports to ``.pt2`` and ONNX (:func:`export_step`) and is checked against
the eager stream (:func:`step_parity`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ops.backbones import get_backbone_spec
from ops.errors import PanError
from ops.models import PAN
from ops.PAN_modules import PA, PA_EPS, pa_maps
from ops.pa_fast import pa_maps_fast
from ops.temporal_shift import TemporalShift

logger = logging.getLogger(__name__)

#: ``online``: one backbone pass per new segment (causal models); ``window``: re-run the last T segments.
STREAM_MODES = ("online", "window")
#: Name of the metadata inside a step's ``.pt2`` archive and key in its ONNX ``metadata_props``.
STEP_METADATA_NAME = "pan_stream_step.json"


class StreamError(PanError, ValueError):
    """A model or an input the stream cannot take (the message says why and what to do)."""


def is_causal(model: PAN) -> bool:
    """Whether segment ``t`` of ``model`` depends on segments ``<= t`` only (one-way or no shift, no temporal pool)."""
    return (not model.is_shift or model.shift_mode == "online") and not model.temporal_pool


def feature_backbone(model: PAN) -> nn.Module:
    """A copy of ``model``'s backbone that ends at the pooled feature (``[B, D]``), head removed, in eval mode."""
    net = copy.deepcopy(model.base_model)
    setattr(net, get_backbone_spec(model.arch).head_attr, nn.Identity())
    return net.eval()


def offline_features(model: PAN, x: torch.Tensor) -> torch.Tensor:
    """Per-segment features of the offline model run over all ``S`` segments of ``x``.

    The shifts span the ``S`` segments (not ``model.num_segments``), as the stream sees them.

    Args:
        x: ``[N, S*m*3, H, W]`` normalised frames.

    Returns:
        ``[N, S, D]``.
    """
    segments = x.shape[1] // (3 * model.new_length)
    net = feature_backbone(model)
    for module in net.modules():
        if isinstance(module, TemporalShift):
            module.n_segment = segments
    with torch.no_grad():
        features = net(model.segment_inputs(x))
    return features.reshape(x.shape[0], segments, -1)


def apply_head(model: PAN, features: torch.Tensor) -> torch.Tensor:
    """The model's head over ``T`` segment features: VAP, or linear + consensus.

    Args:
        features: ``[N, T, D]`` with ``T = model.num_segments``.

    Returns:
        ``[N, num_class]`` (``[N, T, num_class]`` for the identity consensus).
    """
    if model.has_VAP:
        head = getattr(model.base_model, get_backbone_spec(model.arch).head_attr)
        return head(features.reshape(-1, features.shape[-1]))
    scores = model.new_fc(features)
    return scores.mean(dim=1) if model.consensus_type == "avg" else scores


def window_logits(model: PAN, inputs: torch.Tensor) -> torch.Tensor:
    """The offline model on ``T`` segment inputs (what it computes after PA).

    Args:
        inputs: ``[N, T, C, H, W]``, ``C`` the backbone's input channels.

    Returns:
        the model's output for those clips, ``[N, num_class]``.
    """
    out = model.base_model(inputs.flatten(0, 1))
    if model.has_VAP:
        return out
    segments = model.num_segments // 2 if model.temporal_pool else model.num_segments
    out = model.new_fc(out).reshape(-1, segments, model.num_class)
    return out.mean(dim=1) if model.consensus_type == "avg" else out


class _ShiftSlots:
    """The shift buffers of one backbone pass: read from ``inputs``, written to ``outputs`` (by index)."""

    def __init__(self, count: int) -> None:
        self.inputs: list[torch.Tensor | None] = [None] * count
        self.outputs: list[torch.Tensor | None] = [None] * count


class _StreamShift(nn.Module):
    """A one-way shift for one segment at a time: the slot ``[fold, 2 fold)`` comes from the buffer
    (the previous segment's, zeros at the start) and this segment's goes to the buffer."""

    def __init__(self, shift: TemporalShift, index: int, slots: _ShiftSlots) -> None:
        super().__init__()
        self.net = shift.net
        self.fold_div = shift.fold_div
        self.index = index
        self.slots = slots

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fold = x.shape[1] // self.fold_div
        previous = self.slots.inputs[self.index]
        if previous is None:
            previous = torch.zeros_like(x[:, fold:2 * fold])
        self.slots.outputs[self.index] = x[:, fold:2 * fold].clone()
        return self.net(torch.cat((x[:, :fold], previous, x[:, 2 * fold:]), dim=1))


@dataclass
class StreamState:
    """Everything a stream remembers, as tensors (``N`` streams in lockstep).

    ``ring``: ``[N, T, D]`` features (online) or ``[N, T, C, H, W]`` segment inputs (window);
    ``count``: segments completed (int64 scalar); ``shift``: one ``[N, fold, h, w]`` buffer per
    shifted block (online); ``first_frame`` / ``prev_frame``: ``[N, 3, H, W]``; ``maps``: the
    current segment's PA maps so far, each ``[N, 1, H, W]``; ``frames_in_segment``: how many
    frames of the current segment have arrived.
    """

    ring: torch.Tensor
    count: torch.Tensor
    shift: list[torch.Tensor] = field(default_factory=list)
    first_frame: torch.Tensor | None = None
    prev_frame: torch.Tensor | None = None
    maps: list[torch.Tensor] = field(default_factory=list)
    frames_in_segment: int = 0

    def clone(self) -> "StreamState":
        """An independent copy (tensors cloned)."""
        def c(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.clone()
        return StreamState(c(self.ring), c(self.count), [c(b) for b in self.shift], c(self.first_frame),
                           c(self.prev_frame), [c(m) for m in self.maps], self.frames_in_segment)


@dataclass
class StepOutput:
    """What a completed segment gives.

    ``segment``: its 0-based number; ``logits``: ``[N, num_class]`` or None (window mode between
    strides and before ``T`` segments); ``feature``: ``[N, D]`` (online mode); ``warm``: ``T``
    segments seen, so the logits cover a full window; ``pa``: the segment's PA maps
    ``[N, m-1, H, W]`` (None for RGB).
    """

    segment: int
    logits: torch.Tensor | None
    feature: torch.Tensor | None
    warm: bool
    pa: torch.Tensor | None = None


class StreamingPAN(nn.Module):
    """A PAN model that takes frames one at a time (:meth:`push_frame`) or a segment at a time
    (:meth:`push_segment`).

    Args:
        model: a PAN model (put in eval mode; BatchNorm uses its running statistics).
        mode: ``online``, ``window`` or ``auto`` (online when the model is causal, else window).
        stride: window mode: segments between two window runs.

    Raises:
        StreamError: ``online`` for a model that is not causal, or a stride below 1.
    """

    def __init__(self, model: PAN, mode: str = "auto", stride: int = 1) -> None:
        super().__init__()
        if mode == "auto":
            mode = "online" if is_causal(model) else "window"
        if mode not in STREAM_MODES:
            raise StreamError(f"unknown stream mode {mode!r}; choose one of auto, {', '.join(STREAM_MODES)}")
        if mode == "online" and not is_causal(model):
            why = "temporal pooling" if model.temporal_pool else "a two-way temporal shift"
            raise StreamError(f"the model has {why}, so segment t depends on later segments: stream it in "
                              f"'window' mode, or train a one-way model (--shift_mode online)")
        if stride < 1:
            raise StreamError(f"stride must be at least 1, got {stride}")
        self.model = model.eval()
        self.mode = mode
        self.stride = stride
        self.frames_per_segment = model.new_length
        self.num_segments = model.num_segments
        self.slots = _ShiftSlots(0)
        if mode == "online":
            self.backbone = feature_backbone(model)
            shifts = [(name, m) for name, m in self.backbone.named_modules() if isinstance(m, TemporalShift)]
            self.slots = _ShiftSlots(len(shifts))
            for index, (name, shift) in enumerate(shifts):
                parent_name, _, attr = name.rpartition(".")
                parent = self.backbone.get_submodule(parent_name) if parent_name else self.backbone
                replacement = _StreamShift(shift, index, self.slots)
                if isinstance(parent, nn.Sequential) and attr.isdigit():
                    parent[int(attr)] = replacement
                else:
                    setattr(parent, attr, replacement)
        self.state: StreamState | None = None

    # ------------------------------------------------------------------ state
    @property
    def num_shift_buffers(self) -> int:
        return len(self.slots.inputs)

    def train(self, mode: bool = True) -> "StreamingPAN":
        """A stream always runs in eval mode."""
        return super().train(False)

    def initial_state(self, batch: int, height: int, width: int) -> StreamState:
        """The state before any frame, for ``batch`` streams of ``height x width`` frames."""
        channels = self.model.spec.backbone_in_channels(self.model.data_length)
        param = next(self.model.parameters())
        probe = torch.zeros(batch, channels, height, width, dtype=param.dtype, device=param.device)
        count = torch.zeros((), dtype=torch.int64, device=param.device)
        if self.mode == "window":
            return StreamState(probe.unsqueeze(1).repeat(1, self.num_segments, 1, 1, 1), count)
        with torch.no_grad():
            self.slots.inputs = [None] * self.num_shift_buffers
            feature = self.backbone(probe)
            shift = [torch.zeros_like(b) for b in self.slots.outputs]
        ring = feature.new_zeros(batch, self.num_segments, feature.shape[-1])
        return StreamState(ring, count, shift)

    def reset(self) -> None:
        """Forget everything; the next frame starts a new stream (the state is made from its size)."""
        self.state = None

    def copy_state(self) -> StreamState | None:
        """An independent copy of the current state (None before the first frame)."""
        return None if self.state is None else self.state.clone()

    def load_state(self, state: StreamState | None) -> None:
        """Continue from ``state`` (a copy of it is taken)."""
        self.state = None if state is None else state.clone()

    @property
    def segments_seen(self) -> int:
        return 0 if self.state is None else int(self.state.count)

    # ------------------------------------------------------------------ the exportable step
    def _roll(self, ring: torch.Tensor, item: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """``ring`` with ``item`` appended and its oldest entry dropped; at the start, ``item`` everywhere."""
        shape = [-1, self.num_segments] + [-1] * (ring.dim() - 2)
        filled = item.unsqueeze(1).expand(*shape)
        rolled = torch.cat((ring[:, 1:], item.unsqueeze(1)), dim=1)
        return torch.where(count == 0, filled, rolled)

    def inputs_step(self, inputs: torch.Tensor, ring: torch.Tensor, count: torch.Tensor,
                    *shift: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One segment, from its backbone input (after PA).

        Args:
            inputs: ``[N, C, H, W]``; ``ring``, ``count``, ``shift``: the state (:class:`StreamState`).

        Returns:
            online: ``(logits, feature [N, D], ring, count, *shift)``; window: ``(logits, ring, count)``.
        """
        if self.mode == "window":
            ring = self._roll(ring, inputs, count)
            return window_logits(self.model, ring), ring, count + 1
        self.slots.inputs = list(shift)
        self.slots.outputs = [None] * self.num_shift_buffers
        feature = self.backbone(inputs)
        new_shift = list(self.slots.outputs)
        self.slots.inputs = [None] * self.num_shift_buffers
        ring = self._roll(ring, feature, count)
        return (apply_head(self.model, ring), feature, ring, count + 1, *new_shift)

    def segment_step(self, segment: torch.Tensor, ring: torch.Tensor, count: torch.Tensor,
                     *shift: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One segment from its ``m`` frames: the step that exports.

        Args:
            segment: ``[N, m*3, H, W]`` normalised frames (the TSN layout of one segment).

        Returns:
            as :meth:`inputs_step`.
        """
        return self.inputs_step(self.model.segment_inputs(segment), ring, count, *shift)

    def forward(self, segment: torch.Tensor, ring: torch.Tensor, count: torch.Tensor,
                *shift: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.segment_step(segment, ring, count, *shift)

    # ------------------------------------------------------------------ frames and segments
    def _pa_pair(self, previous: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """The PA map of two consecutive frames ``[N, 3, H, W]``: ``[N, 1, H, W]`` (one convolution)."""
        pa: PA = self.model.PA
        pair = torch.stack((previous, frame), dim=1).flatten(0, 1)
        if pa.fast:
            return pa_maps_fast(pair, pa.shallow_conv.weight, 2, PA_EPS)
        return pa_maps(pair, pa.shallow_conv.weight, 2)

    def _ensure_state(self, like: torch.Tensor) -> StreamState:
        if self.state is None:
            self.state = self.initial_state(like.shape[0], like.shape[-2], like.shape[-1])
        return self.state

    def push_frame(self, frame: torch.Tensor) -> StepOutput | None:
        """Add one frame; returns the step's output when it completes a segment, else None.

        Args:
            frame: ``[N, 3, H, W]`` (or ``[3, H, W]`` for one stream), normalised like the model's input.
        """
        if frame.dim() == 3:
            frame = frame.unsqueeze(0)
        state = self._ensure_state(frame)
        uses_pa = self.model.spec.uses_pa
        with torch.no_grad():
            if state.frames_in_segment == 0:
                state.first_frame = frame
            elif uses_pa:
                state.maps.append(self._pa_pair(state.prev_frame, frame))
            state.prev_frame = frame
            state.frames_in_segment += 1
            if state.frames_in_segment < self.frames_per_segment:
                return None
            pa = torch.cat(state.maps, dim=1) if uses_pa else None
            if not uses_pa:
                inputs = state.first_frame
            elif self.model.spec.keeps_rgb:
                inputs = torch.cat((state.first_frame, pa), dim=1)
            else:
                inputs = pa
            state.first_frame, state.prev_frame, state.maps, state.frames_in_segment = None, None, [], 0
            return self._complete(inputs, pa)

    def push_segment(self, segment: torch.Tensor) -> StepOutput:
        """Add one whole segment ``[N, m*3, H, W]`` (between segments only)."""
        state = self._ensure_state(segment)
        if state.frames_in_segment:
            raise StreamError(f"push_segment in the middle of a segment ({state.frames_in_segment} of "
                              f"{self.frames_per_segment} frames pushed)")
        with torch.no_grad():
            inputs = self.model.segment_inputs(segment)
            pa = inputs[:, 3:] if self.model.spec.keeps_rgb else (inputs if self.model.spec.uses_pa else None)
            return self._complete(inputs, pa)

    def _complete(self, inputs: torch.Tensor, pa: torch.Tensor | None) -> StepOutput:
        state = self.state
        index = int(state.count)
        warm = index + 1 >= self.num_segments
        if self.mode == "online":
            logits, feature, state.ring, state.count, *shift = self.inputs_step(
                inputs, state.ring, state.count, *state.shift)
            state.shift = list(shift)
            return StepOutput(index, logits, feature, warm, pa)
        state.ring = self._roll(state.ring, inputs, state.count)
        state.count = state.count + 1
        logits = None
        if warm and (index + 1 - self.num_segments) % self.stride == 0:
            logits = window_logits(self.model, state.ring)
        return StepOutput(index, logits, None, warm, pa)


# --------------------------------------------------------------------------- export


def traceable_stream(stream: StreamingPAN) -> StreamingPAN:
    """A copy of ``stream`` for tracing: eval mode, PA in its plain (branch-free) formulation, no state."""
    model = copy.deepcopy(stream.model).eval()
    for module in model.modules():
        if isinstance(module, PA):
            module.fast = False
    return StreamingPAN(model, stream.mode, stream.stride)


def step_names(stream: StreamingPAN) -> tuple[list[str], list[str]]:
    """Input and output names of the exported step, in order."""
    shift_in = [f"shift_{i}" for i in range(stream.num_shift_buffers)]
    if stream.mode == "window":
        return ["segment", "ring", "count"], ["logits", "ring_out", "count_out"]
    return (["segment", "ring", "count", *shift_in],
            ["logits", "feature", "ring_out", "count_out", *[f"{n}_out" for n in shift_in]])


def step_example(stream: StreamingPAN, height: int, width: int, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Example inputs of the step: a random segment and the initial state."""
    state = stream.initial_state(batch, height, width)
    segment = torch.randn(batch, stream.frames_per_segment * 3, height, width,
                          generator=torch.Generator().manual_seed(0))
    return (segment, state.ring, state.count, *state.shift)


def step_metadata(stream: StreamingPAN, height: int, width: int, **extra: Any) -> dict[str, Any]:
    """What an exported step records: the model, the stream mode, input and state names and shapes."""
    model = stream.model
    names_in, names_out = step_names(stream)
    example = step_example(stream, height, width)
    return {
        "kind": "pan_stream_step", "format_version": 1, "mode": stream.mode,
        "config": model.config(), "num_segments": model.num_segments,
        "frames_per_segment": model.new_length, "crop_size": height,
        "input_mean": list(model.input_mean), "input_std": list(model.input_std),
        "inputs": {n: list(t.shape) for n, t in zip(names_in, example)}, "outputs": names_out,
        "torch_version": torch.__version__, **extra,
    }


def export_step(stream: StreamingPAN, path: str, height: int, width: int, **extra: Any) -> dict[str, Any]:
    """Write the segment step (batch 1, state in and out) to ``path`` (``.pt2`` or ``.onnx``).

    Returns the metadata written with it (``extra`` added to :func:`step_metadata`).
    """
    from ops.files import atomic_write
    from ops.exported import backend_of, write_onnx

    backend = backend_of(path)
    plain = traceable_stream(stream)
    example = step_example(plain, height, width)
    metadata = step_metadata(plain, height, width, **extra)
    with torch.no_grad():
        program = torch.export.export(plain, example, strict=False)
    text = json.dumps(metadata, sort_keys=True)
    if backend == "torch.export":
        program.example_inputs = None
        atomic_write(path, lambda f: torch.export.save(program, f, extra_files={STEP_METADATA_NAME: text}))
        return metadata
    names_in, names_out = step_names(plain)
    write_onnx(program, path, names_in, names_out, {STEP_METADATA_NAME: text})
    return metadata


class ExportedStep:
    """An exported step (``.pt2`` or ``.onnx``) called like :meth:`StreamingPAN.segment_step`:
    ``step(segment, ring, count, *shift)`` -> a tuple of tensors."""

    def __init__(self, path: str) -> None:
        from ops.exported import backend_of, require

        self.path = path
        self.backend = backend_of(path)
        if not os.path.isfile(path):
            raise StreamError(f"{path}: no such exported step")
        if self.backend == "torch.export":
            import zipfile

            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("extra/" + STEP_METADATA_NAME)]
                if not names:
                    raise StreamError(f"{path}: not a stream step exported by ops.streaming (no {STEP_METADATA_NAME})")
                self.metadata = json.loads(archive.read(names[0]).decode("utf-8"))
            self._program = torch.export.load(path).module()
        else:
            ort = require("onnxruntime")
            onnx = require("onnx", "reading an ONNX file's metadata")
            props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
            if STEP_METADATA_NAME not in props:
                raise StreamError(f"{path}: not a stream step exported by ops.streaming (no {STEP_METADATA_NAME})")
            self.metadata = json.loads(props[STEP_METADATA_NAME])
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            self._names = [i.name for i in self._session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.backend == "torch.export":
            with torch.no_grad():
                return tuple(self._program(*inputs))
        feed = {name: t.detach().cpu().contiguous().numpy() for name, t in zip(self._names, inputs)}
        return tuple(torch.from_numpy(out) for out in self._session.run(None, feed))


@dataclass
class StepParity:
    """Exported step beside the eager stream over a run of segments."""

    backend: str
    steps: int
    max_abs_diff: float
    logit_scale: float
    max_rel_diff: float
    top1_agree: int


def step_parity(stream: StreamingPAN, exported: ExportedStep, segments: torch.Tensor) -> StepParity:
    """Run the eager step and ``exported`` over ``segments`` from the initial state, each feeding itself.

    Args:
        segments: ``[S, 1, m*3, H, W]``, the segments in order.
    """
    height, width = segments.shape[-2:]
    state = stream.initial_state(1, height, width)
    mine = (state.ring, state.count, *state.shift)
    theirs = tuple(t.clone() for t in mine)
    scale, diff, agree = 0.0, 0.0, 0
    with torch.no_grad():
        for segment in segments:
            expected = stream.segment_step(segment, *mine)
            got = exported(segment, *theirs)
            skip = 1 if stream.mode == "window" else 2  # logits (and feature) come before the state
            mine, theirs = expected[skip:], got[skip:]
            scale = max(scale, float(expected[0].abs().max()))
            diff = max(diff, float((got[0] - expected[0]).abs().max()))
            agree += int(torch.equal(got[0].argmax(-1), expected[0].argmax(-1)))
    return StepParity(exported.backend, len(segments), diff, scale, diff / max(scale, 1e-30), agree)


def split_segments(x: torch.Tensor, frames_per_segment: int) -> torch.Tensor:
    """``[N, S*m*3, H, W]`` clips as ``[S, N, m*3, H, W]`` segments in order."""
    n, channels, height, width = x.shape
    per = frames_per_segment * 3
    return x.reshape(n, channels // per, per, height, width).transpose(0, 1)


def split_frames(x: torch.Tensor) -> list[torch.Tensor]:
    """``[N, F*3, H, W]`` as ``F`` frames ``[N, 3, H, W]`` in order."""
    return list(x.reshape(x.shape[0], -1, 3, *x.shape[-2:]).unbind(1))


def stream_logits(stream: StreamingPAN, frames: Sequence[torch.Tensor]) -> list[StepOutput]:
    """Push ``frames`` one by one; the outputs of the completed segments, in order."""
    outputs = []
    for frame in frames:
        out = stream.push_frame(frame)
        if out is not None:
            outputs.append(out)
    return outputs

"""Reading checkpoints: the released PAN files and our own.

A released file is ``{epoch, arch, state_dict, optimizer, best_prec1}`` saved from
``nn.DataParallel`` (keys prefixed ``module.``); ours adds the model's
configuration (``modality``, ``num_segments``, ``model_config``...). Both load
with ``torch.load(..., weights_only=True)``: a file that needs arbitrary
unpickling is refused, never executed.

Loading into a model checks names and shapes strictly; on a mismatch the error
lists the missing, unexpected and mis-shaped entries and says what probably
differs (modality, backbone, class count, segments, shift).
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field

import torch
from torch import nn

from ops.errors import MissingFileError, PanError

DP_PREFIX = "module."


class CheckpointError(PanError, RuntimeError):
    """A checkpoint file that cannot be read or does not fit the model."""


def read_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint file safely (``weights_only=True``).

    A file holding a bare ``state_dict`` is returned as ``{"state_dict": ...}``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated, corrupt, or needs unsafe unpickling.
    """
    if not os.path.isfile(path):
        raise MissingFileError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): corrupt or an interrupted copy")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds objects that weights-only loading does not "
            f"allow (it would run code while loading). Only tensors and plain types are accepted. ({err})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {err}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict")
    if "state_dict" not in checkpoint:
        if not all(torch.is_tensor(v) for v in checkpoint.values()):
            raise CheckpointError(f"checkpoint {path} has no 'state_dict' entry and is not a state_dict itself")
        checkpoint = {"state_dict": checkpoint}
    return checkpoint


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str = DP_PREFIX) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` (DataParallel's ``module.``) from every key that has it."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


@dataclass
class StateDictDiff:
    """How a state_dict differs from a model's."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    #: (name, shape in checkpoint, shape in model)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)


def compare_state_dicts(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> StateDictDiff:
    """Names and shapes of ``given`` (a checkpoint) against ``expected`` (a model)."""
    diff = StateDictDiff(
        missing=[k for k in expected if k not in given],
        unexpected=[k for k in given if k not in expected],
    )
    for name, tensor in given.items():
        if name in expected and tuple(expected[name].shape) != tuple(tensor.shape):
            diff.mismatched.append((name, tuple(tensor.shape), tuple(expected[name].shape)))
    return diff


def likely_causes(diff: StateDictDiff, model_info: dict, checkpoint_info: dict) -> list[str]:
    """Plain-words guesses at why a checkpoint does not fit, from both sides' inferred configuration."""
    causes = []
    labels = {
        "modality": "modality",
        "arch": "backbone",
        "num_class": "class count",
        "num_segments": "number of segments (VAP)",
        "is_shift": "temporal shift",
        "shift_place": "shift place",
        "has_VAP": "VAP head",
        "temporal_pool": "temporal pooling",
    }
    for key, label in labels.items():
        ours, theirs = model_info.get(key), checkpoint_info.get(key)
        if ours is not None and theirs is not None and ours != theirs:
            causes.append(f"{label}: checkpoint has {theirs}, model has {ours}")
    return causes


def _format_diff(diff: StateDictDiff, limit: int = 10) -> str:
    def head(items: list) -> str:
        shown = ", ".join(str(i) for i in items[:limit])
        return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

    lines = []
    if diff.missing:
        lines.append(f"  missing in checkpoint ({len(diff.missing)}): {head(diff.missing)}")
    if diff.unexpected:
        lines.append(f"  unexpected in checkpoint ({len(diff.unexpected)}): {head(diff.unexpected)}")
    if diff.mismatched:
        shapes = [f"{n} {list(a)} vs model {list(b)}" for n, a, b in diff.mismatched]
        lines.append(f"  different shapes ({len(shapes)}): {head(shapes)}")
    return "\n".join(lines)


def load_model_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state_dict`` into ``model`` with strict name and shape checks.

    Accepts DataParallel/DDP-prefixed keys. On any difference, raises
    :class:`CheckpointError` naming the source, the differing keys and the
    likely cause.
    """
    state_dict = strip_prefix(state_dict)
    expected = model.state_dict()
    diff = compare_state_dicts(expected, state_dict)
    if diff:
        causes = likely_causes(diff, describe_state_dict(expected), describe_state_dict(state_dict))
        because = ("\n  likely cause: " + "; ".join(causes)) if causes else ""
        raise CheckpointError(f"{source} does not fit the model:\n{_format_diff(diff)}{because}")
    model.load_state_dict(state_dict, strict=True)


def describe_state_dict(state_dict: dict[str, torch.Tensor]) -> dict:
    """Infer a PAN model's configuration from its parameter names and shapes.

    Returns what can be told (``None`` where it cannot): ``modality``, ``arch``,
    ``num_class``, ``num_segments`` (from VAP's size, assuming a power of two),
    ``is_shift``, ``shift_place``, ``has_VAP``, ``temporal_pool``, ``data_length``.
    """
    sd = strip_prefix(state_dict)
    keys = list(sd)
    info: dict = {k: None for k in ("modality", "arch", "num_class", "num_segments", "data_length")}

    # ResNets name their first conv conv1; MobileNetV2 keeps it in its first feature block.
    conv1 = sd.get("base_model.conv1.weight", sd.get("base_model.features.0.0.weight"))
    if "PA.shallow_conv.weight" in sd:
        in_ch = conv1.shape[1] if conv1 is not None else None
        info["modality"] = "Lite" if in_ch is not None and in_ch > 3 else "PA"
        if in_ch is not None:
            info["data_length"] = in_ch - 2 if info["modality"] == "Lite" else in_ch + 1
    elif keys:
        info["modality"] = "RGB"

    # VAP replaces the backbone's classifier: ``fc`` on ResNets, ``classifier`` on MobileNetV2.
    head = next((f"base_model.{attr}" for attr in ("fc", "classifier") if f"base_model.{attr}.pred.weight" in sd), None)
    info["has_VAP"] = head is not None
    classifier = sd.get(f"{head}.pred.weight") if head else sd.get("new_fc.weight")
    if classifier is not None:
        info["num_class"] = int(classifier.shape[0])
    if head and f"{head}.TES.0.weight" in sd:
        scales = int(sd[f"{head}.TES.0.weight"].shape[1])  # 2**levels - 1
        info["num_segments"] = scales + 1

    info["is_shift"] = any(".net." in k and "PA." not in k for k in keys)
    if any(re.search(r"layer\d\.\d+\.conv1\.net\.", k) for k in keys):
        info["shift_place"] = "blockres"
    elif any(re.search(r"layer\d\.\d+\.net\.", k) for k in keys):
        info["shift_place"] = "block"
    else:
        info["shift_place"] = None
    info["temporal_pool"] = any(k.startswith("base_model.layer2.net.") for k in keys)
    info["arch"] = _infer_resnet(keys)
    if info["temporal_pool"] and info["num_segments"]:
        info["num_segments"] *= 2
    return info


_RESNET_DEPTHS = {  # (bottleneck, blocks in layer3) -> name
    (False, 2): "resnet18",
    (False, 6): "resnet34",
    (True, 6): "resnet50",
    (True, 23): "resnet101",
    (True, 36): "resnet152",
}


def _infer_resnet(keys: list[str]) -> str | None:
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"base_model\.layer3\.(?:net\.)?(\d+)\.", k))}
    if not blocks:
        return "mobilenet_v2" if any(k.startswith("base_model.features.") for k in keys) else None
    bottleneck = any(".conv3." in k for k in keys)
    return _RESNET_DEPTHS.get((bottleneck, max(blocks) + 1))


RELEASED_NAME = re.compile(
    r"PAN_(?P<modality>Lite|RGB|PA)_(?P<dataset>\w+?)_(?P<arch>resnet\d+|mobilenet_v2)"
    r"(?:_shift(?P<shift_div>\d+)_(?P<shift_place>blockres|block))?"
    r"_(?P<consensus_type>avg|identity)_segment(?P<num_segments>\d+)_e(?P<epochs>\d+)"
)


def parse_released_name(path: str) -> dict | None:
    """Configuration from the published file-name convention, or None.

    ``PAN_Lite_something_resnet50_shift8_blockres_avg_segment8_e80.pth.tar``
    -> modality Lite, dataset something, arch resnet50, shift 8 blockres,
    avg consensus, 8 segments.
    """
    match = RELEASED_NAME.search(os.path.basename(path))
    if not match:
        return None
    fields = match.groupdict()
    return {
        "modality": fields["modality"],
        "dataset": fields["dataset"],
        "arch": fields["arch"],
        "is_shift": fields["shift_div"] is not None,
        "shift_div": int(fields["shift_div"]) if fields["shift_div"] else 8,
        "shift_place": fields["shift_place"] or "blockres",
        "consensus_type": fields["consensus_type"],
        "num_segments": int(fields["num_segments"]),
    }

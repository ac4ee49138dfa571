"""The one home of a PAN model's configuration: :class:`ModelConfig`.

A configuration is what decides the model's architecture -- and so the names
and shapes of its ``state_dict`` -- plus its dropout. It is built

* from a training command line: :meth:`ModelConfig.from_args`,
* from one of our checkpoints, in the current or an older layout:
  :meth:`ModelConfig.from_checkpoint`,
* from a released file's name: :meth:`ModelConfig.from_released_name`
  (:meth:`ModelConfig.released` for the released models by modality and backbone),

turned into a model by :meth:`ops.models.PAN.from_config`, and written into a
checkpoint as :meth:`ModelConfig.to_dict` under ``model_config``, which
:meth:`ModelConfig.from_dict` reads back (the way nanoGPT rebuilds its model
from the saved ``model_args``). Where no single source states every field
(released files), :func:`ops.inference.resolve_model_config` layers the
partial sources (:meth:`ModelConfig.fields_of_checkpoint`,
:meth:`ModelConfig.fields_of_released_name`, :meth:`ModelConfig.fields_of_keys`)
field by field.

Names. The fields carry the published ``PAN`` constructor keywords
(``base_model``, ``data_length``, ``consensus_type``, ``has_VAP``), which are
also the keys of the ``model_config`` dict every earlier checkpoint of this
project holds and of the dry-run reports; so ``PAN(**cfg.to_dict())`` works
and a checkpoint needs no translation. Other names exist only at the edges,
each translated here once:

* command-line flags: ``--arch``, ``--shift``, ``--VAP`` (a field's ``flag`` metadata);
* the released checkpoints' (and our older checkpoints') top-level ``arch``,
  the released file names and the names read off parameter keys
  (:func:`ops.weights.parse_released_name`, :func:`ops.weights.describe_state_dict`)
  call the backbone ``arch`` (:data:`EDGE_NAMES`);
* ``PA(n_length=m)`` is the PA module's own published keyword for ``data_length``;
  ``PAN.new_length`` is not a setting but the frames read per segment that
  follow from it (1 for RGB, ``data_length`` for PA and Lite).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ops.modalities import DEFAULT_PA_LENGTH
from ops.weights import CheckpointError, describe_state_dict, parse_released_name

#: Other names of fields, as the edges spell them (released file names and checkpoints, parameter keys).
EDGE_NAMES = {"arch": "base_model"}

#: Top-level checkpoint entries that older checkpoints (and the released ones, for ``arch``)
#: hold beside ``model_config``; read for old files, no longer written.
LEGACY_TOP_LEVEL = ("modality", "arch", "num_segments")


@dataclass(frozen=True)
class ModelConfig:
    """A PAN model's configuration (immutable; plain values only).

    Fields (the ``PAN`` constructor keywords of the same names):
        modality: ``"RGB"``, ``"PA"`` or ``"Lite"``.
        base_model: backbone name (``resnet18/34/50/101/152``, ``mobilenet_v2``; flag ``--arch``).
        num_segments: segments per clip ``T``.
        num_class: classes of the classifier.
        is_shift: temporal shifts (TSM; flag ``--shift``).
        shift_div: a ``1/shift_div`` share of channels moves each way.
        shift_place: ``"blockres"`` or ``"block"``.
        shift_mode: ``"bidirectional"`` (the published two-way shift; checkpoints
            without the field) or ``"online"`` (one-way, from the previous segment
            only: a model that streams, :mod:`ops.streaming`).
        temporal_pool: halve the segments after layer1.
        data_length: frames per segment ``m`` for PA and Lite (``PA``'s ``n_length``).
        has_VAP: VAP head instead of linear + consensus (flag ``--VAP``).
        consensus_type: ``"avg"`` or ``"identity"``.
        dropout: dropout before the classifier; a training setting, not part of
            the architecture (may change on resume, not read from checkpoints
            for evaluation).

    The field order is the order of every report (resolved configuration, the
    checkpoint's ``model_config``, differences on resume).

    Field metadata (all optional):
        ``flag``: the ``argparse`` destination when it is not the field's name.
        ``architecture``: False for a setting that leaves the parameters alone (dropout).
        ``assumed``: the value taken for a file that does not state the field
            (the released models' setting), when it is not the default.
        Fields without a default must be known to build a model; the resolver
        refuses a checkpoint that does not tell them, except ``num_class``,
        which the dataset gives.

    Adding a field (for instance ``shift_mode``) is one line here, with a
    default that reproduces the behaviour before the field existed::

        shift_mode: str = field(default="bidirectional")

    Then, with nothing else to list: ``from_args`` reads ``args.shift_mode``
    (the training flag of that name, or ``metadata={"flag": ...}``), checkpoints
    store it in ``model_config`` and older ones read back with the default,
    ``--resume`` refuses a run that differs in it, the resolver takes it from
    a checkpoint or from an evaluation flag of that name defaulting to None
    (``overrides_from_args``), and ``PAN.from_config`` passes it to the ``PAN``
    keyword of the same name -- which the model must accept and use.
    """

    modality: str
    base_model: str = field(metadata={"flag": "arch"})
    num_segments: int
    num_class: int
    is_shift: bool = field(default=False, metadata={"flag": "shift", "assumed": True})
    shift_div: int = 8
    shift_place: str = "blockres"
    shift_mode: str = "bidirectional"
    temporal_pool: bool = False
    data_length: int = DEFAULT_PA_LENGTH
    has_VAP: bool = field(default=False, metadata={"flag": "VAP"})
    consensus_type: str = "avg"
    dropout: float = field(default=0.8, metadata={"architecture": False})

    # ------------------------------------------------------------------ the fields themselves
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every field, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def architecture_fields(cls) -> tuple[str, ...]:
        """The fields that decide the parameters (all but dropout), in declaration order.

        These are what a checkpoint may state, a flag may override, and a resumed run must share.
        """
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("architecture", True))

    @classmethod
    def required_fields(cls) -> tuple[str, ...]:
        """Fields without a default: a configuration must name them."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING)

    @classmethod
    def assumed_values(cls) -> dict[str, Any]:
        """``{field: value}`` for the architecture fields with a default, as assumed when no
        source states them: the released models' setting (``assumed``) or else the default.

        ``has_VAP`` takes its default (off): the parameter names always tell it, so
        it is only assumed for a file that is not there (a dry run).
        """
        return {
            f.name: f.metadata.get("assumed", f.default)
            for f in dataclasses.fields(cls)
            if f.metadata.get("architecture", True) and f.default is not dataclasses.MISSING
        }

    @classmethod
    def known(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``values`` that name a field, edge names (``arch``) translated
        and ``None`` (not told) dropped."""
        names = set(cls.field_names())
        out: dict[str, Any] = {}
        for key, value in values.items():
            name = EDGE_NAMES.get(key, key)
            if name in names and value is not None:
                out[name] = value
        return out

    # ------------------------------------------------------------------ whole configurations
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """The configuration a ``model_config`` dict (:meth:`to_dict`) describes.

        Fields it lacks take their defaults (a checkpoint written before a field
        existed); keys that name no field are refused.

        Raises:
            ValueError: a key names no field, or a field without a default is missing.
        """
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"model_config has unknown field(s) {', '.join(unknown)}")
        missing = [name for name in cls.required_fields() if name not in values]
        if missing:
            raise ValueError(f"model_config lacks {', '.join(missing)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """``{field: value}`` in declaration order: the checkpoint's ``model_config``, and the
        ``PAN`` constructor keywords."""
        return {name: getattr(self, name) for name in self.field_names()}

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes`` applied (field names)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_args(cls, args: argparse.Namespace, num_class: int) -> ModelConfig:
        """The configuration a training command line describes (``main.py``'s flags, after
        :func:`ops.train_args.resolve_args`); ``num_class`` comes from the dataset."""
        values = {
            f.name: getattr(args, f.metadata.get("flag", f.name))
            for f in dataclasses.fields(cls)
            if f.name != "num_class"
        }
        return cls(num_class=num_class, **values)

    @classmethod
    def overrides_from_args(cls, args: argparse.Namespace, **given: Any) -> dict[str, Any]:
        """Architecture fields set on an evaluation command line, for the resolver.

        Each field's flag that ``args`` has (evaluation flags default to None:
        not given) is read; ``given`` (e.g. ``num_segments`` from
        ``--test_segments``) wins. ``num_class`` is never an override: it is
        the dataset's, and a checkpoint for another class count is refused by
        the strict load. Returns ``{field: value or None}``.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "num_class" or not f.metadata.get("architecture", True):
                continue
            out[f.name] = getattr(args, f.metadata.get("flag", f.name), None)
        out.update(given)
        return out

    @classmethod
    def released(
        cls,
        modality: str,
        base_model: str,
        num_class: int = 174,
        num_segments: int = 8,
        **changes: Any,
    ) -> ModelConfig:
        """A released model's configuration: TSM shift 1/8 ``blockres``, VAP, average
        consensus, ``m = 4``, trained with dropout 0.5 (the published command lines);
        ``changes`` for what a file name says otherwise."""
        values = {**cls.assumed_values(), "has_VAP": True, "dropout": 0.5, **changes}
        return cls(modality=modality, base_model=base_model, num_class=num_class, num_segments=num_segments,
                   **values)

    @classmethod
    def from_released_name(cls, path: str, num_class: int) -> ModelConfig:
        """The configuration a released file's name describes
        (``PAN_Lite_something_resnet50_shift8_blockres_avg_segment8_e80.pth.tar``).

        Raises:
            ValueError: the name does not follow the released convention.
        """
        stated = cls.fields_of_released_name(path)
        if not stated:
            raise ValueError(f"{path}: not a released file name (PAN_<modality>_<dataset>_<arch>_..._segment<T>_e<E>)")
        return cls.released(num_class=num_class, **stated)

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any], source: str = "the checkpoint") -> ModelConfig:
        """The configuration one of our checkpoints states: its ``model_config`` (every
        version of this project writes one), completed by the older top-level
        ``modality``/``arch``/``num_segments`` entries. ``source`` names the file in errors.

        Raises:
            CheckpointError: the checkpoint does not state a field without a default
                (a released file: resolve it with :func:`ops.inference.resolve_model_config`).
        """
        stated = cls.fields_of_checkpoint(checkpoint)
        missing = [name for name in cls.required_fields() if name not in stated]
        if missing:
            raise CheckpointError(f"{source} does not state its {', '.join(missing)}")
        return cls(**stated)

    # ------------------------------------------------------------------ partial sources
    @classmethod
    def fields_of_checkpoint(cls, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
        """What a checkpoint states about its model (any subset of the fields; empty for
        released files but their ``arch``): ``model_config`` wins over the old top-level entries."""
        found: dict[str, Any] = {}
        model_config = checkpoint.get("model_config")
        if isinstance(model_config, Mapping):
            found.update({k: v for k, v in model_config.items() if k in cls.field_names()})
        legacy = cls.known({key: checkpoint.get(key) for key in LEGACY_TOP_LEVEL})
        for name, value in legacy.items():
            found.setdefault(name, value)
        return found

    @classmethod
    def fields_of_released_name(cls, path: str) -> dict[str, Any]:
        """What a file name in the released convention states (empty for any other name):
        modality, backbone, segments, shift (its fold and place only when shifted), consensus."""
        parsed = parse_released_name(path)
        if parsed is None:
            return {}
        keep = ["modality", "arch", "num_segments", "is_shift", "consensus_type"]
        if parsed["is_shift"]:
            keep += ["shift_div", "shift_place"]
        return cls.known({key: parsed[key] for key in keep})

    @classmethod
    def fields_of_keys(cls, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """What the parameter names and shapes imply (:func:`ops.weights.describe_state_dict`);
        empty for an empty ``state_dict`` (a dry run reads no file)."""
        if not state_dict:
            return {}
        implied = cls.known(describe_state_dict(dict(state_dict)))
        return {k: v for k, v in implied.items() if k in cls.architecture_fields()}

    def differences(self, other: ModelConfig) -> list[tuple[str, Any, Any]]:
        """``(field, other's value, this value)`` for each architecture field that differs,
        in declaration order (dropout is left out: it may change between runs)."""
        return [
            (name, getattr(other, name), getattr(self, name))
            for name in self.architecture_fields()
            if getattr(other, name) != getattr(self, name)
        ]

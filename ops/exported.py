"""Exported PAN models (``.pt2`` from ``torch.export``, ``.onnx`` from the dynamo exporter) as one backend.

``tools/export.py`` writes the files; this module reads them back, for
``test_models.py --weights model.pt2|model.onnx``, the demo and the parity
check. The backend is chosen by the file's extension:

* ``.pt2``: :func:`torch.export.load`, run as the program's ``module()``
  (plain PyTorch, no optional package);
* ``.onnx``: an ``onnxruntime`` session on the CPU (``onnx``, ``onnxscript``
  and ``onnxruntime`` are optional dependencies: a missing one is named,
  with the command that installs it).

Both carry the same metadata (:class:`ExportMetadata`, JSON): the modality,
backbone and the rest of ``PAN.config()``, segments, frames per segment, crop
size, input layout and normalisation, class names, the source checkpoint and
its sha256, the torch version. The batch is the one dynamic dimension; the
segments, frames per segment and crop size are fixed by the file, and an input
of another shape is refused with the expected shape named.

:class:`ExportedModel` is an ``nn.Module`` with the attributes of
:class:`ops.models.PAN` that the evaluation needs (``num_class``,
``num_segments``, ``new_length``, ``crop_size``, ``input_mean``,
``input_std``), so ``ops.evaluation.build_dataset`` and ``run_batch`` take it
as they take a PAN model.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ops.errors import PanError

#: Extensions of exported files, and the backend each one runs on.
BACKENDS = {".pt2": "torch.export", ".onnx": "onnxruntime"}
#: Name of the metadata inside a ``.pt2`` archive (``extra_files``) and key in an ONNX file's ``metadata_props``.
METADATA_NAME = "pan_metadata.json"
#: Version of the metadata's layout; a reader refuses a newer one.
METADATA_VERSION = 1
#: Layout of the one input, as recorded in the metadata.
INPUT_LAYOUT = "[N, T*m*3, H, W] float32: N clips (dynamic), T segments of m frames, RGB, normalised by input_mean/std"
#: Input and output names of the ONNX graph.
ONNX_INPUT, ONNX_OUTPUT = "clips", "logits"
#: The optional packages of the ONNX path, and what each is needed for.
ONNX_PACKAGES = {"onnx": "ONNX export", "onnxscript": "ONNX export", "onnxruntime": "running ONNX files"}


class MissingDependencyError(PanError, ImportError):
    """An optional package is not installed; the message names it and how to install it."""


class ExportedModelError(PanError, ValueError):
    """An exported file that cannot be used (unknown extension, no or newer metadata, wrong input)."""


def write_onnx(program: torch.export.ExportedProgram, path: str, input_names: list[str],
               output_names: list[str], metadata: dict[str, str]) -> None:
    """Convert ``program`` with the dynamo ONNX exporter and write it to ``path`` with ``metadata`` as the
    model's ``metadata_props``; the file appears complete or not at all (a temporary sibling renamed).

    Raises :class:`MissingDependencyError` naming ``onnx`` or ``onnxscript`` when one is missing.
    """
    for package in ("onnx", "onnxscript"):
        require(package, "ONNX export")
    for name in ("onnxscript", "onnx_ir"):  # their INFO lines list every rewrite, hundreds per model
        logging.getLogger(name).setLevel(logging.WARNING)
    onnx_program = torch.onnx.export(program, dynamo=True, input_names=input_names, output_names=output_names,
                                     verbose=False)
    for key, value in metadata.items():
        onnx_program.model.metadata_props[key] = value
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp.onnx")
    try:
        onnx_program.save(tmp, external_data=False)  # writes by path, so atomic_write cannot wrap it
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def require(package: str, purpose: str | None = None) -> Any:
    """Import the optional ``package`` or raise :class:`MissingDependencyError` naming it."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        purpose = purpose or ONNX_PACKAGES.get(package, "this feature")
        raise MissingDependencyError(
            f"{purpose} needs the optional package '{package}', which is not installed ({err}); install it "
            f"with `pip install {package}` (or all of them: `pip install -r requirements-deploy.txt`)"
        ) from None


def backend_of(path: str) -> str:
    """``'torch.export'`` or ``'onnxruntime'`` by the file's extension.

    Raises:
        ExportedModelError: neither ``.pt2`` nor ``.onnx``.
    """
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in BACKENDS:
        raise ExportedModelError(f"{path}: an exported model ends in {' or '.join(BACKENDS)}, not {ext or 'nothing'}")
    return BACKENDS[ext]


def is_exported(path: str) -> bool:
    """Whether ``path`` names an exported model (by extension), not a checkpoint."""
    return os.path.splitext(str(path))[1].lower() in BACKENDS


@dataclass
class ExportMetadata:
    """What an exported file records about its model (JSON in the file)."""

    modality: str
    arch: str
    num_class: int
    num_segments: int
    #: Frames per segment the input holds (``m`` for PA and Lite, 1 for RGB).
    frames_per_segment: int
    crop_size: int
    scale_size: int
    input_mean: list[float]
    input_std: list[float]
    #: ``PAN.config()`` of the exported model.
    config: dict[str, Any]
    class_names: list[str] | None = None
    source: str | None = None
    source_sha256: str | None = None
    torch_version: str = torch.__version__
    exporter: str = ""
    input_layout: str = INPUT_LAYOUT
    #: ``[None, C, H, W]``: the input's shape, ``None`` for the dynamic batch.
    input_shape: list[int | None] = field(default_factory=list)
    format_version: int = METADATA_VERSION

    def __post_init__(self) -> None:
        if not self.input_shape:
            channels = self.num_segments * self.frames_per_segment * 3
            self.input_shape = [None, channels, self.crop_size, self.crop_size]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: str = "exported file") -> "ExportMetadata":
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as err:
            raise ExportedModelError(f"{path}: its PAN metadata is not JSON ({err})") from None
        version = data.get("format_version", 0)
        if not isinstance(version, int) or version > METADATA_VERSION:
            raise ExportedModelError(
                f"{path}: metadata format {version!r} is newer than this code reads ({METADATA_VERSION}); "
                f"update the repository")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError as err:
            raise ExportedModelError(f"{path}: incomplete PAN metadata ({err})") from None

    def summary(self) -> dict[str, Any]:
        """The fields ``test_models.py`` logs for a model, as for a checkpoint's resolved configuration."""
        return {"modality": self.modality, "base_model": self.arch, "num_segments": self.num_segments,
                "num_class": self.num_class, "crop_size": self.crop_size,
                "frames_per_segment": self.frames_per_segment}


# --------------------------------------------------------------------------- reading


def read_metadata(path: str) -> ExportMetadata:
    """The metadata of an exported file, without loading its weights into a runtime."""
    backend = backend_of(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such exported model")
    if backend == "torch.export":
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("extra/" + METADATA_NAME)]
                if not names:
                    raise ExportedModelError(f"{path}: a .pt2 file without PAN metadata (not written by tools/export.py)")
                return ExportMetadata.from_json(archive.read(names[0]).decode("utf-8"), path)
        except zipfile.BadZipFile as err:
            raise ExportedModelError(f"{path}: not a .pt2 archive ({err})") from None
    onnx = require("onnx", "reading an ONNX file's metadata")
    model = onnx.load(path, load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_NAME not in props:
        raise ExportedModelError(f"{path}: an ONNX file without PAN metadata (not written by tools/export.py)")
    return ExportMetadata.from_json(props[METADATA_NAME], path)


class _OnnxRunner:
    """An onnxruntime CPU session behind a torch-in, torch-out call."""

    def __init__(self, path: str, threads: int | None) -> None:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(logits)


class ExportedModel(nn.Module):
    """An exported PAN model (``.pt2`` or ``.onnx``) with PAN's evaluation attributes.

    ``forward(x)``: ``[N, T*m*3, H, W]`` float32 -> ``[N, num_class]`` float32
    logits on ``x``'s device. ``threads``: onnxruntime's intra-op threads
    (default: ``torch.get_num_threads()``, so both backends use as many).

    Raises:
        ExportedModelError: unknown extension or missing/newer metadata.
        MissingDependencyError: an ``.onnx`` file without ``onnxruntime`` (or ``onnx``).
        FileNotFoundError: no such file.
    """

    def __init__(self, path: str, threads: int | None = None) -> None:
        super().__init__()
        self.path = str(path)
        self.backend = backend_of(self.path)
        self.metadata = read_metadata(self.path)
        meta = self.metadata
        self.modality, self.arch = meta.modality, meta.arch
        self.num_class, self.num_segments = meta.num_class, meta.num_segments
        self.new_length = meta.frames_per_segment
        self.crop_size = self.input_size = meta.crop_size
        self.scale_size = meta.scale_size
        self.input_mean, self.input_std = list(meta.input_mean), list(meta.input_std)
        self.class_names = meta.class_names
        self._onnx: _OnnxRunner | None = None
        program = None
        if self.backend == "torch.export":
            program = torch.export.load(self.path).module()
        else:
            self._onnx = _OnnxRunner(self.path, threads)
        # Not a registered submodule: the exported program's module refuses train()/eval()
        # (it runs as exported, in eval mode); _apply below still moves its weights with .to().
        object.__setattr__(self, "program", program)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module's signature
        super()._apply(fn, recurse)
        if self.program is not None:
            self.program._apply(fn)
        return self

    def config(self) -> dict[str, Any]:
        return dict(self.metadata.config)

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse, naming the expected shape, an input the file was not exported for."""
        expected = self.metadata.input_shape[1:]
        if x.dim() != 4 or list(x.shape[1:]) != expected or x.shape[0] < 1:
            raise ExportedModelError(
                f"{self.path} takes [N, {', '.join(map(str, expected))}] ({self.num_segments} segments x "
                f"{self.new_length} frames x 3 channels, {self.crop_size}x{self.crop_size} crops), got "
                f"{list(x.shape)}; segments, frames per segment and crop size are fixed at export "
                f"(re-export for others)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self._onnx is not None:
            return self._onnx(x).to(x.device)
        return self.program(x.float())

    def extra_repr(self) -> str:
        return (f"{self.path}, backend={self.backend}, PAN {self.modality} {self.arch}, "
                f"{self.num_segments}x{self.new_length} frames at {self.crop_size}px, {self.num_class} classes")


def load_for_evaluation(path: str, num_class: int | None, overrides: dict[str, Any] | None = None,
                        options: Any = None) -> ExportedModel:
    """An exported model for ``test_models.py``, checked against the dataset and the flags.

    ``overrides``: ``test_models.py``'s model flags (``None`` values are
    unset); a set one must agree with the file, since an exported model's
    architecture, segments and size are fixed. ``options``: the fast-path
    switches (:class:`ops.inference.InferenceOptions`), which apply to
    checkpoints only and are refused here.

    Raises:
        ExportedModelError: the class count, a flag or a fast-path switch disagrees with the file.
    """
    model = ExportedModel(path)
    if num_class is not None and num_class != model.num_class:
        raise ExportedModelError(
            f"{path} has {model.num_class} classes but the dataset has {num_class}: it belongs to another dataset")
    stated = dict(model.metadata.config, num_segments=model.num_segments)
    for name, value in (overrides or {}).items():
        if value is not None and name in stated and stated[name] != value:
            raise ExportedModelError(
                f"{path} was exported with {name}={stated[name]!r}; the flag asks for {value!r}, which needs a "
                f"new export from the checkpoint (tools/export.py)")
    if options is not None:
        asked = [name for name in ("amp", "channels_last", "fuse_bn", "compile") if getattr(options, name, False)]
        if asked:
            raise ExportedModelError(
                f"--{', --'.join(asked)} apply to checkpoints; {path} runs as it was exported (fp32)")
    return model.eval()


def load_evaluation_model(path: str, num_class: int | None, overrides: dict[str, Any] | None = None,
                          options: Any = None) -> tuple[nn.Module, Any, dict]:
    """``(model, resolved configuration, checkpoint)`` for ``test_models.py``, whatever ``path`` holds.

    An exported file (``.pt2``/``.onnx``) gives an :class:`ExportedModel`
    (:func:`load_for_evaluation`), its configuration with ``'exported file'``
    as every value's source, and in place of the checkpoint a dict whose
    ``args`` hold the exported crop and scale size (where the demo reads a
    training run's); anything else is a checkpoint, read by
    :func:`ops.inference.load_checkpoint_model`. ``num_class`` ``None``: the file's.
    """
    from ops.inference import ResolvedConfig, load_checkpoint_model

    if not is_exported(path):
        return load_checkpoint_model(path, num_class, overrides)
    model = load_for_evaluation(path, num_class, overrides, options)
    config = {**model.metadata.config, **model.metadata.summary()}
    sizes = {"crop_size": model.crop_size, "scale_size": model.scale_size}
    return model, ResolvedConfig(config, {k: "exported file" for k in config}), {"args": sizes}

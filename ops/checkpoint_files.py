"""Writing our training checkpoints safely, and reading them back verified.

Format (plain types and tensors only, so ``torch.load(weights_only=True)``
reads it; see docs/TRAINING.md for every field)::

    {"epoch", "step_in_epoch", "dataset", "model_config",
     "state_dict", "optimizer", "scheduler", "scaler", "best_prec1", "args",
     "rng_state", "sampler_state", "bad_samples", "world_size", "batch_size",
     "list_file_sha256", "format_version", "content_sha256"}

Integrity: ``content_sha256`` is a SHA-256 over the *content* of every other
entry (keys, tensor dtypes, shapes and bytes, plain values), computed before
saving and checked after loading by :func:`verify_checkpoint`. Keeping it
inside the file (rather than in a sidecar) means the file and its hash are
replaced by one atomic rename, so no crash can leave a checkpoint and a hash
that disagree. A truncated, empty or bit-flipped file fails either to load or
to match, and is reported as corrupt with its path. Files without the entry
(the released models) load, with a note that they cannot be verified.
``format_version`` is checked before the hash: a version newer than
:data:`FORMAT_VERSION` is refused (:class:`CheckpointVersionError`, never taken
for corrupt); older ones and files without it are read.

Atomicity (:func:`atomic_save`): the file is written to a temporary file in
the same folder (``.<name>.<pid>@<host>.<random>.tmp``), flushed and ``fsync``-ed, renamed
over the old one, then the folder is ``fsync``-ed so the rename itself is
durable. A process killed at any moment leaves the old file or the new one,
never a mix; stale temporary files of killed writers are removed by the next
save -- only those of writers provably dead (:func:`remove_stale_temps`), never
a live run's. Before a new ``ckpt.pth.tar`` replaces the old one, the old one is kept
as ``ckpt.prev.pth.tar`` (a hard link, so it costs no copy), which
``--resume auto`` falls back to when the latest file is corrupt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import struct
from collections.abc import Mapping

import numpy as np
import torch

from ops.files import TMP_SUFFIX, atomic_write, fsync_dir, remove_stale_temps
from ops.run_lock import writer_tag
from ops.weights import CheckpointError, read_checkpoint

logger = logging.getLogger(__name__)

CKPT_NAME = "ckpt.pth.tar"
BEST_NAME = "ckpt.best.pth.tar"
PREV_NAME = "ckpt.prev.pth.tar"
CHECKSUM_KEY = "content_sha256"
FORMAT_VERSION = 1
#: ``--resume`` value that resumes from the run's own folder.
RESUME_AUTO = "auto"


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (full disk, permissions); the previous file is intact."""


class CheckpointVersionError(CheckpointError):
    """A checkpoint of a newer :data:`FORMAT_VERSION` than this code reads (not a corrupt file)."""


def check_format_version(checkpoint: Mapping, path: str) -> None:
    """Refuse a ``format_version`` newer than :data:`FORMAT_VERSION` (or not an integer >= 0).

    Resuming from a newer format would silently drop the fields this code does not
    know at the next save, so it is refused; older formats (and files without the
    field: released models, checkpoints from before it) are read.
    """
    version = checkpoint.get("format_version")
    if version is None:
        return
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise CheckpointError(f"checkpoint {path} has an unreadable format_version {version!r} "
                              f"(expected an integer from 0 to {FORMAT_VERSION})")
    if version > FORMAT_VERSION:
        raise CheckpointVersionError(
            f"checkpoint {path} has format version {version}, and this code reads versions up to "
            f"{FORMAT_VERSION}: it was written by a newer version of this project. Update the code to "
            f"use it (resuming with this version would drop the fields it does not know)."
        )


# ------------------------------------------------------------------ hashing


def content_sha256(obj: object) -> str:
    """SHA-256 of a checkpoint's content, independent of how ``torch.save`` lays it out.

    Covers dict keys (in sorted order), list items, tensor dtype, shape and
    bytes, and plain values (floats by their exact hex form). The
    :data:`CHECKSUM_KEY` entry of a top-level dict is left out.
    """
    h = hashlib.sha256()
    if isinstance(obj, Mapping):
        obj = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: "hashlib._Hash", obj: object) -> None:
    def tag(kind: bytes, payload: bytes = b"") -> None:
        h.update(kind + struct.pack("<Q", len(payload)) + payload)

    if torch.is_tensor(obj):
        t = obj.detach().to("cpu").contiguous()
        tag(b"T", f"{t.dtype}:{tuple(t.shape)}".encode())
        # A uint8 view hashes every dtype (bfloat16 included) without conversion.
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, Mapping):
        tag(b"D", str(len(obj)).encode())
        for key in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        tag(b"L", str(len(obj)).encode())
        for item in obj:
            _feed(h, item)
    elif isinstance(obj, bool) or obj is None:
        tag(b"B", repr(obj).encode())
    elif isinstance(obj, int):
        tag(b"I", str(obj).encode())
    elif isinstance(obj, float):
        tag(b"F", obj.hex().encode())
    elif isinstance(obj, str):
        tag(b"S", obj.encode("utf-8", "surrogatepass"))
    elif isinstance(obj, bytes):
        tag(b"Y", obj)
    else:
        raise TypeError(f"checkpoint holds a {type(obj).__name__}; only tensors and plain types are allowed")


# ------------------------------------------------------------------ plain types


def to_plain(obj: object) -> object:
    """``obj`` with numpy scalars/arrays, tuples and paths turned into plain Python types.

    Used for ``args`` so that ``weights_only`` loading accepts the checkpoint.
    Raises ``TypeError`` naming anything else.
    """
    if isinstance(obj, Mapping):
        return {str(k) if not isinstance(k, (int, str)) else k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)) or torch.is_tensor(obj):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint: {obj!r}")


def non_finite_entries(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or infinity."""
    return [
        name
        for name, t in state_dict.items()
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


# ------------------------------------------------------------------ RNG state


def capture_rng_state() -> dict:
    """The global random states (torch CPU and CUDA, numpy, Python) as plain types and tensors."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: Mapping) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only where the devices exist)."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ------------------------------------------------------------------ writing


def _write_error(path: str, err: BaseException) -> CheckpointWriteError:
    return CheckpointWriteError(
        f"could not write checkpoint {path}: {err}. The previous checkpoint (if any) is intact; "
        f"free disk space or fix the folder's permissions, then resume with --resume auto."
    )


def atomic_save(obj: dict, path: str) -> str:
    """``torch.save`` ``obj`` to ``path`` atomically, adding its :data:`CHECKSUM_KEY`; returns the hash.

    Raises :class:`CheckpointWriteError` (temporary file removed, old file
    untouched) when the disk is full or the folder is not writable.
    """
    digest = content_sha256(obj)
    obj = {**obj, CHECKSUM_KEY: digest}
    remove_stale_temps(path)
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except (OSError, RuntimeError) as err:  # torch's zip writer reports a full disk as RuntimeError
        raise _write_error(path, err) from None
    return digest


def keep_previous(path: str, prev_path: str) -> None:
    """Make ``prev_path`` a durable copy of ``path`` (hard link; a copy where links fail)."""
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(prev_path)}.{writer_tag()}.link{TMP_SUFFIX}")
    remove_stale_temps(prev_path)
    if os.path.exists(prev_path) and os.path.samefile(path, prev_path):
        # A save killed after this step already linked them; renaming a link over
        # another link of the same file would do nothing and leave tmp behind.
        return
    try:
        os.link(path, tmp)
    except OSError as err:
        logger.info("cannot hard-link %s (%s); copying it to %s instead", path, err, prev_path)
        try:
            shutil.copyfile(path, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        except OSError as copy_err:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise _write_error(prev_path, copy_err) from None
    os.replace(tmp, prev_path)
    fsync_dir(folder)


def save_checkpoint(state: dict, folder: str, is_best: bool = False) -> str:
    """Write ``state`` as ``<folder>/ckpt.pth.tar`` (and ``ckpt.best.pth.tar`` when best).

    Refuses (``CheckpointError``) a state whose weights hold NaN or infinity.
    The file being replaced is kept as ``ckpt.prev.pth.tar``. Returns the path.
    """
    bad = non_finite_entries(state["state_dict"])
    if bad:
        raise CheckpointError(
            f"refusing to save a checkpoint with non-finite weights in {len(bad)} tensor(s): {', '.join(bad[:5])}"
        )
    path = os.path.join(folder, CKPT_NAME)
    if os.path.isfile(path):
        keep_previous(path, os.path.join(folder, PREV_NAME))
    atomic_save(state, path)
    if is_best:
        atomic_save(state, os.path.join(folder, BEST_NAME))
    return path


# ------------------------------------------------------------------ reading


def read_verified_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Load ``path`` with ``weights_only=True`` and check its :data:`CHECKSUM_KEY`.

    Raises:
        FileNotFoundError: no such file.
        CheckpointVersionError: written in a newer format (checked first: a newer
            format may hash differently, and must not be taken for a corrupt file).
        CheckpointError: unreadable, truncated, empty, unsafe, or the content
            does not match its hash; the message names the path.
    """
    checkpoint = read_checkpoint(path, map_location=map_location)
    check_format_version(checkpoint, path)
    expected = checkpoint.get(CHECKSUM_KEY)
    if expected is None:
        logger.info("checkpoint %s carries no %s (not written by this trainer); it cannot be verified",
                    path, CHECKSUM_KEY)
        return checkpoint
    try:
        actual = content_sha256(checkpoint)
    except TypeError as err:
        raise CheckpointError(f"checkpoint {path} is corrupt: {err}") from None
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its content hash is {actual[:16]}..., the file records "
            f"{str(expected)[:16]}... (bit flip or partial overwrite)"
        )
    return checkpoint


def verify_checkpoint(path: str) -> None:
    """Raise :class:`~ops.weights.CheckpointError` naming ``path`` if the file is corrupt.

    Checks that the file loads with ``weights_only=True`` and that its content
    matches the SHA-256 stored inside (``content_sha256``). Files without the
    entry (released models) pass with a logged note.
    """
    read_verified_checkpoint(path)


def resolve_resume(resume: str, folder: str) -> tuple[str, dict] | None:
    """Find and load the checkpoint ``--resume`` asks for.

    ``resume == "auto"``: ``<folder>/ckpt.pth.tar``; when it is corrupt, warn,
    rename it to ``*.corrupt`` (kept for inspection, never rotated into the
    fallback) and use ``ckpt.prev.pth.tar``. Returns None when the folder has
    no checkpoint yet (a fresh start). Any other value is a path that must
    load and verify, or :class:`CheckpointError` / ``FileNotFoundError`` is raised.
    """
    if resume != RESUME_AUTO:
        return resume, read_verified_checkpoint(resume)
    latest, prev = os.path.join(folder, CKPT_NAME), os.path.join(folder, PREV_NAME)
    errors = []
    for path in (latest, prev):
        if not os.path.isfile(path):
            continue
        try:
            return path, read_verified_checkpoint(path)
        except CheckpointVersionError:
            raise  # a good file of a newer version: falling back past it would lose its progress
        except CheckpointError as err:
            errors.append(str(err))
            logger.warning("--resume auto: %s; trying the previous checkpoint", err)
            corrupt = path + ".corrupt"
            os.replace(path, corrupt)
            logger.warning("--resume auto: moved the corrupt file to %s", corrupt)
    if errors:
        raise CheckpointError("--resume auto found no loadable checkpoint in " + folder + ":\n" + "\n".join(errors))
    return None



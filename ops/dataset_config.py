"""Registry of the datasets PAN knows, with no personal paths.

Each entry says how many classes a dataset has, where its category file and
list files are (relative to the dataset's root), how its frames are named and
whether horizontal flipping is allowed. The root comes from ``--root_path`` or,
when that is not given, from the environment variable ``PAN_DATA_ROOT`` joined
with the dataset's name (``$PAN_DATA_ROOT/kinetics``). The synthetic set of the
quickstart is the one entry with a built-in default root (``data/synthetic``
under the repository), because the quickstart generates it there.

A custom dataset needs no code change: give ``--train_list``, ``--val_list``
and ``--num_class`` (and ``--image_tmpl`` if its frames are not
``img_{:05d}.jpg``), or register it in a JSON file named by the environment
variable ``PAN_DATASETS`` (or passed as ``dataset_file``)::

    {"mydata": {"num_class": 10, "train_list": "train.txt", "val_list": "val.txt",
                "category_file": "classes.txt", "image_tmpl": "{:06d}.jpg",
                "flip": true, "root_path": "/data/mydata"}}

``reverse_label_map`` (``{"0": 1, "1": 0}``) names, for a dataset whose classes
come in time-reversed pairs, the label of a clip played backwards; with it,
``main.py --reverse_aug`` plays training clips backwards half of the time. Both
maps swap pairs; a label they do not name is its own mirror or reverse.

See ``docs/DATA.md`` for the preparation of each dataset.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ops.errors import PanError

class DatasetConfigError(PanError, ValueError):
    """A dataset that cannot be configured: unknown name, missing lists or root, a bad registration or
    category file; the message names the file and line or the flag."""


#: Environment variable holding the directory under which each dataset lives.
DATA_ROOT_ENV = "PAN_DATA_ROOT"
#: Environment variable naming a JSON file of user dataset entries.
DATASETS_FILE_ENV = "PAN_DATASETS"

_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class DatasetConfig:
    """Everything the data pipeline needs to know about one dataset.

    ``train_list``, ``val_list`` and ``category_file`` are absolute once built
    by :func:`get_dataset_config` (relative ones are resolved against
    ``root_path``); paths inside the list files stay relative to ``root_path``.
    """

    name: str
    num_class: int
    root_path: str
    #: None only for a custom dataset configured for evaluation (no training list given).
    train_list: str | None
    val_list: str
    category_file: str | None
    image_tmpl: str = "img_{:05d}.jpg"
    #: Whether horizontal flipping is a valid augmentation (False when labels
    #: depend on direction, e.g. "pushing something from left to right").
    flip: bool = True
    #: Labels to swap when a clip is flipped (for datasets with mirrored classes).
    flip_label_map: dict[int, int] | None = None
    #: The label of a clip played backwards, for datasets whose classes come in
    #: time-reversed pairs ("opening" / "closing"); None: playing backwards is not a valid augmentation.
    reverse_label_map: dict[int, int] | None = None
    #: True when the paths in the list files are video files, not frame folders.
    video: bool = False


@dataclass(frozen=True)
class _Entry:
    num_class: int
    train_list: str | None
    val_list: str
    category_file: str | None
    image_tmpl: str = "img_{:05d}.jpg"
    flip: bool = True
    flip_label_map: dict[int, int] | None = None
    reverse_label_map: dict[int, int] | None = None
    video: bool = False
    #: Lists used instead of train_list/val_list when video input is asked for.
    video_lists: tuple[str, str] | None = None
    default_root: str | None = None
    extra: dict = field(default_factory=dict)


_REGISTRY: dict[str, _Entry] = {
    "something": _Entry(174, "train_videofolder.txt", "val_videofolder.txt", "category.txt",
                        image_tmpl="{:05d}.jpg", flip=False),
    "somethingv2": _Entry(174, "train_videofolder.txt", "val_videofolder.txt", "category.txt",
                          image_tmpl="{:06d}.jpg", flip=False),
    "jester": _Entry(27, "train_videofolder.txt", "val_videofolder.txt", "category.txt",
                     image_tmpl="{:05d}.jpg", flip=False),
    "ucf101": _Entry(101, "ucf101_train_split_1.txt", "ucf101_val_split_1.txt", "category.txt"),
    "hmdb51": _Entry(51, "hmdb51_train_split_1.txt", "hmdb51_val_split_1.txt", "category.txt"),
    "kinetics": _Entry(400, "train_videofolder.txt", "val_videofolder.txt", "category.txt"),
    # Left/right are classes of the synthetic set, so flipping would corrupt labels. Its classes 2k and
    # 2k+1 are each other played backwards (tools/make_synthetic.py, MIRROR_PAIRS).
    "synthetic": _Entry(12, "train_list.txt", "val_list.txt", "category.txt", flip=False,
                        reverse_label_map={label: label ^ 1 for label in range(12)},
                        video_lists=("train_videolist.txt", "val_videolist.txt"),
                        default_root=str(_REPO_ROOT / "data" / "synthetic")),
}


def known_datasets(dataset_file: str | None = None) -> list[str]:
    """Names of the built-in entries plus those of the user's registration file."""
    return sorted({**_REGISTRY, **_load_user_entries(dataset_file)})


def _load_user_entries(dataset_file: str | None) -> dict[str, _Entry]:
    path = dataset_file or os.environ.get(DATASETS_FILE_ENV)
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise DatasetConfigError(f"cannot read dataset registration file {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise DatasetConfigError(f"{path}:{e.lineno}: invalid JSON in dataset registration file: {e.msg}") from None
    if not isinstance(raw, dict):
        raise DatasetConfigError(f"{path}: dataset registration file must hold a JSON object of entries")
    allowed = {f.name for f in dataclasses.fields(_Entry)} - {"extra", "default_root", "video_lists"}
    allowed |= {"root_path"}
    entries: dict[str, _Entry] = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise DatasetConfigError(f"{path}: entry {name!r} must be a JSON object")
        unknown = set(spec) - allowed
        if unknown:
            raise DatasetConfigError(
                f"{path}: entry {name!r} has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        missing = {"num_class", "train_list", "val_list"} - set(spec)
        if missing:
            raise DatasetConfigError(f"{path}: entry {name!r} lacks {sorted(missing)}")
        spec = dict(spec)
        root = spec.pop("root_path", None)
        for key in ("flip_label_map", "reverse_label_map"):
            if spec.get(key) is not None:
                spec[key] = _label_map(spec[key], spec["num_class"], f"{path}: entry {name!r}: {key}")
        spec.setdefault("category_file", None)
        entries[name] = _Entry(default_root=root, **spec)
    return entries


def _label_map(raw: object, num_class: object, where: str) -> dict[int, int]:
    """A registration file's label map (``{"3": 4, "4": 3}``) as ints, checked.

    Labels are class indices below ``num_class``, and the map swaps pairs (a
    flip or a reversal done twice gives the clip back): ``m[m[k]] == k``.
    Labels it does not name keep their label (a class that looks the same
    flipped or backwards). Raises :class:`DatasetConfigError` naming ``where``.
    """
    if not isinstance(raw, dict):
        raise DatasetConfigError(f"{where} must be a JSON object of label -> label, got {type(raw).__name__}")
    out: dict[int, int] = {}
    for k, v in raw.items():
        try:
            a, b = int(k), int(v)
        except (TypeError, ValueError):
            raise DatasetConfigError(f"{where}: {k!r} -> {v!r} is not a pair of class indices") from None
        for label in (a, b):
            if isinstance(num_class, int) and not 0 <= label < num_class:
                raise DatasetConfigError(f"{where}: label {label} is outside 0..{num_class - 1} (num_class "
                                         f"{num_class})")
        out[a] = b
    for a, b in out.items():
        if out.get(b, b) != a:
            raise DatasetConfigError(f"{where} must swap pairs: {a} -> {b}, but {b} -> {out.get(b, b)}")
    return out


def _resolve(root: str, path: str | None) -> str | None:
    if path is None:
        return None
    return path if os.path.isabs(path) else os.path.join(root, path)


def get_dataset_config(
    name: str,
    root_path: str | None = None,
    *,
    train_list: str | None = None,
    val_list: str | None = None,
    image_tmpl: str | None = None,
    num_class: int | None = None,
    video: bool | None = None,
    category_file: str | None = None,
    flip: bool | None = None,
    dataset_file: str | None = None,
    training: bool = True,
) -> DatasetConfig:
    """Build the configuration of dataset ``name``; every given override replaces the entry's value.

    Root: ``root_path`` if given, else ``$PAN_DATA_ROOT/<name>``, else the
    entry's built-in default (only ``synthetic`` has one). An unknown ``name``
    is a custom dataset and needs ``val_list`` and ``num_class``, and
    ``train_list`` too when ``training`` (evaluation never needs one; its
    ``train_list`` is then ``None``). Raises ``ValueError`` with what is missing.
    """
    entries = {**_REGISTRY, **_load_user_entries(dataset_file)}
    entry = entries.get(name)
    if entry is None:
        needed = (("--train_list", train_list),) if training else ()
        needed += (("--val_list", val_list), ("--num_class", num_class))
        missing = [flag for flag, v in needed if v is None]
        if missing:
            raise DatasetConfigError(
                f"unknown dataset {name!r}: known datasets are {', '.join(sorted(entries))}; "
                f"a custom dataset needs {', '.join(missing)} (or an entry in the JSON file "
                f"named by ${DATASETS_FILE_ENV})"
            )
        entry = _Entry(num_class=num_class, train_list=train_list, val_list=val_list,
                       category_file=None)

    if root_path is None:
        env_root = os.environ.get(DATA_ROOT_ENV)
        if env_root:
            root_path = os.path.join(env_root, name)
        elif entry.default_root is not None:
            root_path = entry.default_root
        else:
            raise DatasetConfigError(
                f"no data root for dataset {name!r}: pass --root_path or set the environment "
                f"variable {DATA_ROOT_ENV} (the dataset is then looked for in ${DATA_ROOT_ENV}/{name})"
            )

    use_video = entry.video if video is None else video
    default_train, default_val = entry.train_list, entry.val_list
    if use_video and entry.video_lists is not None:
        default_train, default_val = entry.video_lists

    n = entry.num_class if num_class is None else num_class
    if n < 1:
        raise DatasetConfigError(f"num_class must be >= 1, got {n}")
    return DatasetConfig(
        name=name,
        num_class=n,
        root_path=root_path,
        train_list=_resolve(root_path, train_list or default_train),
        val_list=_resolve(root_path, val_list or default_val),
        category_file=_resolve(root_path, category_file or entry.category_file),
        image_tmpl=image_tmpl or entry.image_tmpl,
        flip=entry.flip if flip is None else flip,
        flip_label_map=dict(entry.flip_label_map) if entry.flip_label_map else None,
        reverse_label_map=dict(entry.reverse_label_map) if entry.reverse_label_map else None,
        video=use_video,
    )


def load_categories(path: str) -> list[str]:
    """Class names, one per line; the line index (from 0) is the label.

    Raises ``ValueError`` naming the file and line for blank or repeated names.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:  # a leading byte-order mark is not part of a name
            lines = f.read().splitlines()
    except OSError as e:
        raise DatasetConfigError(f"cannot read category file {path}: {e}") from None
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise DatasetConfigError(f"{path}:{line}: category file is not UTF-8 (byte {e.start}: {e.reason})") from None
    # A trailing empty line is a file-ending convention, not a class.
    while lines and not lines[-1].strip():
        lines.pop()
    names: list[str] = []
    seen: dict[str, int] = {}
    problems = []
    for lineno, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            problems.append(f"{path}:{lineno}: empty class name")
        elif name in seen:
            problems.append(f"{path}:{lineno}: class {name!r} repeats line {seen[name]}")
        else:
            seen[name] = lineno
        names.append(name)
    if problems:
        raise DatasetConfigError("\n".join(problems))
    if not names:
        raise DatasetConfigError(f"{path}: category file is empty")
    return names

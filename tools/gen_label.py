"""Write the category file and the train/val lists of a dataset from its official annotations.

Frame counts come from the extracted frame folders (``tools/vid2img.py``).
Listed videos without frames (no folder, or an empty one) stop the tool with
their count and names, before anything is written; ``--allow-missing`` accepts
them (e.g. Kinetics videos no longer on YouTube): they are left out of the
lists and counted. A class none of whose videos has frames always stops it --
that is a naming mismatch, not missing downloads. Every list line is ``<frames_dir>/<video folder> <num_frames>
<label>``, relative to the data root, and the file names are those of the
registry (``ops/dataset_config.py``)::

    python tools/gen_label.py something   --root_path /data/something   --anno_dir /data/something/annotations
    python tools/gen_label.py somethingv2 --root_path /data/somethingv2 --anno_dir /data/somethingv2/labels
    python tools/gen_label.py jester      --root_path /data/jester      --anno_dir /data/jester
    python tools/gen_label.py kinetics    --root_path /data/kinetics    --anno_dir /data/kinetics/annotations
    python tools/gen_label.py ucf101      --root_path /data/ucf101      --anno_dir /data/ucf101/ucfTrainTestlist --split 1
    python tools/gen_label.py hmdb51      --root_path /data/hmdb51      --anno_dir /data/hmdb51/splits --split 1

Official files read:

* ``something``: ``something-something-v1-{labels,train,validation}.csv`` (``id;label``)
* ``somethingv2``: ``something-something-v2-{labels,train,validation}.json``;
  the class of a video is its ``template`` with the brackets of
  ``[something]`` removed, as the official evaluation does
* ``jester``: ``jester-v1-{labels,train,validation}.csv`` (``id;label``)
* ``kinetics``: ``kinetics_{train,val}.csv`` (``label,youtube_id,time_start,time_end,split``);
  folders ``<label with _ for spaces>/<youtube_id>_<start:06d>_<end:06d>``
  (:func:`kinetics_class_folder`, which ``tools/vid2img.py --layout kinetics`` applies too)
* ``ucf101``: ``classInd.txt``, ``trainlist0<k>.txt``, ``testlist0<k>.txt``
* ``hmdb51``: ``<class>_test_split<k>.txt`` (``<video>.avi <1 train|2 test|0 unused>``)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from ops.cli import HelpFormatter, add_aliases  # noqa: E402

#: Default frame folder (under the root) and list names, per dataset.
DEFAULTS = {
    "something": ("frames", "train_videofolder.txt", "val_videofolder.txt"),
    "somethingv2": ("frames", "train_videofolder.txt", "val_videofolder.txt"),
    "jester": ("frames", "train_videofolder.txt", "val_videofolder.txt"),
    "kinetics": ("frames", "train_videofolder.txt", "val_videofolder.txt"),
    "ucf101": ("frames", "ucf101_train_split_{}.txt", "ucf101_val_split_{}.txt"),
    "hmdb51": ("frames", "hmdb51_train_split_{}.txt", "hmdb51_val_split_{}.txt"),
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Category file and train/val lists from official annotations.", formatter_class=HelpFormatter)
    p.add_argument("dataset", choices=sorted(DEFAULTS))
    p.add_argument("--root_path", required=True, help="data root: lists and category.txt are written here")
    p.add_argument("--anno_dir", required=True, help="folder holding the official annotation files")
    p.add_argument("--frames_dir", help="frame folders, relative to the root (default: frames)")
    p.add_argument("--split", type=int, default=1, help="UCF101 / HMDB51 split (1-3)")
    p.add_argument("--flat", action="store_true",
                   help="UCF101 / HMDB51 / Kinetics frame folders are not inside class folders")
    p.add_argument("--workers", type=int, default=16, help="threads counting frames")
    p.add_argument("--allow-missing", dest="allow_missing", action="store_true",
                   help="leave listed videos without frames out of the lists (counted) instead of stopping")
    return add_aliases(p)


# ----------------------------------------------------------- annotation readers
# Each returns (categories, [(video folder, label index)] for train, same for val).

#: Annotation files are UTF-8; a leading byte-order mark (some editors and exporters write one) is dropped.
ANNOTATION_ENCODING = "utf-8-sig"


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding=ANNOTATION_ENCODING) as f:
            return [ln.rstrip("\r\n") for ln in f if ln.strip()]
    except OSError as e:
        raise SystemExit(f"cannot read annotation file {path}: {e}") from None


def _semicolon_split(anno: str, prefix: str):
    categories = [ln.strip() for ln in _read_lines(os.path.join(anno, f"{prefix}-labels.csv"))]
    index = {c: i for i, c in enumerate(categories)}
    splits = []
    for part in ("train", "validation"):
        path = os.path.join(anno, f"{prefix}-{part}.csv")
        rows = []
        for lineno, ln in enumerate(_read_lines(path), 1):
            vid, sep, label = ln.partition(";")
            if not sep or label.strip() not in index:
                raise SystemExit(f"{path}:{lineno}: expected '<id>;<label>' with a label of the labels file, got {ln!r}")
            rows.append((vid.strip(), index[label.strip()]))
        splits.append(rows)
    return categories, splits[0], splits[1]


def read_something(anno: str, flat: bool = True):
    return _semicolon_split(anno, "something-something-v1")


def read_jester(anno: str, flat: bool = True):
    return _semicolon_split(anno, "jester-v1")


def _sthv2_class(template: str) -> str:
    # The official evaluation matches templates with the brackets removed.
    return template.replace("[", "").replace("]", "")


def read_somethingv2(anno: str, flat: bool = True):
    labels_path = os.path.join(anno, "something-something-v2-labels.json")
    with open(labels_path, encoding=ANNOTATION_ENCODING) as f:
        labels = json.load(f)
    categories = [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]
    if [int(v) for _, v in sorted(labels.items(), key=lambda kv: int(kv[1]))] != list(range(len(labels))):
        raise SystemExit(f"{labels_path}: label indices are not 0..{len(labels) - 1}")
    index = {c: i for i, c in enumerate(categories)}
    splits = []
    for part in ("train", "validation"):
        path = os.path.join(anno, f"something-something-v2-{part}.json")
        with open(path, encoding=ANNOTATION_ENCODING) as f:
            items = json.load(f)
        rows = []
        for k, item in enumerate(items):
            name = _sthv2_class(item.get("template", ""))
            if name not in index:
                raise SystemExit(f"{path}: entry {k} (id {item.get('id')}): template {item.get('template')!r} is not a class of {labels_path}")
            rows.append((str(item["id"]), index[name]))
        splits.append(rows)
    return categories, splits[0], splits[1]


def kinetics_class_folder(label: str) -> str:
    """The folder of a Kinetics class: its name with ``_`` for spaces (``air drumming`` -> ``air_drumming``).

    Paths without spaces stay safe in shell scripts; the class names in
    ``category.txt`` keep their spaces.
    """
    return label.replace(" ", "_")


def kinetics_folder(label: str, youtube_id: str, start: str, end: str, flat: bool = False) -> str:
    name = f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}"
    return name if flat else f"{kinetics_class_folder(label)}/{name}"


def read_kinetics(anno: str, flat: bool = False):
    parts = {}
    for part in ("train", "val"):
        path = os.path.join(anno, f"kinetics_{part}.csv")
        try:
            with open(path, encoding=ANNOTATION_ENCODING, newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError as e:
            raise SystemExit(f"cannot read annotation file {path}: {e}") from None
        need = {"label", "youtube_id", "time_start", "time_end"}
        if rows and not need <= set(rows[0]):
            raise SystemExit(f"{path}:1: header must contain {sorted(need)}")
        parts[part] = rows
    categories = sorted({r["label"] for r in parts["train"]})
    index = {c: i for i, c in enumerate(categories)}
    out = []
    for part in ("train", "val"):
        rows = []
        for lineno, r in enumerate(parts[part], 2):
            if r["label"] not in index:
                raise SystemExit(f"{os.path.join(anno, f'kinetics_{part}.csv')}:{lineno}: label {r['label']!r} is not in the train set")
            rows.append((kinetics_folder(r["label"], r["youtube_id"], r["time_start"], r["time_end"], flat), index[r["label"]]))
        out.append(rows)
    return categories, out[0], out[1]


def read_ucf101(anno: str, flat: bool = False, split: int = 1):
    categories = []
    for lineno, ln in enumerate(_read_lines(os.path.join(anno, "classInd.txt")), 1):
        num, _, name = ln.strip().partition(" ")
        if int(num) != lineno:
            raise SystemExit(f"{os.path.join(anno, 'classInd.txt')}:{lineno}: expected class {lineno}, got {num}")
        categories.append(name.strip())
    index = {c: i for i, c in enumerate(categories)}

    def folder(video: str) -> tuple[str, int]:
        cls, _, name = video.strip().split()[0].partition("/")
        if cls not in index:
            raise SystemExit(f"{anno}: video {video.strip()!r} is in class folder {cls!r}, not a class of classInd.txt")
        stem = os.path.splitext(name)[0]
        return (stem if flat else f"{cls}/{stem}"), index[cls]

    train = [folder(ln) for ln in _read_lines(os.path.join(anno, f"trainlist0{split}.txt"))]
    val = [folder(ln) for ln in _read_lines(os.path.join(anno, f"testlist0{split}.txt"))]
    return categories, train, val


def read_hmdb51(anno: str, flat: bool = False, split: int = 1):
    suffix = f"_test_split{split}.txt"
    files = sorted(f for f in os.listdir(anno) if f.endswith(suffix))
    if not files:
        raise SystemExit(f"no '*{suffix}' split files in {anno}")
    categories = [f[: -len(suffix)] for f in files]
    train, val = [], []
    for label, (cls, f) in enumerate(zip(categories, files)):
        path = os.path.join(anno, f)
        for lineno, ln in enumerate(_read_lines(path), 1):
            parts = ln.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise SystemExit(f"{path}:{lineno}: expected '<video> <0|1|2>', got {ln!r}")
            stem = os.path.splitext(parts[0])[0]
            item = ((stem if flat else f"{cls}/{stem}"), label)
            if parts[1] == "1":
                train.append(item)
            elif parts[1] == "2":
                val.append(item)
    return categories, train, val


READERS = {
    "something": read_something,
    "somethingv2": read_somethingv2,
    "jester": read_jester,
    "kinetics": read_kinetics,
    "ucf101": read_ucf101,
    "hmdb51": read_hmdb51,
}


# ----------------------------------------------------------- writing


def count_frames(folder: str) -> int:
    """Files in a frame folder (0 when it does not exist)."""
    try:
        return sum(1 for f in os.listdir(folder) if not f.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return 0


def count_rows(root: str, frames_dir: str, rows, workers: int) -> list[int]:
    """Frame count of each row's folder (0: no frames)."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda r: count_frames(os.path.join(root, frames_dir, r[0])), rows))


def write_list(path: str, frames_dir: str, rows, counts: list[int]) -> list[str]:
    """Write ``<frames_dir>/<folder> <n> <label>`` lines for rows with frames; returns the folders without."""
    missing = []
    with open(path, "w", encoding="utf-8") as f:
        for (folder, label), n in zip(rows, counts):
            if n == 0:
                missing.append(f"{frames_dir}/{folder}")
                continue
            f.write(f"{frames_dir}/{folder} {n} {label}\n")
    return missing


def check_missing(categories: list[str], frames_dir: str, splits, allow_missing: bool) -> None:
    """Stop (``SystemExit``) when listed videos have no frames, unless allowed; a class without any
    frames at all stops even then. ``splits``: ``[(rows, counts), ...]``."""
    missing = [f"{frames_dir}/{folder}" for rows, counts in splits for (folder, _), n in zip(rows, counts) if n == 0]
    total = sum(len(rows) for rows, _ in splits)
    per_class: dict[int, list[str]] = {}
    found: set[int] = set()
    for rows, counts in splits:
        for (folder, label), n in zip(rows, counts):
            per_class.setdefault(label, []).append(folder)
            if n:
                found.add(label)
    empty = [label for label in sorted(per_class) if label not in found]
    if empty:
        lines = [f"  class {categories[label]!r}: none of its {len(per_class[label])} videos has frames "
                 f"(e.g. {frames_dir}/{per_class[label][0]})" for label in empty[:10]]
        more = f"\n  ... and {len(empty) - 10} more classes" if len(empty) > 10 else ""
        raise SystemExit(f"{len(empty)} class(es) have no frames at all -- the frame folders are probably "
                         f"named differently (see docs/DATA.md); nothing was written:\n" + "\n".join(lines) + more)
    if missing and not allow_missing:
        shown = "\n".join(f"  {m}" for m in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise SystemExit(f"{len(missing)} of {total} listed videos have no frames; nothing was written:\n{shown}{more}\n"
                         "Extract them (tools/vid2img.py), or pass --allow-missing to leave them out of the lists.")


def main(args: argparse.Namespace) -> dict:
    frames_default, train_name, val_name = DEFAULTS[args.dataset]
    frames_dir = (args.frames_dir or frames_default).strip("/")
    reader = READERS[args.dataset]
    if args.dataset in ("ucf101", "hmdb51"):
        categories, train, val = reader(args.anno_dir, args.flat, args.split)
        train_name, val_name = train_name.format(args.split), val_name.format(args.split)
    else:
        categories, train, val = reader(args.anno_dir, args.flat)
    splits = [(rows, count_rows(args.root_path, frames_dir, rows, args.workers)) for rows in (train, val)]
    check_missing(categories, frames_dir, splits, args.allow_missing)
    os.makedirs(args.root_path, exist_ok=True)
    with open(os.path.join(args.root_path, "category.txt"), "w", encoding="utf-8") as f:
        f.write("".join(c + "\n" for c in categories))
    report = {"categories": len(categories)}
    for name, (rows, counts) in zip((train_name, val_name), splits):
        missing = write_list(os.path.join(args.root_path, name), frames_dir, rows, counts)
        report[name] = {"videos": len(rows) - len(missing), "without_frames": missing}
        print(f"{name}: {len(rows) - len(missing)} videos written, {len(missing)} without frames")
        for m in missing[:20]:
            print(f"  no frames: {m}")
        if len(missing) > 20:
            print(f"  ... and {len(missing) - 20} more")
    print(f"category.txt: {len(categories)} classes")
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())

"""Validate whole list files up front, in parallel, and report every problem at once.

Checks that every line parses (label in ``[0, num_class)``, frame count >= 1)
and that every frame folder (with its first and last frame) or video exists;
``--full`` also decodes every frame (or every video, checking its frame count).

    python tools/check_data.py --dataset something --root_path /data/something
    python tools/check_data.py --root_path /data/mine --list_file train.txt --num_class 10 --full

The check is ``main.py --check-data``'s (:func:`ops.dataset.check_lists`), with one
difference: the files of a list that has bad lines are checked once the list is fixed.
``--lmdb`` (or ``--lmdb_path``) checks the frames in an LMDB store, as ``main.py --lmdb`` reads them.

Exit status 1 when there is any problem.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Check a dataset's list files, frames and videos.", formatter_class=HelpFormatter)
    p.add_argument("--dataset", help="registry name; its train and val lists are checked")
    p.add_argument("--root_path", help="data root (default: $PAN_DATA_ROOT/<dataset>)")
    p.add_argument("--list_file", action="append", help="list file(s) to check instead of the dataset's")
    p.add_argument("--image_tmpl", help="frame file template, e.g. '{:05d}.jpg'")
    p.add_argument("--num_class", type=int)
    p.add_argument("--video", action="store_true", help="list paths are video files")
    p.add_argument("--lmdb", "--lmdb_path", dest="lmdb",
                   help="check frames in this LMDB store instead of folders (as main.py --lmdb)")
    p.add_argument("--full", action="store_true", help="decode every frame / video")
    p.add_argument("--workers", type=int, default=16)
    return add_aliases(p)


def main(args: argparse.Namespace) -> list[str]:
    # Here, not at the top: --help need not import torch.
    from ops.dataset import check_lists
    from ops.dataset_config import get_dataset_config

    if args.dataset:
        cfg = get_dataset_config(args.dataset, args.root_path, image_tmpl=args.image_tmpl,
                                 num_class=args.num_class, video=args.video or None)
        root, tmpl, num_class, video = cfg.root_path, cfg.image_tmpl, cfg.num_class, cfg.video
        lists = args.list_file or [cfg.train_list, cfg.val_list]
    else:
        if not (args.root_path and args.list_file):
            raise SystemExit("give --dataset, or --root_path with --list_file")
        root, tmpl, num_class, video = args.root_path, args.image_tmpl or "img_{:05d}.jpg", args.num_class, args.video
        lists = args.list_file
    paths = [lf if os.path.isabs(lf) else os.path.join(root, lf) for lf in lists]
    # The files of a list with bad lines are not checked: fix the list first.
    report = check_lists(paths, root, num_class=num_class, image_tmpl=tmpl, video=video, lmdb_path=args.lmdb,
                         files="full" if args.full else "quick", workers=args.workers, files_of_bad_lists=False)
    problems = [str(p) for p in report.problems]
    for p in problems:
        print(p)
    print(f"checked {report.num_videos} videos in {len(lists)} list file(s): {len(problems)} problem(s)")
    return problems


if __name__ == "__main__":
    sys.exit(1 if main(get_args_parser().parse_args()) else 0)

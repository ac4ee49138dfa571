"""Pack the frames of one or more list files into an LMDB frame store.

Key ``<path>/<frame name>`` -> the JPEG file's bytes (see ``ops/lmdb_store.py``
for the format). Train with it by passing ``--lmdb_path`` (dataset argument
``lmdb_path``). Needs the optional package ``lmdb`` (``pip install lmdb``).

    python tools/build_lmdb.py --root_path $PAN_DATA_ROOT/something \\
        --list_file train_videofolder.txt --list_file val_videofolder.txt \\
        --image_tmpl '{:05d}.jpg' --output $PAN_DATA_ROOT/something/frames.lmdb
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.dataset import parse_list_file  # noqa: E402
from ops.lmdb_store import FORMAT, META_KEY, frame_key, import_lmdb  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Build an LMDB frame store from TSN list files.", formatter_class=HelpFormatter)
    p.add_argument("--root_path", required=True, help="data root; list paths are relative to it")
    p.add_argument("--list_file", action="append", required=True,
                   help="list file (relative to --root_path or absolute); repeat for several")
    p.add_argument("--image_tmpl", default="img_{:05d}.jpg")
    p.add_argument("--output_dir", dest="output", required=True, help="LMDB directory to create")
    p.add_argument("--workers", type=int, default=8, help="threads reading frame files")
    p.add_argument("--commit_every", type=int, default=5000, help="frames per write transaction")
    return add_aliases(p, {"--output": "--output_dir"})


def _read_video(root: str, path: str, tmpl: str, n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(1, n + 1):
        name = os.path.join(root, path, tmpl.format(i))
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as e:
            raise SystemExit(f"cannot read frame {name}: {e} (run tools/check_data.py --full first)") from None
        if not data:
            raise SystemExit(f"empty frame file {name} (run tools/check_data.py --full first)")
        out.append((frame_key(path, tmpl, i), data))
    return out


def main(args: argparse.Namespace) -> dict:
    lmdb = import_lmdb()
    if os.path.exists(args.output):
        raise SystemExit(f"{args.output} exists; remove it or choose another --output_dir")
    videos: dict[str, int] = {}
    for lf in args.list_file:
        path = lf if os.path.isabs(lf) else os.path.join(args.root_path, lf)
        for r in parse_list_file(path):
            videos[r.path] = max(videos.get(r.path, 0), r.num_frames)

    def size_of(item):
        p, n = item
        return sum(os.path.getsize(os.path.join(args.root_path, p, args.image_tmpl.format(i)))
                   for i in range(1, n + 1) if os.path.exists(os.path.join(args.root_path, p, args.image_tmpl.format(i))))

    with ThreadPoolExecutor(args.workers) as pool:
        total_bytes = sum(pool.map(size_of, videos.items()))
    num_frames = sum(videos.values())
    # LMDB needs its maximum size up front: data, per-key overhead, slack.
    map_size = int(total_bytes * 1.2) + num_frames * 512 + (64 << 20)
    env = lmdb.open(args.output, map_size=map_size, subdir=True, lock=True)
    try:
        meta = _fill(env, videos, args, num_frames)
    except BaseException:
        env.close()
        # A half-built store must not be mistaken for a complete one.
        shutil.rmtree(args.output, ignore_errors=True)
        raise
    env.close()
    print(f"wrote {num_frames} frames of {len(videos)} videos ({total_bytes / 2**20:.1f} MiB) to {args.output}")
    return meta


def _fill(env, videos: dict[str, int], args: argparse.Namespace, num_frames: int) -> dict:
    txn = env.begin(write=True)
    pending = 0
    with ThreadPoolExecutor(args.workers) as pool:
        jobs = pool.map(lambda item: _read_video(args.root_path, item[0], args.image_tmpl, item[1]), videos.items())
        for frames in tqdm(jobs, total=len(videos), desc="videos", unit="video"):
            for key, data in frames:
                txn.put(key, data)
                pending += 1
            if pending >= args.commit_every:
                txn.commit()
                txn = env.begin(write=True)
                pending = 0
    meta = {"format": FORMAT, "image_tmpl": args.image_tmpl, "num_videos": len(videos), "num_frames": num_frames}
    txn.put(META_KEY, json.dumps(meta).encode("utf-8"))
    txn.commit()
    return meta


if __name__ == "__main__":
    main(get_args_parser().parse_args())

"""Print what a PAN checkpoint holds and check that it loads into the model it describes.

    python tools/inspect_checkpoint.py pretrained/PAN_Lite_something_resnet50_shift8_blockres_avg_segment8_e80.pth.tar

For each file: its size, the sha256 check (our checkpoints, when
``ops.checkpoint_files`` provides it), the stored fields (epoch, best top-1, ...),
the configuration stated by the checkpoint, by its file name and implied by
its parameter names and shapes, the configuration that results (with the
source of each value), and the result of a strict load into a freshly built
model of that configuration (missing, unexpected and mis-shaped keys listed
on failure). The file is read with ``weights_only=True``: one that needs
arbitrary unpickling is refused, never run.

Exit status: 0 when every file loads, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.inference import (  # noqa: E402
    CONFIG_FIELDS,
    fields_of_checkpoint,
    load_checkpoint_model,
    read_checked_checkpoint,
    resolve_model_config,
)
from ops.model_config import ModelConfig  # noqa: E402
from ops.weights import CheckpointError, parse_released_name, strip_prefix  # noqa: E402

logger = logging.getLogger("inspect_checkpoint")

#: Stored fields shown as they are (plain values only; tensors and big dicts are summarised).
SCALAR_FIELDS = ("epoch", "arch", "modality", "num_segments", "best_prec1")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint files to inspect")
    parser.add_argument("--num_class", type=int, default=None,
                        help="class count of the model to build (default: the checkpoint's classifier size)")
    parser.add_argument("--modality", default=None, help="override the modality (RGB, PA, Lite)")
    parser.add_argument("--arch", default=None, help="override the backbone")
    parser.add_argument("--num_segments", type=int, default=None, help="override the segment count")
    return add_aliases(parser)


def _row(values: dict) -> str:
    return ", ".join(f"{k}={values[k]}" for k in CONFIG_FIELDS if k in values) or "(nothing)"


def inspect(path: str, args: argparse.Namespace) -> bool:
    """Print the report for one file; True when it loads strictly."""
    print(f"== {path}")
    try:
        print(f"size: {os.path.getsize(path):,} bytes")
        checkpoint = read_checked_checkpoint(path)
        state_dict = strip_prefix(checkpoint["state_dict"])
        prefixed = any(k.startswith("module.") for k in checkpoint["state_dict"])
        stored = {k: checkpoint[k] for k in SCALAR_FIELDS if k in checkpoint}
        others = sorted(set(checkpoint) - set(SCALAR_FIELDS) - {"state_dict"})
        print(f"fields: {stored or '(none)'}; also: {', '.join(others) or '(none)'}")
        print(f"state_dict: {len(state_dict)} tensors, "
              f"{sum(t.numel() for t in state_dict.values()):,} values"
              f"{' (saved from DataParallel: keys prefixed module.)' if prefixed else ''}")
        overrides = ModelConfig.overrides_from_args(args)  # --modality, --arch, --num_segments
        resolved = resolve_model_config(checkpoint, path, overrides)
        released = parse_released_name(path)
        print(f"stated by the checkpoint: {_row(fields_of_checkpoint(checkpoint))}")
        print(f"from the file name:       {'(not the released convention)' if released is None else released}")
        print(f"implied by the keys:      {_row(resolved.from_keys)}")
        print("configuration:")
        for name, value in resolved.config.items():
            print(f"  {name:<15} {value!s:<12} ({resolved.sources[name]})")
        model, _, _ = load_checkpoint_model(path, args.num_class, overrides, checkpoint)
        print(f"OK: all {len(model.state_dict())} entries of PAN({model.modality}, {model.arch}, "
              f"{model.num_segments} segments, {model.num_class} classes) loaded with strict names and shapes")
        return True
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"FAILED: {err}")
        return False


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    results = [inspect(path, args) for path in args.checkpoints]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))

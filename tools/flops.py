"""Multiply-adds (what the paper calls FLOPs) and parameters of PAN configurations.

Counts with ``torch.utils.flop_counter`` on the meta device: shapes only, no
arithmetic, so even ResNet-101 at 256² takes a moment and no memory.
``FlopCounterMode`` reports 2 FLOPs per multiply-add; we print GMACs.

Examples::

    python tools/flops.py --modality Lite --arch resnet50              # one model, one view
    python tools/flops.py --modality Lite,RGB,PA --size 256 --views 2   # the En ensemble
    python tools/flops.py --paper-table                                 # the README's table
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.models import PAN  # noqa: E402


@dataclass(frozen=True)
class Cost:
    gmacs: float
    params_m: float


def model_cost(
    modality: str,
    arch: str = "resnet50",
    num_segments: int = 8,
    size: int = 224,
    num_class: int = 174,
    is_shift: bool = True,
    has_vap: bool = True,
) -> Cost:
    """GMACs of one forward pass over one clip (one view), and parameters in millions."""
    with torch.device("meta"):
        model = PAN(
            num_class,
            num_segments,
            modality,
            base_model=arch,
            pretrain=None,
            is_shift=is_shift,
            has_VAP=has_vap,
            partial_bn=False,
        ).eval()
        x = torch.empty(1, num_segments * model.new_length * 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    params = sum(p.numel() for p in model.parameters())
    return Cost(gmacs=counter.get_total_flops() / 2 / 1e9, params_m=params / 1e6)


@dataclass(frozen=True)
class PaperRow:
    name: str
    arch: str
    #: Streams whose costs add up (Full = RGB + PA; En = Lite + RGB + PA).
    modalities: tuple[str, ...]
    size: int
    views: int
    #: The paper's figure per stream group, as printed, e.g. "(46.6G+88.4G)x2".
    paper: str
    paper_total: float


PAPER_ROWS = (
    PaperRow("PAN Lite", "resnet50", ("Lite",), 224, 1, "35.7G", 35.7),
    PaperRow("PAN Full", "resnet50", ("RGB", "PA"), 224, 1, "67.7G", 67.7),
    PaperRow("PAN En", "resnet50", ("Lite", "RGB", "PA"), 256, 2, "(46.6G+88.4G)×2", (46.6 + 88.4) * 2),
    PaperRow("PAN En", "resnet101", ("Lite", "RGB", "PA"), 256, 2, "(85.6G+166.1G)×2", (85.6 + 166.1) * 2),
)


def paper_table() -> list[dict]:
    """The paper's model table beside the GMACs computed here (8 segments, 174 classes)."""
    rows = []
    for row in PAPER_ROWS:
        costs = [model_cost(m, row.arch, size=row.size) for m in row.modalities]
        total = sum(c.gmacs for c in costs) * row.views
        rows.append(
            {
                "model": row.name,
                "backbone": row.arch,
                "input": f"8×{row.size}², {row.views} view{'s' if row.views > 1 else ''}",
                "paper": row.paper,
                "paper_gmacs": row.paper_total,
                "ours_gmacs": total,
                "streams": " + ".join(f"{m} {c.gmacs:.1f}G" for m, c in zip(row.modalities, costs)),
                "params_m": sum(c.params_m for c in costs),
            }
        )
    return rows


def format_paper_table(rows: list[dict]) -> str:
    lines = [
        "| Model | Backbone | Input | Paper (GMACs) | Computed (GMACs) | Per stream | Params |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['backbone']} | {r['input']} | {r['paper']} = {r['paper_gmacs']:.1f} | "
            f"{r['ours_gmacs']:.1f} ({100 * (r['ours_gmacs'] / r['paper_gmacs'] - 1):+.1f}%) | "
            f"{r['streams']} | {r['params_m']:.1f}M |"
        )
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--modality", default="Lite",
                        help="RGB, PA or Lite; a comma list sums an ensemble's streams (default: Lite)")
    parser.add_argument("--arch", default="resnet50", help="backbone (default: resnet50)")
    parser.add_argument("--num_segments", type=int, default=8, help="segments per clip (default: 8)")
    parser.add_argument("--size", type=int, default=224, help="input height and width (default: 224)")
    parser.add_argument("--views", type=int, default=1,
                        help="clips x crops evaluated per video; multiplies the cost (default: 1)")
    parser.add_argument("--num_class", type=int, default=174, help="classes (default: 174, Something-Something)")
    parser.add_argument("--shift", action=argparse.BooleanOptionalAction, default=True,
                        help="temporal shift (costs no multiply-adds; default: on)")
    parser.add_argument("--VAP", action=argparse.BooleanOptionalAction, default=True,
                        help="VAP head instead of linear + average (default: on)")
    parser.add_argument("--paper-table", action="store_true",
                        help="print the paper's model table beside the computed figures and exit")
    return add_aliases(parser)


def main(args: argparse.Namespace) -> None:
    if args.paper_table:
        print(format_paper_table(paper_table()))
        return
    total = 0.0
    for modality in args.modality.split(","):
        cost = model_cost(modality, args.arch, args.num_segments, args.size, args.num_class, args.shift, args.VAP)
        total += cost.gmacs
        print(f"{modality:>5} {args.arch} {args.num_segments}x{args.size}²: "
              f"{cost.gmacs:.2f} GMACs per view, {cost.params_m:.2f}M parameters")
    print(f"total: {total:.2f} GMACs x {args.views} view(s) = {total * args.views:.2f} GMACs")


if __name__ == "__main__":
    main(get_args_parser().parse_args())

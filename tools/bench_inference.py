"""Latency of the plain fp32 path against the fast inference path, in one process.

The default measures what issue 6 asks about: PAN Lite on ResNet-50, 8
segments of 4 frames, 224x224, one clip per forward (batch 1), random weights
(latency does not depend on them). Each repeat times the baseline and then
every fast variant back to back, so a change of machine load hits them alike;
the report gives the median latency of each and its ratio to the baseline.

    python tools/bench_inference.py                                   # default fast path
    python tools/bench_inference.py --variant fuse_bn,channels_last --variant amp,fuse_bn
    python tools/bench_inference.py --weights ckpt.best.pth.tar --dataset synthetic \\
        --val_list data/synthetic/val_list.txt --test_segments 8     # + top-1 agreement

With ``--weights`` and ``--val_list`` it also evaluates both paths over the
list (one centre crop, one clip) and prints the top-1 of each and the share of
videos on which their top-1 predictions agree.

A variant is a comma list of: ``amp`` (bf16 on CPU, fp16 on CUDA), ``bf16``,
``fp16``, ``channels_last``, ``fuse_bn``, ``compile``, ``compile_max`` (mode
max-autotune), ``int8`` (backbone quantized, :mod:`ops.quantize`; alone, or with
``channels_last``), or a single word ``fast`` (``--fast auto``'s pick for this
machine). int8 is calibrated on the timed input for the latency (random weights),
and with ``--val_list`` on the first ``--calibration_clips`` clips of the dataset's
training list (its validation list when it has none) for the agreement.

The ``machine:`` line gives the CPU's ISA (:func:`ops.machine.isa_line`):
PyTorch's CPU capability, whether bf16 / AMX / VNNI are native, and any cap set
with ``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA`` or ``FBGEMM_ENABLE_INSTRUCTIONS``
(an AVX2-only CPU is emulated with all three set to AVX2).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ops.cli import HelpFormatter, add_aliases  # noqa: E402
from ops.inference import (  # noqa: E402
    InferenceOptions,
    build_model,
    choose_fast_path,
    load_checkpoint_model,
    prepare_model,
    run_batch,
)
from ops.machine import machine_description  # noqa: E402,F401 -- also imported from here by other benchmarks
from ops.model_config import ModelConfig  # noqa: E402
from ops.runtime import resolve_device, setup_logging  # noqa: E402

logger = logging.getLogger("bench_inference")

#: The fast paths timed by default: test_models.py's --fuse_bn --channels_last, then with --amp,
#: then with --amp --compile. On a CPU without native bf16 (no AVX512-BF16 or AMX) the --amp
#: rows come out slower than fp32: the table shows which path pays on the machine at hand.
DEFAULT_VARIANTS = ("fuse_bn,channels_last", "amp,fuse_bn,channels_last", "amp,fuse_bn,channels_last,compile")
VARIANT_WORDS = ("amp", "bf16", "fp16", "channels_last", "fuse_bn", "compile", "compile_max", "int8", "fast")


def parse_variant(text: str) -> InferenceOptions:
    """``"amp,channels_last"`` -> :class:`InferenceOptions`; unknown words are an error naming them.

    ``fast`` alone is ``--fast auto``'s pick for this machine (logged with its reason).
    """
    words = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in words if w not in VARIANT_WORDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant word(s) {unknown}; use {', '.join(VARIANT_WORDS)}")
    if "fast" in words:
        if len(words) > 1:
            raise argparse.ArgumentTypeError("'fast' is a whole variant; give it alone")
        options, reason = choose_fast_path(torch.device("cpu"))
        logger.info("variant 'fast' is %s: %s", options.describe(), reason)
        return options
    if "int8" in words and set(words) - {"int8", "channels_last", "fuse_bn"}:
        raise argparse.ArgumentTypeError("int8 combines only with channels_last and fuse_bn")
    dtype = "bfloat16" if "bf16" in words else "float16" if "fp16" in words else None
    return InferenceOptions(
        amp="amp" in words or dtype is not None,
        amp_dtype=dtype,
        channels_last="channels_last" in words,
        fuse_bn="fuse_bn" in words,
        compile="compile" in words or "compile_max" in words,
        compile_mode="max-autotune" if "compile_max" in words else None,
        int8="int8" in words,
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--arch", default="resnet50", help="backbone (default: resnet50, as released)")
    parser.add_argument("--modality", default="Lite", help="RGB, PA or Lite (default: Lite)")
    parser.add_argument("--num_segments", type=int, default=8, help="segments per clip (default: 8)")
    parser.add_argument("--size", type=int, default=224, help="input height and width (default: 224)")
    parser.add_argument("--batch_size", type=int, default=1, help="clips per forward (default: 1, latency)")
    parser.add_argument("--num_class", type=int, default=174, help="classes of the random model (default: 174)")
    parser.add_argument("--variant", action="append", type=parse_variant, default=None,
                        help=f"a fast path to time, comma list of {', '.join(VARIANT_WORDS)}; repeatable "
                             f"(default: {' and '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards per path (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forwards per path first (default: 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: PyTorch's choice, usually the core count)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and input (default: 0)")
    parser.add_argument("--weights", default=None,
                        help="a checkpoint: time and compare that model instead of a random one (default: none)")
    parser.add_argument("--dataset", default="synthetic", help="dataset of --val_list (default: synthetic)")
    parser.add_argument("--root_path", default=None, help="data root (default: the dataset registry's)")
    parser.add_argument("--val_list", default=None,
                        help="with --weights: measure top-1 agreement of the fast path with fp32 on this list "
                             "(default: off)")
    parser.add_argument("--test_segments", type=int, default=None,
                        help="segments for the agreement run (default: the checkpoint's)")
    parser.add_argument("--input_size", type=int, default=None,
                        help="crop size for the agreement run (default: the model's, 224)")
    parser.add_argument("--calibration_clips", type=int, default=64,
                        help="int8 with --val_list: clips of the training list that set the int8 scales (default: 64)")
    parser.add_argument("-j", "--workers", type=int, default=2, help="loader workers for the agreement run (default: 2)")
    return add_aliases(parser)


def time_paths(paths: dict[str, tuple[torch.nn.Module, InferenceOptions]], x: torch.Tensor,
               device: torch.device, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per forward of each path, interleaved: repeat r runs every path once."""
    for model, options in paths.values():
        for _ in range(warmup):
            run_batch(model, x, device, options)
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, (model, options) in paths.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            run_batch(model, x, device, options)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def calibration_clips(model: torch.nn.Module, args: argparse.Namespace) -> torch.Tensor:
    """``[B, T*m*3, H, W]``: the first ``--calibration_clips`` clips of the dataset's training list (its
    validation list when it has none), with the evaluation's transforms, for the int8 scales."""
    from ops.dataset_config import get_dataset_config
    from ops.evaluation import build_dataset

    cfg = get_dataset_config(args.dataset, args.root_path, val_list=args.val_list)
    source = cfg.train_list if cfg.train_list and os.path.isfile(cfg.train_list) else cfg.val_list
    if source != cfg.train_list:
        logger.warning("int8 is calibrated on clips of the validation list %s (no training list found)", source)
    cfg = get_dataset_config(args.dataset, args.root_path, val_list=os.path.abspath(source))
    dataset = build_dataset(model, cfg, model.num_segments, input_size=args.input_size)
    count = min(args.calibration_clips, len(dataset))
    # Evenly spread over the list, which is often sorted by class.
    picks = np.linspace(0, len(dataset) - 1, count).round().astype(int)
    logger.info("int8 calibration: %d clips of %s", count, source)
    return torch.stack([dataset[int(i)][0] for i in picks])


def agreement(model: torch.nn.Module, paths: dict, args: argparse.Namespace, device: torch.device) -> None:
    """Top-1 of each path over ``--val_list`` and how often the fast ones agree with fp32.

    Each path is scored by the evaluation loop of ``test_models.py`` (:func:`ops.evaluation.evaluate`;
    one centre crop, one clip), so the figures are those an evaluation with its flags would give.
    """
    from ops.dataset_config import get_dataset_config
    from ops.evaluation import EvalSetup, IndexedClips, build_dataset, collate_clips, evaluate

    cfg = get_dataset_config(args.dataset, args.root_path, val_list=args.val_list)
    dataset = build_dataset(model, cfg, model.num_segments, input_size=args.input_size)
    clips = IndexedClips(dataset, list(range(len(dataset))))
    predictions: dict[str, np.ndarray] = {}
    truth = np.zeros(0, np.int64)
    for name, (path_model, options) in paths.items():
        loader = torch.utils.data.DataLoader(clips, batch_size=8, num_workers=args.workers,
                                             collate_fn=collate_clips)
        scored = evaluate(path_model, loader, cfg.num_class, EvalSetup(device, options, num_views=1), name)
        predictions[name] = scored.scores.argmax(1)
        truth = scored.labels
    base = predictions["fp32"]
    print(f"\ntop-1 agreement with fp32 over {len(truth)} videos of {cfg.val_list}:")
    for name, pred in predictions.items():
        print(f"  {name:<40} top-1 {100 * (pred == truth).mean():6.2f}%   "
              f"agreement {100 * (pred == base).mean():6.2f}%")


def main(args: argparse.Namespace) -> None:
    setup_logging(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    if args.weights:
        overrides = {"num_segments": args.test_segments}
        model, _, _ = load_checkpoint_model(args.weights, None, overrides)
    else:
        config = ModelConfig.released(args.modality, args.arch, args.num_class, args.num_segments)
        model = build_model(config.to_dict(), args.num_class).eval()
    variants = args.variant or [parse_variant(v) for v in DEFAULT_VARIANTS]
    size = args.input_size or args.size
    x = torch.randn(args.batch_size, model.num_segments * model.new_length * 3, size, size,
                    generator=torch.Generator().manual_seed(args.seed))
    calibration = x
    if args.val_list and args.weights and any(options.int8 for options in variants):
        calibration = calibration_clips(model, args)
    paths = {"fp32": (prepare_model(model, device, InferenceOptions()), InferenceOptions())}
    for options in variants:
        paths[options.describe()] = (prepare_model(model, device, options, calibration=calibration), options)

    print(f"PAN {model.modality} {model.arch}, {model.num_segments} segments x {model.new_length} frames, "
          f"{size}x{size}, batch {args.batch_size}")
    print(f"machine: {machine_description(device)}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    times = time_paths(paths, x, device, args.repeats, args.warmup)
    base = statistics.median(times["fp32"])
    print(f"\n{'path':<40} {'median ms':>10} {'min ms':>8} {'speed-up':>9}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<40} {1000 * median:10.1f} {1000 * min(samples):8.1f} {base / median:8.2f}x")
    reference = run_batch(paths["fp32"][0], x, device, InferenceOptions())
    for name, (path_model, options) in paths.items():
        diff = (run_batch(path_model, x, device, options) - reference).abs().max().item()
        print(f"max |logit - fp32| {name:<30} {diff:.2e}")
    if args.val_list:
        if not args.weights:
            raise SystemExit("--val_list needs --weights (agreement of a random model tells nothing)")
        agreement(model, paths, args, device)


if __name__ == "__main__":
    main(get_args_parser().parse_args())

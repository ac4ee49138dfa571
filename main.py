"""Train PAN on a video dataset: one process, or several with ``torchrun``.

Usage (the published command lines run unchanged)::

    python main.py something Lite --arch resnet50 --num_segments 8 --gd 20 --lr 0.01 \\
        --lr_steps 30 60 --epochs 80 -b 64 -j 16 --dropout 0.5 --eval-freq 1 \\
        --shift --shift_div 8 --shift_place blockres --npb --VAP
    torchrun --nproc_per_node=4 main.py something Lite ... -b 16     # batch is per process

The run goes, in order: arguments checked, output folders proven writable,
list files checked (every bad ``file:line`` at once), model and data built,
``--resume``/``--tune_from`` loaded and verified, then epochs of training with
validation every ``--eval-freq`` epochs and a checkpoint at every epoch end
(and every ``--save-every`` batches). See docs/TRAINING.md and docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader

from ops.bad_samples import (
    BadSampleMonitor,
    StrictDataset,
    SubstitutingDataset,
    collate_with_reports,
)
from ops.backbones import wants_imagenet, zero_init_residual
from ops.checkpoint_files import (
    RESUME_AUTO,
    restore_rng_state,
    save_checkpoint,
    to_plain,
)
from ops.dataset import Problem, TSNDataSet, check_lists
from ops.dataset_config import DatasetConfig, get_dataset_config
from ops.engine import StepSettings, evaluate, train_one_epoch
from ops.errors import MissingFileError, PanError, UsageError
from ops.files import check_writable, file_sha256
from ops.lr_schedule import EpochLR, build_param_groups
from ops.model_config import ModelConfig
from ops.models import PAN
from ops.run_folder import RunFolder, lock_run_folders, warn_if_low_space
from ops.run_plan import build_on_meta, training_plan
from ops.runtime import (
    CompiledWithFallback,
    DistInfo,
    cleanup_distributed,
    explain_timeout,
    heartbeat,
    init_distributed,
    is_timeout,
    max_over_processes,
    on_main_process,
    resolve_device,
    setup_logging,
)
from ops.samplers import ResumableSampler, ShardSampler, loader_generator, seed_worker
from ops.small_maps import trim_small_maps
from ops.stop_signal import StopRequest, TrainingInterrupted
from ops.train_args import check_args, get_args_parser, resolve_args
from ops.training_state import (
    ResumePoint,
    checkpoint_contents,
    find_resume_checkpoint,
    gather_rng_states,
    load_tune_from,
    restore,
)
from ops.transforms import eval_transform, train_transform
from ops.validation_extras import ConfusionCounter, dataset_class_names, log_validation_pictures, train_record

logger = logging.getLogger("main")



class OutOfMemory(PanError, RuntimeError):
    """The run ran out of host or GPU memory; the message says what to lower."""


class DataCheckError(PanError, ValueError):
    """The list files have problems: ``details`` holds them (:class:`ops.dataset.Problem`),
    ``problems`` the same as ``file:line: path: reason`` strings."""

    def __init__(self, details: list[Problem], report_path: str | None = None, shown: int = 100):
        self.details = list(details)
        self.problems = problems = [str(p) for p in self.details]
        listed = "\n".join(problems[:shown])
        more = f"\n... and {len(problems) - shown} more" if len(problems) > shown else ""
        where = f" (all of them are in {report_path})" if report_path else ""
        super().__init__(f"{len(problems)} problem(s) in the data lists{where}; nothing was trained:\n{listed}{more}")


#: Errors that end a run with a message instead of a traceback; anything else is a bug.
EXPECTED_ERRORS = (PanError,)


# ------------------------------------------------------------------ set-up


def configure_determinism(deterministic: bool) -> None:
    """Deterministic kernels for ``--deterministic``; otherwise let cuDNN pick the fastest."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def dataset_config(args: argparse.Namespace) -> DatasetConfig:
    try:
        cfg = get_dataset_config(
            args.dataset, args.root_path, train_list=args.train_list, val_list=args.val_list,
            image_tmpl=args.image_tmpl, num_class=args.num_class, video=args.video,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.reverse_aug and not cfg.reverse_label_map:
        raise UsageError(f"--reverse_aug: dataset {cfg.name!r} has no reverse_label_map (the label of a clip "
                         "played backwards); only datasets whose classes come in time-reversed pairs have one")
    return cfg


def check_data(cfg: DatasetConfig, args: argparse.Namespace, report_path: str | None) -> None:
    """Parse both lists and check the files they name; :class:`DataCheckError` lists every problem.

    ``--check-data quick``: each folder/video exists (with its first and last
    frame); ``full``: every frame decodes; ``off``: only the list syntax and labels. The files
    of a list's good lines are checked also when it has bad lines (one check: :func:`ops.dataset.check_lists`).
    """
    problems = check_lists((cfg.train_list, cfg.val_list), cfg.root_path, num_class=cfg.num_class,
                           image_tmpl=cfg.image_tmpl, video=cfg.video, lmdb_path=args.lmdb,
                           files=args.check_data, workers=max(args.workers, 4)).problems
    if problems:
        if report_path:
            with open(report_path, "w", encoding="utf-8") as f:
                f.write("\n".join(str(p) for p in problems) + "\n")
        raise DataCheckError(problems, report_path)


def effective_fc_lr5(args: argparse.Namespace) -> bool:
    """``--fc_lr5`` when given, else the published rule: on unless ``--tune_from`` names this dataset."""
    if args.fc_lr5 is not None:
        return args.fc_lr5
    return not (args.tune_from and args.dataset in args.tune_from)


def build_model(args: argparse.Namespace, num_class: int, pretrain: str | None = "from args") -> PAN:
    """The model ``args`` describe; ``pretrain`` overrides ``--pretrain`` (the dry run builds without weights)."""
    zero_init = getattr(args, "zero_init_residual", False)  # absent from namespaces built by older tools
    if zero_init and wants_imagenet(args.pretrain):
        raise UsageError(f"--zero_init_residual is for training from scratch; it would erase the --pretrain "
                         f"{args.pretrain} weights (use --pretrain none, or drop the flag)")
    model = PAN.from_config(
        ModelConfig.from_args(args, num_class), pretrain=args.pretrain if pretrain == "from args" else pretrain,
        partial_bn=not args.no_partialbn, fc_lr5=effective_fc_lr5(args),
    )
    if zero_init and zero_init_residual(model.base_model) == 0:
        raise UsageError(f"--zero_init_residual: --arch {args.arch} has no ResNet residual blocks")
    return model


def dry_run(args: argparse.Namespace) -> dict:
    """The resolved run as a JSON-ready dict; reads no data, creates and writes nothing."""
    cfg = dataset_config(args)
    model = build_on_meta(lambda: build_model(args, cfg.num_class, pretrain=None))
    return training_plan(args, cfg, model, effective_fc_lr5(args), os.path.join(args.root_log, args.store_name),
                         os.path.join(args.root_model, args.store_name))


def build_datasets(cfg: DatasetConfig, args: argparse.Namespace, model: PAN) -> tuple[SubstitutingDataset, TSNDataSet]:
    """Training set (bad samples replaced) and validation set (bad samples fail).

    Items are ``([T*m*3, crop, crop], label)``.
    """
    common = dict(num_segments=args.num_segments, new_length=model.new_length, image_tmpl=cfg.image_tmpl,
                  dense_sample=args.dense_sample, video=cfg.video, num_class=cfg.num_class, seed=args.seed,
                  lmdb_path=args.lmdb)
    train_tf = train_transform(args.crop_size, args.scale_size, cfg.flip, model.input_mean, model.input_std,
                               cfg.flip_label_map, reverse_label_map=cfg.reverse_label_map if args.reverse_aug else None)
    val_tf = eval_transform(args.crop_size, args.scale_size, 1, False, model.input_mean, model.input_std)
    train = TSNDataSet(cfg.root_path, cfg.train_list, transform=train_tf, mode="train", **common)
    val = TSNDataSet(cfg.root_path, cfg.val_list, transform=val_tf, mode="val", **common)
    channels = args.num_segments * model.new_length * 3
    return SubstitutingDataset(train, args.seed, args.max_bad_in_row, channels), val


# ------------------------------------------------------------------ main


def main(args: argparse.Namespace) -> dict:
    """Train (or with ``--evaluate`` only validate); returns ``{"best_prec1", "last": metrics}``.

    With ``--dry-run`` nothing is trained: the resolved run (see :mod:`ops.run_plan`) is returned.
    """
    check_args(args)
    resolve_args(args)
    if args.dry_run:
        return dry_run(args)
    if args.gpus is not None:
        logger.warning("--gpus %s is ignored: choose devices with --device, CUDA_VISIBLE_DEVICES and torchrun",
                       args.gpus)
    device = resolve_device(args.device)
    if args.sync_bn and device.type != "cuda":
        raise UsageError("--sync_bn needs CUDA: SyncBatchNorm does not run on CPU; drop --sync_bn "
                         "(or use --freeze-bn for small per-process batches)")
    cfg = dataset_config(args)
    check_inputs_exist(cfg, args)  # a failed start leaves no run folder behind
    info = init_distributed(device, args.dist_timeout)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        return _train(args, device, info, cfg)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)  # main() may be called again in-process
        cleanup_distributed()


def check_inputs_exist(cfg: DatasetConfig, args: argparse.Namespace) -> None:
    """The files a run starts from are there: list files, ``--tune_from``, an explicit ``--resume``,
    ``--lmdb``. Checked before any folder is created; their content is checked later (``--check-data``)."""
    needed = [("the validation list", cfg.val_list)]
    if not args.evaluate:
        needed.insert(0, ("the training list", cfg.train_list))
    if args.tune_from:
        needed.append(("--tune_from", args.tune_from))
    if args.resume and args.resume != RESUME_AUTO:
        needed.append(("--resume", args.resume))
    if args.lmdb:
        needed.append(("--lmdb", args.lmdb))
    missing = [f"{what}: {path}" for what, path in needed if not os.path.exists(path)]
    if missing:
        raise MissingFileError("nothing was started, these inputs do not exist:\n  " + "\n  ".join(missing))


def _train(args: argparse.Namespace, device: torch.device, info: DistInfo, cfg: DatasetConfig) -> dict:
    log_dir = os.path.join(args.root_log, args.store_name)
    model_dir = os.path.join(args.root_model, args.store_name)
    if info.is_main:  # before any data is read: a bad output path fails in seconds
        check_writable(log_dir, "--root_log")
        check_writable(model_dir, "--root_model")
    lock = lock_run_folders(log_dir, model_dir) if info.is_main else None  # before log.txt is opened
    log_file = os.path.join(log_dir, "log.txt")
    setup_logging(info.is_main, log_file if info.is_main else None)
    run = RunFolder(log_dir, info.is_main, tensorboard=args.tensorboard)
    try:
        with StopRequest() as stop:
            return _run(args, device, info, run, model_dir, stop, cfg)
    except TrainingInterrupted as err:
        logger.warning("%s", err)
        raise
    except EXPECTED_ERRORS as err:
        logger.error("%s", err)  # into log.txt too, where the run's story is read later
        err.already_logged = True
        raise
    except (torch.OutOfMemoryError, MemoryError) as err:
        out_of_memory = OutOfMemory(
            f"ran out of {'GPU' if isinstance(err, torch.OutOfMemoryError) else 'host'} memory "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no details'}). Lower --batch-size "
            f"(per process; scale --lr with the total), or use --amp, fewer -j workers, fewer --num_segments; "
            f"continue with --resume auto from the last checkpoint in {model_dir}")
        logger.error("%s", out_of_memory)
        out_of_memory.already_logged = True
        raise out_of_memory from err
    except RuntimeError as err:  # a collective's time-out is a peer's problem, told as such
        if not (info.distributed and is_timeout(err)):
            raise
        timeout = explain_timeout(err, info, args.dist_timeout)
        logger.error("%s", timeout)
        timeout.already_logged = True
        raise timeout from err
    finally:
        run.close()
        _close_log_file(log_file)
        if lock is not None:
            lock.release()


def _close_log_file(log_file: str) -> None:
    """Detach the run's log file, so that a caller running main() again (tests) does not keep writing to it."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and handler.baseFilename == os.path.abspath(log_file):
            root.removeHandler(handler)
            handler.close()


def _run(args: argparse.Namespace, device: torch.device, info: DistInfo, run: RunFolder, model_dir: str,
         stop: StopRequest, cfg: DatasetConfig) -> dict:
    run.save_args(to_plain(vars(args)))
    logger.info("run %s on %s, %d process(es), batch %d per process (%d in total per step)", args.store_name,
                device, info.world_size, args.batch_size, args.batch_size * info.world_size * args.iter_size)
    configure_determinism(args.deterministic)

    on_main_process(lambda: check_data(cfg, args, run.file("data_problems.txt")), info)

    torch.manual_seed(args.seed)  # same initial weights on every process
    model = build_model(args, cfg.num_class)
    model_without_ddp = model
    train_set, val_set = build_datasets(cfg, args, model)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if info.is_main:
        warn_if_low_space(model_dir, 8 * param_bytes)  # ckpt, prev, best, temp; weights and momentum

    optimizer = torch.optim.SGD(build_param_groups(model.get_optim_policies(), args.lr, args.weight_decay),
                                lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    sampler = ResumableSampler(len(train_set), args.batch_size, info.world_size, info.rank, args.seed)
    steps_in_epoch = sampler.num_batches
    scheduler = EpochLR(optimizer, args.lr, args.lr_type, args.epochs, -(-steps_in_epoch // args.iter_size),
                        args.lr_steps, args.warmup)
    scaler = torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None
    monitor = BadSampleMonitor(args.max_bad_fraction)
    list_sha = file_sha256(cfg.train_list)
    layout = {"world_size": info.world_size, "batch_size": args.batch_size, "iter_size": args.iter_size,
              "list_file_sha256": list_sha}

    point = ResumePoint(args.start_epoch)
    found = find_resume_checkpoint(args.resume, model_dir, info) if args.resume else None
    if args.resume and found is None:
        logger.info("--resume auto: no checkpoint in %s yet; starting from the beginning", model_dir)
    if found:
        point = restore(found[1], found[0], model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                        monitor=monitor, layout=layout, allow_change=args.allow_resume_change,
                        steps_in_epoch=steps_in_epoch)
    elif args.tune_from:
        load_tune_from(model, args.tune_from)
    start_epoch, start_step, best_prec1 = point.epoch, point.step_in_epoch, point.best_prec1

    model.to(device)
    if args.trim_small_maps:
        trim_small_maps(model)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.sync_bn and info.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        model = CompiledWithFallback(model)
    criterion = nn.CrossEntropyLoss().to(device)
    val_loader = DataLoader(StrictDataset(val_set), batch_size=args.batch_size,
                            sampler=ShardSampler(len(val_set), info.world_size, info.rank),
                            num_workers=args.workers, pin_memory=device.type == "cuda", worker_init_fn=seed_worker)

    def validate(epoch: int, train: dict | None = None) -> dict:
        heartbeat(info, f"validation after epoch {epoch}")
        confusion = ConfusionCounter(cfg.num_class) if args.tensorboard else None  # for its picture
        metrics = evaluate(model, criterion, val_loader, device, amp=args.amp, channels_last=args.channels_last,
                           dist_info=info, on_batch=confusion)
        logger.info("validation after epoch %d: top-1 %.2f%% top-5 %.2f%% loss %.4f (%d videos)", epoch,
                    metrics["top1"], metrics["top5"], metrics["loss"], metrics["count"])
        record = {"epoch": epoch, **metrics}
        if train is not None:  # the epoch's training figures beside it, for tools/plot_run.py
            record.update(train_record(train, scheduler.lr, device, info.distributed))
        run.log_metrics(record)
        for key in ("loss", "top1", "top5"):
            run.scalar(f"val/{key}", metrics[key], epoch)
        if confusion is not None:
            counts = confusion.total(device, info.distributed)  # on every process: a collective
            if info.is_main:
                log_validation_pictures(run, epoch, counts, dataset_class_names(cfg.category_file, cfg.num_class),
                                        model_without_ddp, val_set)
        return metrics

    if args.evaluate:
        metrics = validate(start_epoch)
        return {"best_prec1": best_prec1, "last": metrics}

    if point.rng_states:
        restore_rng_state(point.rng_states[info.rank % len(point.rng_states)])
    else:
        torch.manual_seed(args.seed + info.rank)  # dropout differs per process, reproducibly

    settings = StepSettings(amp=args.amp, iter_size=args.iter_size, clip_gradient=args.clip_gradient,
                            channels_last=args.channels_last, freeze_bn=args.freeze_bn, print_freq=args.print_freq,
                            train_history=args.train_history)
    last: dict = {}

    def save(epoch: int, step_in_epoch: int, is_best: bool = False) -> None:
        state = checkpoint_contents(epoch, step_in_epoch, args=args, model=model_without_ddp, optimizer=optimizer,
                                    scheduler=scheduler, scaler=scaler, best_prec1=best_prec1,
                                    rng_states=gather_rng_states(info), monitor=monitor, layout=layout)
        on_main_process(lambda: save_checkpoint(state, model_dir, is_best), info)

    for epoch in range(start_epoch, args.epochs):
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch, start_step * args.batch_size)
        loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                            collate_fn=collate_with_reports, pin_memory=device.type == "cuda", drop_last=True,
                            generator=loader_generator(args.seed, epoch), worker_init_fn=seed_worker)

        def on_step_end(done: int, epoch: int = epoch) -> None:
            heartbeat(info, f"epoch {epoch}, step {done}")  # named if another process times out waiting
            if done >= steps_in_epoch:  # the epoch's end: validation and its checkpoint come next
                return
            signum = max_over_processes(stop.signum, info)  # every process stops at the same step
            if signum and done % args.iter_size == 0:
                save(epoch, done)
                raise interrupted(signum, f"epoch {epoch}, step {done} of {steps_in_epoch}")
            if args.save_every and done % args.save_every == 0:
                save(epoch, done)
                heartbeat(info, f"epoch {epoch}, step {done}, checkpoint saved")

        train_metrics = train_one_epoch(
            model, criterion, optimizer, scheduler, loader, device, epoch, steps_in_epoch=steps_in_epoch,
            start_step=start_step, scaler=scaler, settings=settings, dist_info=info, run=run, monitor=monitor,
            on_step_end=on_step_end,
        )
        start_step = 0
        logger.info("epoch %d done: train loss %.4f top-1 %.2f%% (%d bad sample loads so far)", epoch,
                    train_metrics["loss"], train_metrics["top1"], monitor.bad)
        is_best = False
        if (epoch + 1) % args.eval_freq == 0 or epoch + 1 == args.epochs:
            try:
                last = validate(epoch, train_metrics)
            except Exception:
                save(epoch + 1, 0)  # whatever stopped validation, the epoch's training is kept
                raise
            is_best = last["top1"] > best_prec1
            best_prec1 = max(best_prec1, last["top1"])
            logger.info("best top-1 so far: %.2f%%", best_prec1)
        save(epoch + 1, 0, is_best)
        run.flush()
        signum = max_over_processes(stop.signum, info)
        if signum and epoch + 1 < args.epochs:
            raise interrupted(signum, f"the end of epoch {epoch}")
    return {"best_prec1": best_prec1, "last": last}


def interrupted(signum: int, where: str) -> TrainingInterrupted:
    return TrainingInterrupted(signum, f"stopped by {signal.Signals(signum).name} at {where}, after saving a "
                                       f"resumable checkpoint; continue with --resume auto "
                                       f"(exit status {128 + signum})")


def cli(argv: list[str] | None = None) -> int:
    """Entry point: expected failures end with one clear message and exit status 1 (2 for usage)."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        result = main(args)
    except UsageError as err:
        parser.error(str(err))
    except TrainingInterrupted as err:
        return err.exit_status
    except EXPECTED_ERRORS as err:
        if not getattr(err, "already_logged", False):  # failed before the run's logging started
            print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(cli())

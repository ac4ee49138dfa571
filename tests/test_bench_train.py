"""tools/bench_train.py: builds main.py's model from a main.py command line and reports clips/s per flag set.

No real timing is checked here: the clock is replaced by given durations, so the reported clips/s
and speed-ups are checked against figures worked out by hand, with no threshold on time.
"""

import argparse

import pytest
import torch

from tools import bench_train

TINY = ("synthetic Lite --arch resnet18 --num_segments 2 --crop_size 16 -b 2 --lr 0.01 --shift --VAP "
        "--pretrain none --seed 0")


def test_a_variant_is_a_set_of_main_py_fast_flags():
    assert bench_train.parse_variant("plain") == ()
    assert bench_train.parse_variant("amp,channels_last") == ("--amp", "--channels_last")
    with pytest.raises(argparse.ArgumentTypeError, match="'lr'"):
        bench_train.parse_variant("amp,lr")


def test_the_default_configuration_is_the_quickstarts_training():
    import re
    from pathlib import Path

    from ops.train_args import get_args_parser

    args = get_args_parser().parse_args(bench_train.QUICKSTART_ARGS.split())
    script = (Path(__file__).resolve().parent.parent / "scripts" / "quickstart.sh").read_text()
    full = script[script.index("    full)"):script.index("    tiny)")]
    flags = dict(re.findall(r"(--num_segments|--crop_size|--scale_size|-b|--lr) (\S+)", full))
    assert (args.modality, args.arch) == ("Lite", "resnet18") and args.zero_init_residual
    assert (args.num_segments, args.crop_size, args.scale_size, args.batch_size, args.lr) == (
        int(flags["--num_segments"]), int(flags["--crop_size"]), int(flags["--scale_size"]), int(flags["-b"]),
        float(flags["--lr"]))


@pytest.fixture(autouse=True)
def restore_threads():
    """bench_train.main sets torch's thread count (--threads 1 here: on a shared 2-core machine two
    threads spin against other jobs); put the previous count back for the tests that follow."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class ScriptedClock:
    """Stands in for bench_train's ``time`` module: ``perf_counter`` gives the start and the end of each
    timed block in turn, the blocks lasting the given seconds. No real time is measured."""

    def __init__(self, durations):
        self.values = []
        now = 100.0
        for seconds in durations:
            self.values += [now, now + seconds]
            now += seconds + 7.0
        self.calls = 0

    def perf_counter(self):
        self.calls += 1
        return self.values.pop(0)


def test_two_configurations_are_timed_in_turn_and_the_speed_up_is_the_ratio_of_their_medians(capsys, monkeypatch):
    # 3 repeats, each timing plain then channels_last for 1 step of a batch of 2 clips (seconds given here):
    durations = [0.5, 0.2, 1.0, 0.25, 0.25, 1.0]
    # plain: 2 clips / (0.5, 1.0, 0.25) s = 4, 2, 8 clips/s -> median 4, min 2
    # channels_last: 2 / (0.2, 0.25, 1.0) = 10, 8, 2 clips/s -> median 8, min 2; speed-up 8 / 4 = 2.00x
    # (the means, 4.67 and 6.67, would give 1.43x; the minima 1.00x)
    clock = ScriptedClock(durations)
    monkeypatch.setattr(bench_train, "time", clock)
    built = []

    class RecordingTrainer(bench_train.Trainer):
        def __init__(self, model, main_args, flags, device):
            super().__init__(model, main_args, flags, device)
            built.append((flags, self.settings.channels_last, self.settings.amp))

    monkeypatch.setattr(bench_train, "Trainer", RecordingTrainer)
    args = bench_train.get_args_parser().parse_args(
        ["--main-args", TINY, "--variant", "plain", "--variant", "channels_last",
         "--steps", "1", "--repeats", "3", "--warmup", "0", "--threads", "1"])
    rates = bench_train.main(args)
    assert built == [((), False, False), (("--channels_last",), True, False)]
    assert clock.calls == 2 * len(durations) and not clock.values  # each block timed once, start and end
    assert rates == {"plain": pytest.approx(4.0), "--channels_last": pytest.approx(8.0)}
    out = capsys.readouterr().out
    assert "PAN Lite resnet18, 2 segments x 4 frames, 16x16, batch 2; 3 repeats of 1 steps" in out
    table = out[out.index("speed-up"):].splitlines()[1:]
    rows = {line.rsplit(None, 3)[0]: [float(v.rstrip("x")) for v in line.rsplit(None, 3)[1:]] for line in table}
    assert rows == {"plain": [4.0, 2.0, 1.0], "--channels_last": [8.0, 2.0, 2.0]}
    # the printed speed-up is the ratio of the two printed medians
    assert rows["--channels_last"][2] == pytest.approx(rows["--channels_last"][0] / rows["plain"][0])


def test_variants_start_from_equal_weights_and_take_the_same_first_step():
    from main import build_model
    from ops.train_args import get_args_parser

    main_args = get_args_parser().parse_args(TINY.split())
    torch.manual_seed(0)
    model = build_model(main_args, 12)
    plain = bench_train.Trainer(model, main_args, (), torch.device("cpu"))
    nhwc = bench_train.Trainer(model, main_args, ("--channels_last",), torch.device("cpu"))
    x = torch.randn(2, 2 * 4 * 3, 16, 16)
    labels = torch.tensor([0, 5])
    losses = []
    for trainer in (plain, nhwc):
        torch.manual_seed(1)  # the same dropout mask for both
        losses.append(trainer.step(x, labels))
    assert abs(losses[0] - losses[1]) < 1e-4
    for a, b in zip(plain.model.parameters(), nhwc.model.parameters()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)  # layouts round differently, not more


def test_the_benchmark_leaves_the_callers_logging_as_it_was(monkeypatch):
    """Run in-process, it quiets the project's loggers only while it runs (they log a run's story later)."""
    import logging

    import tools.bench_train as bench

    monkeypatch.setattr(bench, "_run", lambda args: {})
    before = logging.getLogger("ops").level
    bench.main(bench.get_args_parser().parse_args([]))
    assert logging.getLogger("ops").level == before

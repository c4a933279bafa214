"""`lipkit bench`: cost of one WGAN critic step per Lipschitz method, as ratios to a plain
step measured in the same run. The timing lives in lipkit.experiments.step_timing;
benchmarks/bench_critic_step.py is this command with its own argument parser."""
from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from ..experiments.step_timing import COMPILED, MODES, compilable, format_tables, legacy_json, measure
from ..methods import method_names
from ..train.compiling import probe_compiler
from ..train.device import check_device
from ..train.precision import PRECISIONS
from .values import count_at_least, writable_file


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `lipkit bench` and of benchmarks/bench_critic_step.py (one definition)."""
    parser.add_argument("--width", type=count_at_least(1), default=32, help="critic base width (GPU anchor: 64)")
    parser.add_argument("--batch", type=count_at_least(1), nargs="+", default=[64], help="batch size(s)")
    parser.add_argument("--steps", type=count_at_least(1), default=5, help="timed steps per repeat")
    parser.add_argument("--warmup", type=count_at_least(0), default=2, help="untimed steps before each timing")
    parser.add_argument("--repeats", type=count_at_least(1), default=3,
                        help="interleaved repeats (the median is reported)")
    critics = method_names("critic")  # a mode is any critic method of the registry
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=critics, metavar="MODE",
                        help=f"critic methods to time, of {', '.join(critics)} (default: {' '.join(MODES)}; "
                        "'none' is the plain step every ratio is taken to)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--compile", action="store_true",
                        help="also time each mode with the critic under torch.compile, side by side ('MODE [compiled]'; "
                        "modes with a gradient penalty have no compiled row: no double backward)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="every step (the plain one too) as train-gan --precision runs it: fp32, or bf16 / fp16 "
                        "autocast forwards (fp16 with a GradScaler)")
    parser.add_argument("--json", help="also write the results to this file")


def add_bench_command(sub: Any) -> None:
    """Register `lipkit bench` on the CLI's sub-parsers."""
    p = sub.add_parser("bench", help="time one WGAN critic step per Lipschitz method (ratios to plain)")
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    check_device(args.device)
    if args.json:  # before the benchmark, not after it: a bad path must not cost the whole run
        writable_file(args.json, "--json")
    modes = list(args.modes)
    if args.compile:
        probe_compiler(torch.device(args.device))
        skipped = [m for m in modes if not compilable(m)]
        modes += [m + COMPILED for m in modes if m not in skipped]
        if skipped:
            print(f"no compiled row for {', '.join(skipped)}: a gradient penalty needs double backward")
    result = measure(args.width, args.batch, args.steps, args.warmup, args.repeats, modes, args.device,
                     precision=args.precision)
    print(format_tables(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(legacy_json(result), fh, indent=1)
        print(f"wrote {args.json}")
    return 0

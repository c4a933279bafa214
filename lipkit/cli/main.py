"""The `lipkit` command line: one sub-command per job.

    lipkit bound TARGET --input-shape C,H,W    per-layer table, certified upper bound and
                                               empirical lower bound of a network
    lipkit train-gan --data D --critic P --out DIR [--resume] [hyperparameters]
                                               train a WGAN with one critic preset
    lipkit train-clf --data D --model mlp|cnn --reg R [--lam L] --epochs E --out DIR [--resume]
                                               train a classifier with a Lipschitz regularizer
    lipkit compare-clf --regs R1,R2 --seeds 0,1,2 [--lams R=L,..|--tune] --out DIR
                                               several regularizers, one table and one plot
    lipkit bench [--width W --batch B [B ..] --steps S --repeats R --modes M [M ..] --device D --json F]
                                               time one WGAN critic step per Lipschitz method
    lipkit reproduce [--quick|--full] [--claims a,b,c,d,trap] [--device D] [--out DIR]
                                               the seed's claims side by side -> REPORT.md
    lipkit summarize RUN [RUN ..]              markdown table of finished runs' final metrics
    lipkit plot RUN [RUN ..] --metric M --out PNG
                                               a metric against steps and wall-clock time
"""
from __future__ import annotations

import argparse
import shlex
import sys

from .bench import add_bench_command
from .bound import add_bound_command
from .errors import DEBUG_FLAG, debug_requested, guarded
from .reproduce import add_reproduce_command
from .runs import add_run_commands
from .train import add_train_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lipkit", description=__doc__.split("\n")[0],
                                     epilog="--debug (anywhere) or LIPKIT_DEBUG=1: show the traceback of a failure")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bound_command(sub)
    add_train_commands(sub)
    add_bench_command(sub)
    add_reproduce_command(sub)
    add_run_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; failures and interruptions end as one line on stderr (cli/errors.py)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    args = build_parser().parse_args(argv)
    args.argv = argv  # compare-clf names its command in the table and plot captions
    return guarded(lambda: args.func(args), resume_hint(args), debug)


def resume_hint(args: argparse.Namespace) -> str:
    """What to type to continue after an interruption."""
    if args.command in ("train-gan", "train-clf") and getattr(args, "out", None):
        return f"lipkit {args.command} --out {shlex.quote(args.out)} --resume (from its newest checkpoint)"
    if args.command in ("compare-clf", "reproduce"):
        return "the same command again (finished runs are reused, the cut one resumes)"
    return "the same command again"


if __name__ == "__main__":
    sys.exit(main())

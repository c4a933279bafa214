"""`lipkit summarize RUN..` (markdown table of finished runs) and `lipkit plot RUN.. --metric M`
(a metric against steps and wall-clock time)."""
from __future__ import annotations

import argparse

from ..train.run_summary import plot_curves, summary_table
from .values import writable_file


def add_run_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summarize", help="markdown table of the final metrics of finished runs")
    p.add_argument("runs", nargs="+", help="run folders (each with summary.json and metrics.jsonl)")
    p.set_defaults(func=cmd_summarize)
    p = sub.add_parser("plot", help="PNG of a metric against steps and wall-clock time, several runs")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--metric", required=True, help="a metrics.jsonl column, e.g. w1, fid, hq_percent")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--title", help="figure title (say which command made it)")
    p.set_defaults(func=cmd_plot)


def cmd_summarize(args: argparse.Namespace) -> int:
    print(summary_table(args.runs))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    writable_file(args.out, "--out")
    plot_curves(args.runs, args.metric, args.out, args.title)
    print(f"wrote {args.out}")
    return 0



"""`lipkit reproduce`: the seed's claims (a, b, c, d) and the trap, run side by side into one
report (lipkit/experiments/)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from ..train.device import check_device


def add_reproduce_command(sub: argparse._SubParsersAction) -> None:
    from ..experiments.reproduce import CLAIMS

    p = sub.add_parser("reproduce", help="run the seed's claims and write REPORT.md, results.json and figures",
                       description="Runs a fixed, seeded experiment per claim and writes OUT/REPORT.md (tables, "
                       "captioned PNGs, a verdict per claim decided by a rule in the code) and OUT/results.json. "
                       "Rerunning the same command reuses finished training runs and resumes cut ones.")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="profile", action="store_const", const="quick",
                      help="small sizes on embedded data (digits, 2-D toys): under 10 min on a 2-core CPU "
                      "(the default)")
    size.add_argument("--full", dest="profile", action="store_const", const="full",
                      help="the real sizes (Fashion-MNIST, wide critics, more seeds): about 2-3 h on an H200, more than "
                      "a day on a 2-core CPU (README: Reproduce)")
    p.set_defaults(profile="quick")
    p.add_argument("--claims", default=",".join(CLAIMS),
                   help=f"comma list from {', '.join(CLAIMS)} (default: all)")
    p.add_argument("--device", default=None,
                   help="torch device for training and timing (default: cuda if available, else cpu)")
    p.add_argument("--out", default="reproduce", help="output folder (default: ./reproduce)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that train the claims' runs side by side before the claims are measured "
                   "(default: one per CPU core, up to 4; 1 on a GPU; 1: one run at a time)")
    p.add_argument("--data", default=None,
                   help="only claim (b)'s panels on these data sets, comma list (e.g. digits: its optimizer grid "
                   "alone at --full, about 1 h on a 2-core CPU; default: all)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="per-run progress bars (default: on)")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ..experiments.reproduce import parse_claims, parse_panels, reproduce
    from ..train.distributed import refuse_under_torchrun

    refuse_under_torchrun("reproduce", "its claims run many small runs and write one report")
    try:
        claims = parse_claims(args.claims)
    except ValueError as err:
        print(f"error: --claims: {err}", file=sys.stderr)
        return 2
    try:
        parse_panels(args.data, claims, args.profile)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file: reproduce writes a folder (REPORT.md, runs, figures) there")
    command = "lipkit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else None
    results = reproduce(args.out, profile=args.profile, claims=claims, device=device, progress=args.progress,
                        command=command, workers=args.workers, data=args.data)
    return 1 if results["errors"] else 0

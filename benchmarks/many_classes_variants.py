"""Claim (d) at K = 100 (issue 14 item 2): which change to the conditional setup moves the SN
critic's per-class quality? One seed of rings with 100 classes, the quick profile's sizes
(width 128, 1000 generator steps, lipkit/experiments/many_classes.py) unless a row varies
them; every run is an ordinary train-gan run folder under --out, trained two (--workers) at a
time by reproduce's run pool and reused when the script is rerun.

Rows: sn and gp as the claim runs them; the SN-GAN hinge loss (--loss hinge) for both; sn
wider (512) and longer (3000 and 6000 steps); the lipnet critic (GroupSort + Bjorck, the
embedding's columns orthonormal); sn with the class embedding constrained per class
(each column E e_y scaled to norm <= 1, which is all that the per-label Lipschitz bound
Lip_x f(., y) <= (Lip psi + ||E e_y||) Lip phi needs) instead of SN-GAN's spectral
normalization of the whole embedding matrix (SNEmbedID in pfnet-research/sngan_projection,
what lipkit's "sn" does).

    OMP_NUM_THREADS=1 python benchmarks/many_classes_variants.py --out runs/d_variants [--workers 2]

Writes the table to stdout and --table (markdown). ~20 min on this 2-core CPU with 2 workers
(the lipnet row alone ~9 min: 20 Bjorck iterations per read on one core).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn

import lipkit as lk
from lipkit.experiments import run_pool
from lipkit.train import gan
from lipkit.train.gan import GanConfig
from lipkit.train.reuse import train_or_reuse

BASE = dict(data="rings", classes=100, conditional=True, seed=0, width=128, steps=1000, eval_every=500,
            eval_samples=2000, lower_bound_steps=5, certify=False, progress=False)
VARIANTS = {  # name: (run folder, GanConfig fields over BASE, per-class embedding norm instead of SN)
    "sn": ("sn", {"critic": "sn"}, False),
    "gp": ("gp", {"critic": "gp"}, False),
    "sn hinge": ("sn_hinge", {"critic": "sn", "loss": "hinge"}, False),
    "gp hinge": ("gp_hinge", {"critic": "gp", "loss": "hinge"}, False),
    "sn width 512": ("sn_w512", {"critic": "sn", "width": 512}, False),
    "sn 3000 steps": ("sn_3k", {"critic": "sn", "steps": 3000, "eval_every": 1000}, False),
    "sn 6000 steps": ("sn_6k", {"critic": "sn", "steps": 6000, "eval_every": 1000}, False),
    "sn lr 1e-3": ("sn_lr1e-3", {"critic": "sn", "lr": 1e-3}, False),
    "lipnet": ("lipnet_wgan", {"critic": "lipnet"}, False),
    "sn, each class vector norm <= 1": ("sn_colnorm", {"critic": "sn"}, True),
}


class ColumnNorm(nn.Module):
    """E -> E / max(1, ||E e_y||) per column: each class vector at most unit norm."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / weight.norm(dim=0, keepdim=True).clamp_min(1.0)


def train_with_column_norm(config: GanConfig) -> None:
    """train_or_reuse, with the embedding's SN replaced by ColumnNorm right after the method
    is attached (a probe: the registry's "sn" has no such option)."""
    attach = gan.apply_method

    def attach_then_swap(critic, name, hp, role):
        applied = attach(critic, name, hp, role)
        lk.unconstrain(critic.embed)
        torch.nn.utils.parametrize.register_parametrization(critic.embed, "weight", ColumnNorm())
        return applied

    gan.apply_method = attach_then_swap
    try:
        train_or_reuse(config)
    finally:
        gan.apply_method = attach


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/d_variants")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--table", default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    out = Path(args.out)
    ctx = SimpleNamespace(out=out)
    configs = {name: replace(GanConfig(**BASE), out=str(out / folder), **fields)
               for name, (folder, fields, _) in VARIANTS.items()}
    jobs = []
    for name, config in configs.items():
        job = run_pool.gan_job(ctx, config)
        if VARIANTS[name][2]:
            job = replace(job, fn=train_with_column_norm)
        jobs.append(job)
    run_pool.run_jobs(jobs, args.workers)
    rows = ["| variant | steps | per-class W1 (mean) | class accuracy | W1 (all classes) | modes covered | "
            "train s |", "|---|---|---|---|---|---|---|"]
    for name, config in configs.items():
        summary = json.loads((Path(config.out) / "summary.json").read_text())
        f = summary["final"]
        rows.append(f"| {name} | {config.steps} | {f['w1_class_mean']:.3f} | {f['class_accuracy']:.3f} | "
                    f"{f['w1']:.3f} | {f['modes_covered']:.0f} | {summary['train_seconds']:.0f} |")
    table = "\n".join(rows) + "\n"
    print(table)
    if args.table:
        import platform
        import time

        command = "OMP_NUM_THREADS=1 python benchmarks/many_classes_variants.py " + " ".join(argv)
        Path(args.table).write_text(
            "# Claim (d) at K = 100: what moves the SN critic's per-class quality\n\n"
            f"`{command}` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {torch.__version__}; rings K = 100, "
            "seed 0, width 128 and 1000 generator steps unless the row says otherwise; final evaluation of each run; "
            f"train s: seconds of each run, {args.workers} running side by side).\n\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

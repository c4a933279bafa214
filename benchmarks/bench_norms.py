"""Time and tightness of conv operator-norm estimates on ResNet-18 conv shapes.

What it measures, per conv layer (the TRUE l2 operator norm of the conv at its input
shape: zero padding and stride included; random seeded weights, torch's default init):
  ref      the reference value: lipkit's dense exact SVD (operator_norm(..., "exact"))
           where the dense matrix is at most --exact-max-dim on its smaller side, else
           power iteration run for --ref-iters steps (marked "power*": converged from
           BELOW, so it is <= the true norm and the Gram excess shown is an upper bound
           on the true excess; the Gram-vs-ref gap brackets the true value);
  p1/p5/p20  power iteration with 1, 5, 20 steps: relative error (p - ref) / ref, <= 0;
  gram     the certified Gram-iteration bound (until converged), and with fixed 6 / 10
           squarings: relative excess (g - ref) / ref, >= 0;
  sym      max over frequencies of the exact sigma of the circular symbol that Gram
           iterates on: the part of the Gram excess that is the zero-padding relaxation
           (circular conv on an enlarged domain) rather than unconverged iterations.
Times are medians of --repeats interleaved repeats (the method order rotates each
repeat, so machine drift hits all methods alike); the power* reference is timed once.
Ratios are measured in this one run; compare them, not absolute seconds, across
machines. Anchors (ANCHORS.md, Delattre et al. notebook): dense 500x400, Gram 15
squarings vs power 1000 steps; conv 64->64 5x5 on 12x12, Gram excess over exact.

    python benchmarks/bench_norms.py [--resolution 224] [--out results/norms.json]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Callable

import torch
import torch.nn as nn

from lipkit.norms.conv_symbol import conv_symbol
from lipkit.norms.linalg import EXACT_MAX_ELEMENTS, gram_iteration_bound
from lipkit.norms.measure import operator_norm, spectral_norm

# name -> (method, n_iter); "ref" is added per layer.
METHODS: dict[str, tuple[str, int | None]] = {
    "p1": ("power", 1), "p5": ("power", 5), "p20": ("power", 20),
    "gram": ("gram", None), "gram6": ("gram", 6), "gram10": ("gram", 10),
}


def resnet18_convs(res: int, all_convs: bool) -> list[tuple[str, nn.Conv2d, tuple[int, int, int]]]:
    """ResNet-18's convs with their input shapes for a 3 x res x res image. By default one
    conv per distinct (shape, input) pair; all_convs: all 20 (each its own weights)."""
    convs = [("conv1 7x7 s2", nn.Conv2d(3, 64, 7, 2, 3, bias=False), (3, res, res))]
    n = (res + 1) // 2  # after conv1 (s2) ...
    n = (n + 1) // 2  # ... and the 3x3 s2 max pool
    c_in = 64
    for stage, c in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            s = 2 if (stage > 1 and block == 0) else 1
            n_out = (n - 1) // s + 1
            tag = f"layer{stage}.{block}"
            convs.append((f"{tag}.conv1 3x3 s{s}", nn.Conv2d(c_in, c, 3, s, 1, bias=False), (c_in, n, n)))
            if s == 2:
                convs.append((f"{tag}.down 1x1 s2", nn.Conv2d(c_in, c, 1, 2, 0, bias=False), (c_in, n, n)))
            convs.append((f"{tag}.conv2 3x3 s1", nn.Conv2d(c, c, 3, 1, 1, bias=False), (c, n_out, n_out)))
            c_in, n = c, n_out
    if all_convs:
        return convs
    seen, unique = set(), []
    for name, conv, shape in convs:
        key = (tuple(conv.weight.shape), conv.stride, shape)
        if key not in seen:
            seen.add(key)
            unique.append((name, conv, shape))
    return unique


def timed(fn: Callable[[], float]) -> tuple[float, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def dense_fits(conv: nn.Conv2d, shape: tuple[int, int, int], max_dim: int) -> bool:
    """Whether the dense exact SVD is used as the reference (and fits lipkit's limit)."""
    with torch.no_grad():
        out = conv(torch.zeros(1, *shape))
    d_in, d_out = math.prod(shape), out.numel()
    return min(d_in, d_out) <= max_dim and d_in * d_out <= EXACT_MAX_ELEMENTS


def bench_layers(args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(args.seed)
    layers = resnet18_convs(args.resolution, args.all_convs)
    rows = []
    for name, conv, shape in layers:
        exact = dense_fits(conv, shape, args.exact_max_dim)
        methods = dict(METHODS, ref=("exact", None)) if exact else dict(METHODS)
        sym = conv_symbol(conv, shape).matrices
        rows.append(dict(layer=name, input=list(shape), ref_kind="exact" if exact else "power*",
                         methods=methods, values={}, times={k: [] for k in methods},
                         sym=float(torch.linalg.matrix_norm(sym, ord=2).max()), conv=conv))
    for r in range(args.repeats):
        for row in rows:
            names = list(row["methods"])
            shift = r % len(names)
            for key in names[shift:] + names[:shift]:  # rotate the order every repeat
                method, n_iter = row["methods"][key]
                value, dt = timed(lambda: operator_norm(row["conv"], row["input"], method, n_iter=n_iter))
                row["values"].setdefault(key, value)
                row["times"][key].append(dt)
        print(f"  repeat {r + 1}/{args.repeats} done", flush=True)
    for row in rows:
        if row["ref_kind"] == "power*":
            value, dt = timed(lambda: operator_norm(row["conv"], row["input"], "power", n_iter=args.ref_iters))
            row["values"]["ref"], row["times"]["ref"] = value, [dt]
        row["time"] = {k: statistics.median(v) for k, v in row.pop("times").items()}
        ref = row["values"]["ref"]
        row["rel"] = {k: v / ref - 1 for k, v in row["values"].items() if k != "ref"}
        row["rel"]["sym"] = row["sym"] / ref - 1
        del row["methods"], row["conv"]
    return rows


def bench_anchors(repeats: int, ref_iters: int) -> dict:
    """ANCHORS.md: dense 500x400 (Gram 15 vs power 1000) and conv 64->64 5x5 on 12x12."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(500, 400, generator=gen, dtype=torch.float64)
    cases = {"dense 500x400": ({"exact": lambda: float(torch.linalg.matrix_norm(w, ord=2)),
                                "gram15": lambda: float(gram_iteration_bound(w, 15)),
                                "power1000": lambda: float(spectral_norm(w, n_iter=1000))}, {})}
    for mode in ("circular", "zeros"):
        torch.manual_seed(1)
        conv, shape = nn.Conv2d(64, 64, 5, 1, 2, bias=False, padding_mode=mode), (64, 12, 12)
        fns = {"gram": lambda c=conv: operator_norm(c, shape, "gram"),
               "power20": lambda c=conv: operator_norm(c, shape, "power", n_iter=20)}
        once = {}
        if mode == "circular":  # circular "same": lipkit's exact is the FFT symbol (cheap)
            fns = {"exact": lambda c=conv: operator_norm(c, shape, "exact"), **fns}
        else:  # the dense matrix is 9216^2, above lipkit's limit: power ref, timed once
            once = {f"power{ref_iters}*": lambda c=conv: operator_norm(c, shape, "power", n_iter=ref_iters)}
        cases[f"conv 64->64 5x5 12x12 {mode}"] = (fns, once)
    out: dict = {}
    for tag, (fns, once) in cases.items():
        vals, times = {}, {k: [] for k in fns}
        for r in range(repeats):
            keys = list(fns)
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                v, dt = timed(fns[k])
                vals.setdefault(k, v)
                times[k].append(dt)
        res = {k: dict(value=v, time=dt) for k, (v, dt) in ((k, timed(f)) for k, f in once.items())}
        res.update({k: dict(value=vals[k], time=statistics.median(times[k])) for k in fns})
        out[tag] = res
    return out


def report(rows: list[dict], anchors: dict, args: argparse.Namespace) -> str:
    pct = lambda x: f"{100 * x:+.2f}%"  # noqa: E731
    lines = ["| layer | input | ref | ref value | p1 | p5 | p20 | gram | gram6 | gram10 | sym |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rel = r["rel"]
        lines.append(f"| {r['layer']} | {'x'.join(map(str, r['input']))} | {r['ref_kind']} | {r['values']['ref']:.5f} | "
                     + " | ".join(pct(rel[k]) for k in ("p1", "p5", "p20", "gram", "gram6", "gram10", "sym")) + " |")
    keys = ["p1", "p5", "p20", "gram", "gram6", "gram10", "ref"]
    lines += ["", "Times (s, median of %d; power* refs timed once at %d steps):" % (args.repeats, args.ref_iters), "",
              "| layer | ref | " + " | ".join(keys) + " | gram/ref |", "|---" * (len(keys) + 3) + "|"]
    for r in rows:
        t = r["time"]
        lines.append(f"| {r['layer']} | {r['ref_kind']} | " + " | ".join(f"{t[k]:.3f}" for k in keys)
                     + f" | {t['gram'] / t['ref']:.2f} |")
    for kind in ("exact", "power*"):
        sel = [r for r in rows if r["ref_kind"] == kind]
        if sel:
            tot = {k: sum(r["time"][k] for r in sel) for k in keys}
            lines.append(f"| TOTAL ({len(sel)} rows, ref {kind}) | | " + " | ".join(f"{tot[k]:.3f}" for k in keys)
                         + f" | {tot['gram'] / tot['ref']:.2f} |")
    lines += ["", "Anchors (ANCHORS.md: dense 500x400 Gram 15 iters 2.4 ms vs power 1000 iters 96 ms, GPU; "
              "conv 64->64 5x5 12x12 Gram excess +0.043):", "",
              "| case | method | value | abs. vs first | time (ms) |", "|---|---|---|---|---|"]
    for case, res in anchors.items():
        base = next(iter(res.values()))["value"]
        for k, v in res.items():
            lines.append(f"| {case} | {k} | {v['value']:.5f} | {v['value'] - base:+.5f} | {1e3 * v['time']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolution", type=int, default=64, help="input H=W (224: ResNet-18's own)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ref-iters", type=int, default=1000, help="power steps of a power* reference")
    p.add_argument("--exact-max-dim", type=int, default=2048,
                   help="dense exact reference up to this smaller side (lipkit allows 4096)")
    p.add_argument("--all-convs", action="store_true", help="all 20 convs, not one per shape")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args()
    print(f"torch {torch.__version__}, device cpu, threads {torch.get_num_threads()}, "
          f"resolution {args.resolution}, repeats {args.repeats}, float64")
    t0 = time.perf_counter()
    rows = bench_layers(args)
    anchors = bench_anchors(args.repeats, args.ref_iters)
    text = report(rows, anchors, args)
    print("\nRelative to ref: power error (<= 0), Gram excess (>= 0); sym = exact sigma of the "
          "circular symbol Gram bounds (the zero-padding relaxation).\n"
          "power* = ref is a converged power estimate (from below): the true norm lies in "
          "[ref, gram]; the gram column is then the bracket width.\n")
    print(text)
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    if args.out:
        meta = dict(torch=torch.__version__, device="cpu", threads=torch.get_num_threads(), **vars(args))
        with open(args.out, "w") as f:
            json.dump(dict(meta=meta, layers=rows, anchors=anchors), f, indent=1)


if __name__ == "__main__":
    main()

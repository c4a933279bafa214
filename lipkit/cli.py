"""The `lipkit` command line: one sub-command per job.

    lipkit bound TARGET --input-shape C,H,W    per-layer table, certified upper bound and
                                               empirical lower bound of a network
    lipkit train-gan --data D --critic P --out DIR [--resume] [hyperparameters]
                                               train a WGAN with one critic preset
    lipkit train-clf --data D --model mlp|cnn --reg R [--lam L] --epochs E --out DIR [--resume]
                                               train a classifier with a Lipschitz regularizer
    lipkit compare-clf --regs R1,R2 --seeds 0,1,2 [--lams R=L,..|--tune] --out DIR
                                               several regularizers, one table and one plot
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .bounds import BOUND_METHODS, lipschitz_bound
from .lower_bound import lipschitz_lower_bound


def load_model(target: str) -> nn.Module:
    """TARGET: a lipkit run folder or checkpoint (its critic is rebuilt from the saved
    config), a torch.save of a module or of a dict whose "model" entry is one, or
    `package.module:factory`, a callable returning a module. Checkpoints are unpickled:
    load only files you trust."""
    if os.path.isdir(target):
        from .train.checkpoint import load_latest

        state, _ = load_latest(Path(target))
        return _run_critic(state)
    if os.path.isfile(target):
        obj = torch.load(target, map_location="cpu", weights_only=False)
        if isinstance(obj, dict) and "config" in obj and "task" in obj:
            return _run_critic(obj)
        if isinstance(obj, dict) and isinstance(obj.get("model"), nn.Module):
            obj = obj["model"]
        if not isinstance(obj, nn.Module):
            raise SystemExit(
                f"error: {target} holds a {type(obj).__name__}, not a module, a dict with a "
                "'model' module, or a lipkit run checkpoint"
            )
        return obj
    if ":" not in target:
        raise SystemExit(f"error: {target!r} is neither a file nor `module:factory`")
    module_name, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise SystemExit(f"error: cannot import {target!r}: {err}") from None
    model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    if not isinstance(model, nn.Module):
        raise SystemExit(f"error: {target} returned a {type(model).__name__}, not an nn.Module")
    return model


def _run_critic(state: dict) -> nn.Module:
    """The model of a training checkpoint, rebuilt from its config with its state loaded:
    the classifier of a train-clf run, the critic of a train-gan run."""
    if "reg" in state["config"]:
        from .train.classify import ClfConfig, ClfTask

        task = ClfTask(ClfConfig(**{**state["config"], "device": "cpu"}))
        task.load_state_dict(state["task"])
        return task.model
    from .train.gan import GanConfig, GanTask

    gan = GanTask(GanConfig(**{**state["config"], "device": "cpu"}))
    gan.load_state_dict(state["task"])
    return gan.critic


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a shape: give positive integers separated by commas, e.g. 3,32,32"
        )
    return shape


def cmd_bound(args: argparse.Namespace) -> int:
    model = load_model(args.target)
    try:
        result = lipschitz_bound(model, args.input_shape, method=args.method)
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.table())
    print(f"\ncertified upper bound ({args.method}): {result.upper:.6g}")
    if args.samples > 0:
        gen = torch.Generator().manual_seed(args.seed)
        inputs = torch.randn((args.samples, *args.input_shape), generator=gen)
        lower = lipschitz_lower_bound(model, inputs, steps=args.steps)
        print(
            f"empirical lower bound ({args.samples} Gaussian inputs, {args.steps} ascent "
            f"steps): {lower:.6g}"
        )
        print(f"the true Lipschitz constant lies in [{lower:.6g}, {result.upper:.6g}]")
    return 0


def parse_pair(text: str) -> tuple[float, float]:
    try:
        pair = tuple(float(s) for s in text.split(","))
    except ValueError:
        pair = ()
    if len(pair) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pair: give two numbers, e.g. 0,0.9")
    return pair  # type: ignore[return-value]


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One --flag per config field (help: the field's comment). Every default is None, meaning
    "not given": the config file / resumed run / dataclass default then decides."""
    from .train.run import field_help

    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag, kind = "--" + f.name.replace("_", "-"), str(f.type)
        options: dict = {"default": None, "help": f"{helps.get(f.name, '')} (default: {f.default})"}
        if "bool" in kind:
            options["action"] = argparse.BooleanOptionalAction
        elif "tuple" in kind:
            options.update(type=parse_pair, metavar="A,B")
        elif "int" in kind:
            options["type"] = int
        elif "float" in kind:
            options["type"] = float
        parser.add_argument(flag, **options)


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """The config a train command runs: dataclass defaults < --config file (or, with --resume,
    OUT/config.json) < the flags given on the command line."""
    from .train import load_config

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if getattr(args, f.name, None) is not None}
    base: dict = {}
    if getattr(args, "config", None):
        base = json.loads(Path(args.config).read_text())
    if getattr(args, "resume", False):
        if "out" not in given:
            raise ValueError("--resume needs --out DIR, the folder of the run to continue")
        saved = Path(given["out"]) / "config.json"
        if not saved.is_file():
            raise ValueError(f"--resume: {saved} does not exist; is {given['out']} a lipkit run folder?")
        base = json.loads(saved.read_text())
    return load_config(cls, {**base, **given})


def cmd_train_gan(args: argparse.Namespace) -> int:
    from .train import CheckpointError, GanConfig, NonFiniteLossError, fit

    try:
        config = config_from_args(GanConfig, args)
        summary = fit(config, resume=args.resume)
    except (ValueError, FileNotFoundError, CheckpointError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    final = ", ".join(f"{k}={v:.4g}" for k, v in summary["final"].items() if isinstance(v, float))
    per_step = summary["seconds_per_step_this_session"]
    timing = f"{per_step * 1000:.1f} ms per step" if per_step else "no new steps"
    print(f"done: {summary['steps']} steps in {config.out} ({timing}); final: {final}")
    print(f"critic certified bound: {summary.get('finish', {}).get('critic_certified_bound')}")
    return 0


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in text.split(","))
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers: e.g. 0.1,0.25,0.5")
    return values


def _clf_config(args: argparse.Namespace) -> Any:
    """ClfConfig from the flags; --epochs E becomes --steps (E passes over the training set)."""
    from .train.classify import ClfConfig, steps_for_epochs

    config = config_from_args(ClfConfig, args)
    if args.epochs is not None:
        if args.steps is not None:
            raise ValueError("give --epochs or --steps, not both")
        config = dataclasses.replace(config, steps=steps_for_epochs(config, args.epochs))
    return config


def cmd_train_clf(args: argparse.Namespace) -> int:
    from .train import CheckpointError, NonFiniteLossError
    from .train.classify import fit

    try:
        config = _clf_config(args)
        summary = fit(config, resume=args.resume)
    except (ValueError, FileNotFoundError, CheckpointError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    final = ", ".join(f"{k}={v:.4g}" for k, v in summary["final"].items() if isinstance(v, float))
    print(f"done: {summary['steps']} steps in {config.out}; final: {final}")
    return 0


def parse_lams(text: str) -> dict[str, float]:
    try:
        pairs = [item.split("=") for item in text.split(",")]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give REG=LAMBDA pairs, e.g. l2=1e-4,snr=0.01") from None


def cmd_compare_clf(args: argparse.Namespace) -> int:
    from .train import CheckpointError, NonFiniteLossError
    from .train.compare import compare

    try:
        base = _clf_config(args)
        grids = {reg: args.grid for reg in args.regs} if args.grid else None
        table = compare(base, args.regs, args.seeds, args.out, lams=args.lams, tune=args.tune, grids=grids,
                        command="lipkit " + " ".join(args.argv))
    except (ValueError, FileNotFoundError, CheckpointError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print((Path(args.out) / "table.md").read_text())
    print(f"wrote {args.out}/table.md, table.csv, runs.csv, plot.png ({len(table)} regs)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lipkit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("bound", help="per-layer norms and the network's Lipschitz bounds")
    p.add_argument("target", help="run folder or checkpoint of lipkit train-gan, a saved module, "
                   "or module:factory (e.g. lipkit.examples:mlp)")
    p.add_argument("--input-shape", type=parse_shape, required=True,
                   help="one sample's shape without batch dim, e.g. 3,32,32")
    p.add_argument("--method", choices=BOUND_METHODS, default="gram",
                   help="certified per-layer method (default: gram)")
    p.add_argument("--samples", type=int, default=64,
                   help="random inputs for the empirical lower bound (0: skip it)")
    p.add_argument("--steps", type=int, default=100, help="gradient-ascent steps for the lower bound")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_bound)

    from .train.gan import GanConfig
    from .train.presets import CRITICS

    p = sub.add_parser("train-gan", help="train a WGAN with a critic preset (checkpoint, resume, metrics)",
                       description="Train a WGAN. Unset hyperparameters take the preset's published "
                       "values; the resolved config is written to OUT/config.json.")
    p.add_argument("--config", help="a config.json to start from (flags given here override it)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly from its last good checkpoint "
                        "(its config.json; --steps may be raised)")
    add_config_arguments(p, GanConfig)
    for action in p._actions:  # choices for the preset name, kept in one place (presets.CRITICS)
        if action.dest == "critic":
            action.choices = CRITICS
    p.set_defaults(func=cmd_train_gan)

    from .train.classify import REGS, ClfConfig

    p = sub.add_parser("train-clf", help="train a classifier with a Lipschitz regularizer; accuracy, "
                       "gap, Lipschitz bounds, PGD and certified robust accuracy",
                       description="Train a classifier. The resolved config is written to OUT/config.json; "
                       "the evaluation report to OUT/summary.json and OUT/metrics.jsonl.")
    p.add_argument("--config", help="a config.json to start from (flags given here override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly from its last "
                   "good checkpoint (its config.json; --steps / --epochs may be raised)")
    _clf_arguments(p, ClfConfig, REGS, skip=())
    p.set_defaults(func=cmd_train_clf)

    p = sub.add_parser("compare-clf", help="train several --reg settings with the same seeds; one table "
                       "(markdown + CSV) and a plot of test vs certified robust accuracy",
                       description="Runs go to OUT/REG/seed-S (finished ones are reused, cut ones resumed).")
    p.add_argument("--regs", type=lambda t: t.split(","), required=True, help=f"comma list from {REGS}")
    p.add_argument("--seeds", type=lambda t: [int(s) for s in t.split(",")], default=[0, 1, 2],
                   help="comma list of seeds (default: 0,1,2)")
    p.add_argument("--lams", type=parse_lams, default=None, help="fixed lambdas, e.g. l2=1e-4,snr=0.01 "
                   "(unset regs: classify.DEFAULT_LAM)")
    p.add_argument("--tune", action="store_true", help="choose each penalty's lambda on the validation split "
                   "(first seed, best final val accuracy over --grid)")
    p.add_argument("--grid", type=parse_floats, default=None, help="lambda grid for --tune, the same for every "
                   "reg (default: compare.DEFAULT_GRID per reg)")
    p.add_argument("--config", help="a config.json to start from (flags given here override it)")
    _clf_arguments(p, ClfConfig, REGS, skip=("reg", "lam", "seed"))
    for action in p._actions:
        if action.dest == "out":
            action.required, action.help = True, "folder for the runs, the tables and the plot"
    p.set_defaults(func=cmd_compare_clf, resume=False)
    return parser


def _clf_arguments(p: argparse.ArgumentParser, cls: type, regs: tuple[str, ...], skip: tuple[str, ...]) -> None:
    add_config_arguments(p, cls, skip=("eps", *skip))
    p.add_argument("--eps", type=parse_floats, default=None, metavar="E1,E2,..",
                   help="L2 radii of the robust accuracies, inputs in [0, 1] (default: 0.1,0.25,0.5)")
    p.add_argument("--epochs", type=float, default=None,
                   help="train for this many passes over the training set (sets --steps)")
    for action in p._actions:
        if action.dest == "reg":
            action.choices = regs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # compare-clf names its command in the table and plot captions
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

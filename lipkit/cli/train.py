"""The training sub-commands of `lipkit` (lipkit/cli.py holds the entry point and `bound`).

    lipkit train-gan --data D --critic P --out DIR [--resume] [hyperparameters]
    lipkit train-clf --data D --model mlp|cnn --reg R [--lam L] --epochs E --out DIR [--resume]
    lipkit compare-clf --regs R1,R2 --seeds 0,1,2 [--lams R=L,..|--tune] --out DIR

Every config field becomes a --flag (add_config_arguments); config_from_args resolves
dataclass defaults < --config file (or the resumed run's config.json) < the flags given.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..train.distributed import is_rank_zero, refuse_under_torchrun
from .values import parse_floats, parse_ints, parse_lams, parse_names, parse_pair


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One --flag per config field (help: the field's comment). Every default is None, meaning
    "not given": the config file / resumed run / dataclass default then decides."""
    from ..train.run_config import field_help

    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag, kind = "--" + f.name.replace("_", "-"), str(f.type)
        options: dict = {"default": None, "help": f"{helps.get(f.name, '').replace('%', '%%')} (default: {f.default})"}
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
    from ..train import load_config

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if getattr(args, f.name, None) is not None}
    base: dict = {}
    if getattr(args, "config", None):
        base = read_json_object(Path(args.config), "--config")
    if getattr(args, "resume", False):
        if "out" not in given:
            raise ValueError("--resume needs --out DIR, the folder of the run to continue")
        saved = Path(given["out"]) / "config.json"
        if not saved.is_file():
            raise ValueError(f"--resume: {saved} does not exist; is {given['out']} a lipkit run folder?")
        base = read_json_object(saved, "--resume")
    return load_config(cls, {**base, **given})


def read_json_object(path: Path, flag: str) -> dict:
    """A config file's JSON object; a missing, unreadable or non-JSON file is named in the error."""
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise ValueError(f"{flag} {path}: {err.strerror}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{flag} {path} is not a JSON config ({err}): give a config.json written by lipkit") from None
    if not isinstance(data, dict):
        raise ValueError(f"{flag} {path} holds a JSON {type(data).__name__}, not an object of config fields")
    return data


def cmd_train_gan(args: argparse.Namespace) -> int:
    from ..train import GanConfig, fit

    config = config_from_args(GanConfig, args)
    summary = fit(config, resume=args.resume)
    if not is_rank_zero():  # a torchrun job reports once
        return 0
    final = ", ".join(f"{k}={v:.4g}" for k, v in summary["final"].items() if isinstance(v, float))
    per_step = summary["seconds_per_step_this_session"]
    timing = f"{per_step * 1000:.1f} ms per step" if per_step else "no new steps"
    print(f"done: {summary['steps']} steps in {config.out} ({timing}); final: {final}")
    print(f"critic certified bound: {summary.get('finish', {}).get('critic_certified_bound')}")
    return 0


def _clf_config(args: argparse.Namespace) -> Any:
    """ClfConfig from the flags; --epochs E becomes --steps (E passes over the training set)."""
    from ..train.clf_config import ClfConfig, steps_for_epochs

    config = config_from_args(ClfConfig, args)
    if args.epochs is not None:
        if args.steps is not None:
            raise ValueError("give --epochs or --steps, not both")
        config = dataclasses.replace(config, steps=steps_for_epochs(config, args.epochs))
    return config


def cmd_train_clf(args: argparse.Namespace) -> int:
    from ..train.classify import fit

    config = _clf_config(args)
    summary = fit(config, resume=args.resume)
    if not is_rank_zero():
        return 0
    final = ", ".join(f"{k}={v:.4g}" for k, v in summary["final"].items() if isinstance(v, float))
    print(f"done: {summary['steps']} steps in {config.out}; final: {final}")
    return 0


def cmd_compare_clf(args: argparse.Namespace) -> int:
    from ..train.compare import compare

    refuse_under_torchrun("compare-clf", "it runs many small runs one after the other and writes one table")
    base = _clf_config(args)
    grids = {reg: args.grid for reg in args.regs} if args.grid else None
    table = compare(base, args.regs, args.seeds, args.out, lams=args.lams, tune=args.tune, grids=grids,
                    command="lipkit " + " ".join(args.argv))
    print((Path(args.out) / "table.md").read_text())
    print(f"wrote {args.out}/table.md, table.csv, runs.csv, plot.png ({len(table)} regs)")
    return 0


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    """Add train-gan, train-clf and compare-clf to the `lipkit` sub-command parsers."""
    from ..methods import method_names
    from ..train.gan import GanConfig

    critics, regs = method_names("critic"), method_names("classifier")

    p = sub.add_parser("train-gan", help="train a WGAN with a critic method (checkpoint, resume, metrics)",
                       description="Train a WGAN. Unset hyperparameters take the critic method's published "
                       "values; the resolved config is written to OUT/config.json.")
    p.add_argument("--config", help="a config.json to start from (flags given here override it)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly from its last good checkpoint "
                        "(its config.json; --steps may be raised)")
    add_config_arguments(p, GanConfig)
    for action in p._actions:  # choices: the registry's critic methods (lipkit.methods)
        if action.dest == "critic":
            action.choices = critics
    p.set_defaults(func=cmd_train_gan)

    from ..train.clf_config import ClfConfig

    p = sub.add_parser("train-clf", help="train a classifier with a Lipschitz regularizer; accuracy, "
                       "gap, Lipschitz bounds, PGD and certified robust accuracy",
                       description="Train a classifier. The resolved config is written to OUT/config.json; "
                       "the evaluation report to OUT/summary.json and OUT/metrics.jsonl.")
    p.add_argument("--config", help="a config.json to start from (flags given here override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly from its last "
                   "good checkpoint (its config.json; --steps / --epochs may be raised)")
    _clf_arguments(p, ClfConfig, regs, skip=())
    p.set_defaults(func=cmd_train_clf)

    p = sub.add_parser("compare-clf", help="train several --reg settings with the same seeds; one table "
                       "(markdown + CSV) and a plot of test vs certified robust accuracy",
                       description="Runs go to OUT/REG/seed-S (finished ones are reused, cut ones resumed).")
    p.add_argument("--regs", type=parse_names, required=True, help=f"comma list from {', '.join(regs)}")
    p.add_argument("--seeds", type=parse_ints, default=[0, 1, 2],
                   help="comma list of seeds (default: 0,1,2)")
    p.add_argument("--lams", type=parse_lams, default=None, help="fixed lambdas, e.g. l2=1e-4,snr=0.01 "
                   "(unset regs: the method's default lam)")
    p.add_argument("--tune", action="store_true", help="choose each penalty's lambda on the validation split "
                   "(first seed, best final val accuracy over --grid)")
    p.add_argument("--grid", type=parse_floats, default=None, help="lambda grid for --tune, the same for every "
                   "reg (default: each method's grid)")
    p.add_argument("--config", help="a config.json to start from (flags given here override it)")
    _clf_arguments(p, ClfConfig, regs, skip=("reg", "lam", "seed"))
    for action in p._actions:
        if action.dest == "out":
            action.required, action.help = True, "folder for the runs, the tables and the plot"
    p.set_defaults(func=cmd_compare_clf, resume=False)


def _clf_arguments(p: argparse.ArgumentParser, cls: type, regs: tuple[str, ...], skip: tuple[str, ...]) -> None:
    add_config_arguments(p, cls, skip=("eps", *skip))
    p.add_argument("--eps", type=parse_floats, default=None, metavar="E1,E2,..",
                   help="L2 radii of the robust accuracies, inputs in [0, 1] (default: 0.1,0.25,0.5)")
    p.add_argument("--epochs", type=float, default=None,
                   help="train for this many passes over the training set (sets --steps)")
    for action in p._actions:
        if action.dest == "reg":
            action.choices = regs

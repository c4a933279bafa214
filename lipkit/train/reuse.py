"""Reuse a finished run, resume a cut one, or train it: how multi-run commands (compare-clf,
reproduce) make a rerun cheap and an interruption lose at most one checkpoint interval."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

IGNORED_ON_REUSE = ("progress", "device", "out")  # a finished run is reused whatever these are


def finished_summary(config: Any, resolve: Callable[[Any], Any],
                     ignored: tuple[str, ...] = IGNORED_ON_REUSE) -> dict[str, Any] | None:
    """The summary.json content of config.out when it holds a finished run of the same
    resolved config (fields in `ignored` aside), else None."""
    summary = Path(config.out) / "summary.json"
    if not summary.is_file():
        return None
    saved = json.loads(summary.read_text())
    now = json.loads(json.dumps(dataclasses.asdict(resolve(config))))
    return saved if all(saved["config"].get(k) == v for k, v in now.items() if k not in ignored) else None


def run_or_reuse(config: Any, resolve: Callable[[Any], Any], fit: Callable[..., dict[str, Any]],
                 ignored: tuple[str, ...] = IGNORED_ON_REUSE) -> dict[str, Any]:
    """The summary of `config`'s run: reused when config.out holds a finished run of the same
    resolved config, resumed when it holds checkpoints, trained otherwise. An interrupted
    reproduce therefore loses at most the steps since each run's last checkpoint."""
    saved = finished_summary(config, resolve, ignored)
    if saved is not None:
        return saved
    return fit(config, resume=any(Path(config.out).glob("ckpt-*.pt")))


def train_or_reuse(config: Any) -> dict[str, Any]:
    """run_or_reuse for a GanConfig (train-gan) or a ClfConfig (train-clf)."""
    fit, resolve = _engine(config)
    return run_or_reuse(config, resolve, fit)


def is_finished(config: Any) -> bool:
    """Whether config.out holds a finished run of this config (train_or_reuse would reuse it)."""
    return finished_summary(config, _engine(config)[1]) is not None


def _engine(config: Any) -> tuple[Callable[..., dict[str, Any]], Callable[[Any], Any]]:
    from .classify import ClfConfig
    from .classify import fit as fit_clf
    from .classify import resolve_config as resolve_clf
    from .gan import GanConfig
    from .gan import fit as fit_gan
    from .gan import resolve_config as resolve_gan

    if isinstance(config, GanConfig):
        return fit_gan, resolve_gan
    if isinstance(config, ClfConfig):
        return fit_clf, resolve_clf
    raise TypeError(f"expected a GanConfig or a ClfConfig, got {type(config).__name__}")

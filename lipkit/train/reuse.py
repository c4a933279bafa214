"""Reuse a finished run, resume a cut one, or train it: how multi-run commands (compare-clf,
reproduce) make a rerun cheap and an interruption lose at most one checkpoint interval."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

IGNORED_ON_REUSE = ("progress", "device", "out")  # a finished run is reused whatever these are


def run_or_reuse(config: Any, resolve: Callable[[Any], Any], fit: Callable[..., dict[str, Any]],
                 ignored: tuple[str, ...] = IGNORED_ON_REUSE) -> dict[str, Any]:
    """The summary of `config`'s run: reused when config.out holds a finished run of the same
    resolved config, resumed when it holds checkpoints, trained otherwise. An interrupted
    reproduce therefore loses at most the steps since each run's last checkpoint."""
    out = Path(config.out)
    summary = out / "summary.json"
    if summary.is_file():
        saved = json.loads(summary.read_text())
        now = json.loads(json.dumps(dataclasses.asdict(resolve(config))))
        if all(saved["config"].get(k) == v for k, v in now.items() if k not in ignored):
            return saved
    return fit(config, resume=any(out.glob("ckpt-*.pt")))

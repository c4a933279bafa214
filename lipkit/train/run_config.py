"""RunConfig, the settings every training run has, and its life as a file: checked
(check_config), saved to and loaded from config.json (save_config / load_config), compared on
resume (check_same_run), and documented once (field_help: a field's trailing comment is the
CLI's help text)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .device import check_device
from .precision import check_precision

MAX_DEPTH = 1000  # hidden layers of an MLP: far beyond any real use, small enough to fail fast
# Fields a resumed run may change: how long it runs, how often it reports, where it runs.
RESUMABLE_CHANGES = ("steps", "eval_every", "checkpoint_every", "log_every", "progress", "device", "out", "compile")


@dataclass
class RunConfig:
    """Settings of the run itself; a task's config subclasses this and adds its own fields."""

    out: str = "runs/lipkit"  # output folder (config.json, metrics.jsonl, ckpt-*.pt, PNGs, summary.json)
    steps: int = 1000  # training steps to reach (a GAN counts generator steps)
    seed: int = 0  # seeds model init, data order and every noise stream
    device: str = "cpu"  # torch device for models and batches
    eval_every: int = 100  # evaluate (metrics + sample PNG) every this many steps; always at the end
    checkpoint_every: int = 100  # checkpoint every this many steps; always at the end
    keep_checkpoints: int = 2  # newest checkpoints kept, so a bad write never loses the run
    log_every: int = 1  # append a metrics.jsonl row every this many steps
    progress: bool = True  # tqdm progress bar with live metrics
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast forwards; fp16 with loss scaling)
    compile: bool = False  # torch.compile the models (not with a gradient penalty: no double backward)


def check_config(config: RunConfig) -> None:
    """Reject run settings that cannot work, naming the value and what is allowed."""
    for name in ("steps", "keep_checkpoints", "log_every"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    for name in ("eval_every", "checkpoint_every", "seed"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            meaning = "" if name == "seed" else " (0: only at the end)"
            raise ValueError(f"{name} must be an int >= 0{meaning}, got {value!r}")
    if Path(config.out).exists() and not Path(config.out).is_dir():
        raise ValueError(f"out={config.out!r} is a file: the output must be a folder (new, or a run to --resume)")
    check_device(config.device)
    check_precision(config.precision)


C = TypeVar("C", bound=RunConfig)


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True) + "\n")


def load_config(cls: type[C], source: str | Path | dict[str, Any]) -> C:
    """A config dataclass from config.json (or a dict); unknown keys are an error."""
    data = json.loads(Path(source).read_text()) if not isinstance(source, dict) else dict(source)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"config keys {unknown} are not fields of {cls.__name__}; allowed: {sorted(names)}")
    for f in dataclasses.fields(cls):  # JSON has no tuples: restore them where the default is one
        if isinstance(data.get(f.name), list) and "tuple" in str(f.type):
            data[f.name] = tuple(data[f.name])
    return cls(**data)


def field_help(cls: type) -> dict[str, str]:
    """{field: its trailing comment} from the class source (and its bases): the one place
    a default is documented is also the CLI's help text."""
    import inspect
    import re

    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for name, comment in re.findall(r"^\s+(\w+): [^=\n]+=[^#\n]*#\s*(.+)$", source, re.MULTILINE):
            found[name] = comment.strip()
    return found


def check_same_run(saved: dict[str, Any], config: RunConfig, path: Path) -> None:
    now = dataclasses.asdict(config)
    changed = sorted(k for k in set(saved) | set(now)
                     if k not in RESUMABLE_CHANGES and jsonable(saved.get(k)) != jsonable(now.get(k)))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume {path} with a different config ({details}); only "
                         f"{RESUMABLE_CHANGES} may change on resume")


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))

"""Tiny, fast run configs and their logged rows, shared by tests that compare runs with each
other (torchrun ranks, precisions, resumes). Not a test module (no test_ prefix)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lipkit.train.gan_config import GanConfig


def tiny_gan(out: Any, critic: str, steps: int = 10, **overrides: Any) -> GanConfig:
    """A WGAN run on 8 Gaussians small enough for a test: width 16, batch 16, 2 critic steps,
    no evaluation beyond the end, a metrics row every step."""
    return GanConfig(**{"out": str(out), "data": "gaussians8", "critic": critic, "steps": steps, "width": 16,
                        "g_width": 16, "depth": 2, "batch_size": 16, "n_critic": 2, "warmup_n_critic": 0,
                        "eval_every": 0, "log_every": 1, "lower_bound_steps": 0, "certify": False,
                        "image_metrics": False, "progress": False, "eval_samples": 32, **overrides})


def metric_rows(folder: Path) -> list[dict]:
    """metrics.jsonl of a run folder, one dict per logged step."""
    return [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]

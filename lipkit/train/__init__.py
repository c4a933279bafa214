"""Training: the run skeleton shared by every command (run.py) and WGAN training (gan.py)."""
from .checkpoint import CheckpointError, load_latest, save_checkpoint
from .gan import GanConfig, GanTask, critic_step, fit, generator_step, resolve_config
from .presets import CRITICS, apply_preset, preset_defaults
from .run import NonFiniteLossError, RunConfig, load_config, run

__all__ = [
    "apply_preset",
    "CheckpointError",
    "critic_step",
    "CRITICS",
    "fit",
    "GanConfig",
    "GanTask",
    "generator_step",
    "load_config",
    "load_latest",
    "NonFiniteLossError",
    "preset_defaults",
    "resolve_config",
    "run",
    "RunConfig",
    "save_checkpoint",
]

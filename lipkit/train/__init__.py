"""Training: the run skeleton shared by every command (run.py, checkpoint.py), WGAN training
(gan_config.py, gan.py, gan_eval.py), classifier training (clf_config.py, classify.py) and
compare-clf (compare.py). Methods come from lipkit.methods, data sets from lipkit.data."""
from .checkpoint import CheckpointError, load_latest, save_checkpoint
from .gan import GanConfig, GanTask, critic_step, critic_update, fit, generator_step, resolve_config
from .presets import preset_defaults
from .run import NonFiniteLossError, RunConfig, load_config, run

__all__ = [
    "CheckpointError",
    "critic_step",
    "critic_update",
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

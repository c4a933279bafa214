"""Run by tests/test_distributed.py under torchrun (2 ranks, gloo): every case of CASES
trains in OUT/<case>, and each rank saves its final model state (rank<r>.pt) and how many
checkpoints it wrote (saves<r>.txt), so the test can compare ranks with each other and with
a 1-rank run of the same config. Not a test module itself (no test_ prefix)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from small_runs import tiny_gan

from lipkit.train import classify, clf_config, gan, gan_config

run_module = importlib.import_module("lipkit.train.run")  # the module (lipkit.train.run is also a function's name)


def gan_case(out: str, critic: str, steps: int = 10) -> gan_config.GanConfig:
    return tiny_gan(out, critic, steps, checkpoint_every=5)


def clf_case(out: str, reg: str, steps: int = 10) -> clf_config.ClfConfig:
    return clf_config.ClfConfig(out=out, data="digits", reg=reg, steps=steps, train_size=128, val_size=32,
                                test_size=32, width=4, hidden=8, batch_size=16, log_every=1, eval_every=0,
                                robust_eval=False, certify=False, progress=False, checkpoint_every=5)


CASES = {
    "gan-sn": lambda out: gan_case(out, "sn"),
    "gan-gp": lambda out: gan_case(out, "gp"),
    "gan-clip": lambda out: gan_case(out, "clip"),
    "clf-sn": lambda out: clf_case(out, "sn"),
    "clf-snr": lambda out: clf_case(out, "snr"),
}


def model_state(task) -> dict[str, torch.Tensor]:
    """Every weight and buffer (power-iteration u, v included) of the task's models."""
    models = {"critic": task.critic, "generator": task.generator} if hasattr(task, "critic") else {"model": task.model}
    return {f"{name}.{k}": v.detach().clone() for name, m in models.items() for k, v in m.state_dict().items()}


def train(config, resume: bool = False) -> None:
    """One run (fit's path: resolve, build, run) keeping the task, then this rank's files."""
    rank = dist.get_rank()
    tasks, saves, rows = [], [], []
    is_gan = isinstance(config, gan_config.GanConfig)
    resolved = (gan_config if is_gan else clf_config).resolve_config(config)
    cls = gan.GanTask if is_gan else classify.ClfTask
    original = run_module.save_checkpoint

    def counting_save(*args, **kwargs):
        saves.append(1)
        return original(*args, **kwargs)

    run_module.save_checkpoint = counting_save
    try:
        run_module.run(resolved, lambda c: build_watched(cls, c, tasks, rows), resume=resume)
    finally:
        run_module.save_checkpoint = original
    out = Path(config.out)
    torch.save(model_state(tasks[-1]), out / f"rank{rank}.pt")
    (out / f"saves{rank}.txt").write_text(str(len(saves)))
    (out / f"rows{rank}.txt").write_text(str(max(rows)))


def build_watched(cls, config, tasks: list, rows: list):
    """The task, with the batch size its trained model sees in training recorded."""
    task = cls(config)
    model = task.critic if hasattr(task, "critic") else task.model
    model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]) if m.training else None)
    tasks.append(task)
    return task


def main() -> None:
    root = Path(sys.argv[1])
    dist.init_process_group("gloo")  # run() joins an existing group and leaves it to us
    for name, make in CASES.items():
        train(make(str(root / name)))
    # killed after step 5 (its checkpoint), resumed to 10: compared with gan-gp
    train(gan_case(str(root / "gan-gp-resumed"), "gp", steps=5))
    train(gan_case(str(root / "gan-gp-resumed"), "gp", steps=10), resume=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

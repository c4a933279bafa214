"""Time one WGAN critic step per Lipschitz method, side by side: what `lipkit bench`,
benchmarks/bench_critic_step.py, benchmarks/gpu_probe.py and claim (c) (step_cost.py) share.

A mode is a critic method of the registry (lipkit.methods), and one step is train-gan's own
critic update (lipkit.train.gan.critic_update: D(fake).mean() - D(real).mean() + the method's
penalties, backward, the method's optimizer with its published settings, its after-step
projections) on fixed real and fake batches. The critic is the DCGAN-style network of the
GPU anchor benchmark (lipkit.models.examples.dcgan_critic: 7 convs up to 8*width channels +
linear, 32x32x3 inputs); "none" is the plain step every ratio is taken to.

Timing discipline: the modes are interleaved over repeats (machine drift hits all alike),
each repeat builds a fresh critic, times `steps` steps after `warmup` untimed ones, and
the reported cost is the median of the repeats. Ratios are only ever taken within one
measure() call.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn

from ..methods import AppliedMethod, apply_method, get_method, method_names
from ..models.examples import dcgan_critic
from ..train import gan
from ..train.compiling import compile_in_place
from ..train.precision import Precision, check_precision
from ..train.presets import make_optimizer, preset_defaults

PLAIN = "none"  # the method every ratio is taken to
MODES = ("none", "clip", "torch-sn", "sn", "sn-conv", "gp", "gp1", "sn+gp", "torch-sn+gp")  # the default set


def is_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


def device_name(device: str) -> str:
    if is_cuda(device):
        return torch.cuda.get_device_name(torch.device(device))
    threads = torch.get_num_threads()
    return f"{device} ({threads} thread{'s' if threads != 1 else ''})"


COMPILED = " [compiled]"  # suffix of a mode timed with the critic under torch.compile


def compilable(mode: str) -> bool:
    """Whether critic method `mode` can be compiled (no double-backward penalty such as GP)."""
    return not get_method(mode, "critic").double_backward


def build(mode: str, width: int, device: str, real: torch.Tensor) -> tuple[nn.Module, AppliedMethod]:
    """The benchmark critic on `device`, constrained as critic method `mode` says with its
    published hyperparameters (seed 0: every mode starts from the same weights); a mode named
    `<method> [compiled]` gets the critic compiled in place (train-gan's --compile)."""
    name = mode.removesuffix(COMPILED)
    critic = dcgan_critic(width=width).to(device)
    method = apply_method(critic, name, preset_defaults(name, toy=False), "critic")
    with torch.no_grad():
        critic(real[:1])  # shapes the conv operator learns from a first forward: not a step's cost
    if mode != name:
        compile_in_place(critic)  # as train-gan --compile; the first (warm-up) steps pay the compile
    return critic, method


def make_step(mode: str, built: tuple[nn.Module, AppliedMethod], real: torch.Tensor,
              fake: torch.Tensor, precision: str = "fp32") -> Callable[[], None]:
    """One critic update of `mode` on fixed batches, as a closure: train-gan's critic_update with
    the method's own optimizer (fresh state per closure) and train-gan's --precision handling
    (autocast; fp16 with its own GradScaler)."""
    critic, method = built
    hp = preset_defaults(mode.removesuffix(COMPILED), toy=False)
    opt = make_optimizer(critic.parameters(), hp, hp["lr"])
    penalty_rng = torch.Generator().manual_seed(0)
    amp = Precision(precision, real.device) if precision != "fp32" else None  # fp32: the exact fp32 path

    def step() -> None:
        gan.critic_update(critic, opt, method, real, fake, None, penalty_rng, precision=amp)  # train-gan's update

    return step


def sync(device: str) -> None:
    # CUDA launches are asynchronous: without a sync the clock measures the queueing only.
    if is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


def batch_pair(batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed (real, fake) batches of 32x32x3 noise: the step's cost does not depend on data."""
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    fake = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    return real, fake


def time_steps(step: Callable[[], None], steps: int, warmup: int, device: str) -> float:
    """Seconds per call of `step` (mean over `steps` timed calls, after `warmup` untimed)."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


@contextmanager
def _cudnn_benchmark(device: str) -> Iterator[None]:
    """cudnn autotuning on CUDA for the measurement only (shapes are fixed, so the tuned
    kernels are what a training run gets), restored afterwards."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = saved or is_cuda(device)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def _check_sizes(batches: Sequence[int], steps: int, warmup: int, repeats: int, modes: Sequence[str],
                 device: str) -> None:
    try:
        torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"{device!r} is not a device: {err}") from None
    allowed = method_names("critic")
    unknown = [m for m in modes if m.removesuffix(COMPILED) not in allowed]
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; choose critic methods from {list(allowed)}")
    for mode in modes:
        if mode.endswith(COMPILED) and not compilable(mode.removesuffix(COMPILED)):
            raise ValueError(f"mode {mode!r}: its penalty differentiates a gradient (double backward), which "
                             "torch.compile does not support; time it eagerly")
    if not modes or not batches:
        raise ValueError("give at least one mode and one batch size")
    if min(batches) < 1 or steps < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch, steps, repeats >= 1 and warmup >= 0 "
                         f"(got batches={list(batches)}, steps={steps}, repeats={repeats}, warmup={warmup})")
    if is_cuda(device) and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device")


@contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count for the measurement only (None: left as it is)."""
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def measure(width: int, batches: Sequence[int], steps: int, warmup: int, repeats: int,
            modes: Sequence[str] = MODES, device: str = "cpu", threads: int | None = None,
            precision: str = "fp32") -> dict[str, Any]:
    """Time every mode at every batch size, modes interleaved within each repeat.
    threads: torch's CPU thread count during the measurement (None: as set).
    precision: fp32 | bf16 | fp16, as train-gan's --precision (every mode, the plain step too).

    Returns {"device", "torch", "width", "batches", "steps", "warmup", "repeats", "modes",
    "per_batch": {"<batch>": {mode: {"seconds": median s/step, "ms": the same in ms,
    "x_plain": median / the "none" mode's median (None without it), "repeats_s": [...]}}}}.
    Batch keys are strings so the dict is the same after a JSON round trip.
    """
    modes = list(modes)
    _check_sizes(batches, steps, warmup, repeats, modes, device)
    check_precision(precision)
    per_batch: dict[str, dict[str, dict[str, Any]]] = {}
    # One critic per mode for the whole call: building (lipkit's SN runs power iteration to
    # convergence at registration, seconds for the conv operator on a CPU) is not a step's
    # cost, and the input shape the conv operator learns does not depend on the batch size.
    critics: dict[str, tuple[nn.Module, AppliedMethod]] = {}
    with _cudnn_benchmark(device), _threads(threads):
        for batch in batches:
            real, fake = batch_pair(batch, device)
            times: dict[str, list[float]] = {m: [] for m in modes}
            for _ in range(repeats):
                for mode in modes:
                    if mode not in critics:
                        critics[mode] = build(mode, width, device, real)
                    step = make_step(mode, critics[mode], real, fake, precision)  # fresh Adam state per repeat
                    times[mode].append(time_steps(step, steps, warmup, device))
            per_batch[str(batch)] = _summarize(times)
        name = device_name(device)  # inside: it names the thread count the times were taken with
    return {"device": name, "torch": torch.__version__, "width": width, "precision": precision,
            "batches": list(batches), "steps": steps, "warmup": warmup, "repeats": repeats,
            "modes": modes, "per_batch": per_batch}


def _summarize(times: Mapping[str, list[float]]) -> dict[str, dict[str, Any]]:
    base = statistics.median(times[PLAIN]) if PLAIN in times else None
    out = {}
    for mode, values in times.items():
        med = statistics.median(values)
        out[mode] = {"seconds": med, "ms": med * 1e3, "x_plain": med / base if base else None,
                     "repeats_s": list(values)}
    return out


def format_tables(result: Mapping[str, Any]) -> str:
    """The benchmark's printout: a header line, then one markdown table per batch size."""
    lines = [f"torch {result['torch']} on {result['device']}; {result.get('precision', 'fp32')}; critic width "
             f"{result['width']}; median of "
             f"{result['repeats']} interleaved repeats of {result['steps']} steps", ""]
    for batch, modes in result["per_batch"].items():
        lines += [f"| mode (B={batch}) | ms/step | x plain |", "|---|---|---|"]
        for mode, row in modes.items():
            ratio = f"{row['x_plain']:.2f}" if row["x_plain"] is not None else "-"
            lines.append(f"| {mode} | {row['ms']:.1f} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def legacy_json(result: Mapping[str, Any]) -> dict[str, Any]:
    """What `bench_critic_step.py --json` always wrote (benchmarks/results/critic_step_cpu.json):
    its "ms" entries hold SECONDS per step, kept so old and new files compare; the full
    measurement follows under "measure"."""
    flat = {f"B{b}_{m}": row["seconds"] for b, modes in result["per_batch"].items() for m, row in modes.items()}
    return {"device": result["device"], "torch": result["torch"], "width": result["width"], "ms": flat,
            "measure": dict(result)}

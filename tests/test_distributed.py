"""torchrun data parallelism (issue 12): a 2-rank gloo run equals the 1-rank run on the same
global batch (losses within 1e-5 relative for 10 steps, final weights close), both ranks
hold identical weights and power-iteration buffers, rank 0 alone writes checkpoints, and a
2-rank run stopped after its step-5 checkpoint and resumed continues exactly."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_worker import CASES, gan_case, model_state
from small_runs import metric_rows

from lipkit.train import classify, clf_config, gan, gan_config
from lipkit.train.run import run

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(HERE / "distributed_worker.py"), str(root)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return root


def one_rank(config) -> dict[str, torch.Tensor]:
    is_gan = isinstance(config, gan_config.GanConfig)
    resolved = (gan_config if is_gan else clf_config).resolve_config(config)
    tasks = []
    cls = gan.GanTask if is_gan else classify.ClfTask
    run(resolved, lambda c: tasks.append(cls(c)) or tasks[-1])
    return model_state(tasks[-1])


def assert_same_losses(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 11))
    for ra, rb in zip(a, b):
        for key, value in ra.items():
            if key in ("step", "wall_seconds") or not isinstance(value, float):
                continue
            assert rb[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (ra["step"], key, value, rb[key])


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_equal_one_rank_on_the_global_batch(case, two_rank_runs, tmp_path):
    folder = two_rank_runs / case
    reference = one_rank(CASES[case](str(tmp_path / case)))
    assert_same_losses(metric_rows(tmp_path / case), metric_rows(folder))
    rank0, rank1 = (torch.load(folder / f"rank{r}.pt") for r in (0, 1))
    for key in rank0:  # identical on both ranks, u / v buffers included
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], reference[key], rtol=1e-4, atol=1e-5, msg=key)
    if case.endswith("-sn"):  # the power-iteration vectors were among the compared buffers
        assert any(k.endswith((".u", ".v")) for k in rank0), sorted(rank0)
    assert (folder / "saves0.txt").read_text() == "2" and (folder / "saves1.txt").read_text() == "0"
    # each rank trained on its half of the global batch of 16 (not the whole batch twice)
    assert (folder / "rows0.txt").read_text() == (folder / "rows1.txt").read_text() == "8"


def test_a_two_rank_run_resumes_exactly(two_rank_runs):
    assert_same_losses(metric_rows(two_rank_runs / "gan-gp"), metric_rows(two_rank_runs / "gan-gp-resumed"))
    final, resumed = (torch.load(two_rank_runs / name / "rank1.pt") for name in ("gan-gp", "gan-gp-resumed"))
    for key in final:
        assert torch.equal(final[key], resumed[key]), key


def test_a_batch_that_does_not_split_is_refused_in_one_line(tmp_path):
    """check_divisible's message, in a single process standing in for rank 0 of 3."""
    from lipkit.train import distributed

    original = distributed.world_size
    distributed.world_size = lambda: 3
    try:
        with pytest.raises(ValueError, match="batch_size=16 is not divisible by the 3 ranks"):
            distributed.check_divisible("batch_size", gan_case(str(tmp_path), "sn").batch_size)
    finally:
        distributed.world_size = original

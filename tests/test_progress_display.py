"""Progress: a bar on a terminal, plain lines (no carriage returns) in a log (issue 14)."""
from __future__ import annotations

import io

from lipkit.train.progress_display import LINES_PER_RUN, BarProgress, NoProgress, PlainProgress, progress_display


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_every_interval_and_at_each_evaluation():
    log = io.StringIO()
    display = progress_display(1000, 0, True, log)
    assert isinstance(display, PlainProgress)
    for step in range(1, 1001):
        display.step({"w1": "0.5"}, force_line=step == 333)
    display.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == LINES_PER_RUN + 1  # every 50th step, plus the evaluation at 333
    assert lines[0].startswith("step 50/1000 (5%)") and lines[0].endswith(", w1=0.5")
    assert any(line.startswith("step 333/1000") for line in lines) and lines[-1].startswith("step 1000/1000 (100%)")


def test_a_resumed_run_counts_from_where_it_was_and_short_runs_print_every_step():
    log = io.StringIO()
    display = progress_display(10, 7, True, log)
    for _ in range(3):
        display.step({})
    assert log.getvalue().splitlines() == [line for line in log.getvalue().splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in log.getvalue().splitlines()] == ["8/10", "9/10", "10/10"]


def test_a_terminal_gets_the_bar_and_disabled_gets_nothing():
    display = progress_display(5, 0, True, Terminal())
    assert isinstance(display, BarProgress)
    display.close()
    assert isinstance(progress_display(5, 0, False, io.StringIO()), NoProgress)


def test_train_gan_writes_plain_lines_to_a_non_terminal(tmp_path, capsys):
    from lipkit.cli import main

    assert main(["train-gan", "--data", "gaussians8", "--critic", "sn", "--steps", "40", "--width", "8",
                 "--batch-size", "8", "--eval-samples", "20", "--eval-every", "0", "--lower-bound-steps", "1",
                 "--no-image-metrics", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    steps = [line for line in err.splitlines() if line.startswith("step ")]
    assert "\r" not in err and len(steps) == 20 and steps[-1].startswith("step 40/40 (100%)")

"""`lipkit bound`: every kind of TARGET, and clear errors for bad ones."""
import math

import pytest
import torch
import torch.nn as nn

from lipkit.cli import main
from lipkit.train.gan import GanConfig, fit


def test_bound_on_factory_prints_table_and_bracket(capsys):
    assert main(["bound", "lipkit.examples:mlp", "--input-shape", "2", "--samples", "4", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "certified upper bound (gram, eval mode)" in out and "lies in [" in out
    lower, upper = (float(x) for x in out.split("lies in [")[1].split("]")[0].split(","))
    assert 0 < lower <= upper


def test_bound_on_saved_module_and_on_run_folder(tmp_path, capsys):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    torch.save(model, tmp_path / "m.pt")
    assert main(["bound", str(tmp_path / "m.pt"), "--input-shape", "3", "--samples", "0"]) == 0
    sigma = [float(torch.linalg.svdvals(m.weight.detach())[0]) for m in (model[0], model[2])]
    assert f"{sigma[0] * sigma[1]:.6g}" in capsys.readouterr().out

    run = tmp_path / "run"
    fit(GanConfig(out=str(run), data="gaussians8", critic="sn", steps=2, width=8, g_width=8, depth=2,
                  batch_size=16, noise_dim=2, n_critic=1, warmup_n_critic=0, eval_every=0,
                  lower_bound_steps=1, image_metrics=False, certify=False, progress=False))
    assert main(["bound", str(run), "--input-shape", "2", "--samples", "2", "--steps", "2"]) == 0
    assert "ParametrizedLinear" in capsys.readouterr().out  # the constrained critic, rebuilt


def test_bound_merges_consecutive_linear_layers_unless_told_not_to(tmp_path, capsys):
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    torch.save(model, tmp_path / "m.pt")
    merged = float(torch.linalg.svdvals((model[1].weight @ model[0].weight).detach())[0])
    product = math.prod(float(torch.linalg.svdvals(m.weight.detach())[0]) for m in model)
    assert main(["bound", str(tmp_path / "m.pt"), "--input-shape", "3", "--samples", "0"]) == 0
    out = capsys.readouterr().out
    assert f"{merged:.6g}" in out and "0+1" in out
    assert main(["bound", str(tmp_path / "m.pt"), "--input-shape", "3", "--samples", "0", "--no-merge"]) == 0
    assert f"{product:.6g}" in capsys.readouterr().out


def test_bad_targets_and_shapes(capsys):
    assert main(["bound", "no_such_thing", "--input-shape", "2"]) == 1
    assert "neither a file, a folder nor" in capsys.readouterr().err
    assert main(["bound", "lipkit.examples:nope", "--input-shape", "2"]) == 1
    assert "cannot import" in capsys.readouterr().err
    assert main(["bound", "lipkit.examples:mlp", "--input-shape", "5", "--samples", "0"]) == 1
    assert "does not fit layer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bound", "lipkit.examples:mlp", "--input-shape", "2,x"])


def test_bound_on_classifier_run_folder(tmp_path, capsys):
    from lipkit.train.classify import ClfConfig
    from lipkit.train.classify import fit as fit_clf

    run = tmp_path / "clf"
    fit_clf(ClfConfig(out=str(run), data="digits", model="mlp", reg="sn", steps=2, train_size=64, batch_size=32,
                      eval_every=0, progress=False, certify=False, pgd_size=8, pgd_steps=1,
                      lower_bound_size=4, lower_bound_steps=1))
    assert main(["bound", str(run), "--input-shape", "1,8,8", "--samples", "2", "--steps", "2"]) == 0
    assert "ParametrizedLinear" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["bound", "train-gan", "train-clf", "compare-clf", "summarize", "plot"])
def test_every_subcommand_has_working_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: lipkit " + command in capsys.readouterr().out

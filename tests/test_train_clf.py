"""Classifier training (lipkit.train.classify, compare, `lipkit train-clf` / `compare-clf`): each
--reg changes what it should against --reg none under the same seed, certified robust accuracy
never exceeds empirical, resume is exact, and the commands write complete folders. Tiny MLPs
on sklearn digits: seconds per test."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lipkit as lk
from lipkit.cli import main
from lipkit.methods import method_names
from lipkit.train.classify import ClfConfig, ClfTask, fit, resolve_config, steps_for_epochs
from lipkit.train.compare import compare

TRAIN_KEYS = ("loss", "loss_ce", "penalty", "batch_acc")


def tiny(out: Path | str = "unused", reg: str = "none", **kw) -> ClfConfig:
    base = dict(out=str(out), data="digits", train_size=128, val_size=32, test_size=64, model="mlp", width=32,
                depth=1, hidden=8, batch_size=32, reg=reg, steps=10, eval_every=0, progress=False, pgd_size=32,
                pgd_steps=5, lower_bound_size=8, lower_bound_steps=2)
    return ClfConfig(**{**base, **kw})


def trained(reg: str, steps: int = 10, **kw) -> ClfTask:
    task = ClfTask(resolve_config(tiny(reg=reg, **kw)))
    for step in range(1, steps + 1):
        stats = task.train_step(step)
        assert all(math.isfinite(v) for v in stats.values())
    task.model.eval()
    return task


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def input_grad_norm(task: ClfTask) -> float:
    x, y = task.splits["train"]
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(task.model(x), y, reduction="sum"), x)
    return float(g.flatten(1).norm(dim=1).mean())


def weight_grad_norm(task: ClfTask) -> float:
    x, y = task.splits["train"]
    grads = torch.autograd.grad(F.cross_entropy(task.model(x), y), list(task.model.parameters()))
    return float(sum(g.pow(2).sum() for g in grads).sqrt())


def test_each_penalty_changes_what_it_should_against_none() -> None:
    none = trained("none", lr=1e-2)
    fro = lambda t: sum(float(w.pow(2).sum()) for w in weights(t.model))  # noqa: E731
    sigmas = lambda t: [float(torch.linalg.svdvals(w.flatten(1))[0]) for w in weights(t.model)]  # noqa: E731
    assert fro(trained("l2", lam=0.1, lr=1e-2)) < 0.5 * fro(none)
    excess = lambda t: sum(max(float(w.norm()) - 1.0, 0.0) ** 2 for w in weights(t.model))  # noqa: E731
    assert excess(trained("frobenius-penalty", lam=1.0, max_norm=1.0, lr=1e-2)) < 0.5 * excess(none)
    for w in weights(trained("frobenius", max_norm=0.5, lr=1e-2).model):  # the constraint: projected each step
        assert float(w.norm()) <= 0.5 * (1 + 1e-5)
    snr = sigmas(trained("snr", lam=0.1, lr=1e-2))
    assert all(s < n for s, n in zip(snr, sigmas(none))), (snr, sigmas(none))
    assert input_grad_norm(trained("igp", lam=1.0, lr=1e-2)) < 0.8 * input_grad_norm(none)
    assert input_grad_norm(trained("igp", lam=1.0, lr=1e-2, igp_kind="logits")) < input_grad_norm(none)
    assert weight_grad_norm(trained("wgnp", lam=1.0, lr=1e-2)) < 0.8 * weight_grad_norm(none)


def test_sn_holds_every_sigma_at_the_bound() -> None:
    # eval right after a step reads the previous step's power-iteration vectors (torch's SN does
    # the same): at Adam lr 1e-2 sigma lags up to ~1.28 after 10 steps; at lr 1e-3 it stays at 1
    for sigma in [float(torch.linalg.svdvals(w)[0]) for w in weights(trained("sn", lr=1e-3).model)]:
        assert sigma == pytest.approx(1.0, abs=0.02)
    task = trained("sn-conv", steps=5, lr=1e-3, model="cnn", width=4, hidden=8)
    convs = [m for m in task.model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:  # the TRUE operator norm of each convolution, not the reshaped kernel's
        shape = tuple(int(s) for s in conv.parametrizations.weight[0].input_shape)
        assert lk.operator_norm(conv, shape) == pytest.approx(1.0, abs=0.03)
    assert len(convs) == 2


def test_certified_robust_accuracy_never_exceeds_empirical(tmp_path: Path) -> None:
    eps = (0.05, 0.1, 0.25, 0.5)
    for reg in ("sn", "none"):
        final = fit(tiny(tmp_path / reg, reg, train_size=600, val_size=100, test_size=200, width=64, steps=150,
                         batch_size=64, pgd_size=200, pgd_steps=20, eps=eps))["final"]
        assert final["test_acc"] > 0.7
        assert final["lipschitz_lower"] <= final["lipschitz_upper"]
        for e in eps:
            assert final[f"cert_acc@{e:g}"] <= final[f"pgd_acc@{e:g}"] <= final["robust_clean_acc"]
        assert final["cert_acc@0.1"] > 0.5  # the certificate is not vacuous
        assert final["gap_acc"] == pytest.approx(final["train_acc"] - final["test_acc"])


def rows(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "wall_seconds"}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("reg,extra", [("none", {}), ("snr", {"lam": 0.1}), ("sn", {}),
                                       ("igp", {"igp_kind": "logits"})])
def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, reg: str, extra: dict) -> None:
    kw = dict(steps=6, checkpoint_every=3, eval_every=3, robust_every=3, lr=1e-2, **extra)
    fit(tiny(tmp_path / "full", reg, **kw))
    fit(tiny(tmp_path / "cut", reg, **{**kw, "steps": 3}))
    fit(tiny(tmp_path / "cut", reg, **kw), resume=True)
    full = rows(tmp_path / "full")
    assert rows(tmp_path / "cut") == full  # every column, evaluation rows included
    assert [r["step"] for r in full] == [1, 2, 3, 4, 5, 6] and "cert_acc@0.5" in full[2]


def test_evaluating_never_changes_training(tmp_path: Path) -> None:
    a = fit(tiny(tmp_path / "a", "snr", steps=4, eval_every=1, robust_every=1, lam=0.1))
    b = fit(tiny(tmp_path / "b", "snr", steps=4, eval_every=0, lam=0.1))
    pick = lambda out: [[r[k] for k in TRAIN_KEYS] for r in rows(out)]  # noqa: E731
    assert pick(tmp_path / "a") == pick(tmp_path / "b") and a["final"] == b["final"]


def test_config_checks_and_epochs() -> None:
    config = resolve_config(ClfConfig(data="digits"))
    assert (config.val_size, config.train_size, config.test_size, config.width, config.lam) == (287, 1150, 360, 32, 0.0)
    assert steps_for_epochs(tiny(), 2) == 2 * (128 // 32)
    assert {"none", "l2", "frobenius", "frobenius-penalty", "snr", "sn", "sn-conv", "igp", "wgnp"} <= set(
        method_names("classifier"))
    assert "gp" not in method_names("classifier")  # a critic penalty: it needs a generated batch
    with pytest.raises(ValueError, match="reg='sn' adds no penalty"):
        resolve_config(tiny(reg="sn", lam=0.1))
    with pytest.raises(ValueError, match="'dropout' is not a classifier method"):
        resolve_config(tiny(reg="dropout"))
    with pytest.raises(ValueError, match=r"val_size 500 \+ train_size 1000 > 1437"):
        resolve_config(tiny(val_size=500, train_size=1000))
    with pytest.raises(ValueError, match="eps must be one or more finite radii"):
        resolve_config(tiny(eps=(-0.1,)))
    # the loss: the method's unless --loss says (lipnet trains with the margin its certificate needs)
    assert [resolve_config(tiny(reg=r)).loss for r in ("none", "sn", "lipnet")] == ["ce", "ce", "margin"]
    assert resolve_config(tiny(reg="lipnet", loss="hkr")).loss == "hkr"
    # lipnet's preset also sets its margin, temperature and conv kind; a flag given wins, others keep theirs
    pick = lambda c: (c.margin_eps, c.temperature, c.lipnet_conv)  # noqa: E731
    assert pick(resolve_config(tiny(reg="lipnet"))) == (1.5, 8.0, "sn-conv")
    assert pick(resolve_config(tiny(reg="sn-conv"))) == (0.5, 1.0, "aol")
    assert pick(resolve_config(tiny(reg="lipnet", temperature=2.0, lipnet_conv="aol"))) == (1.5, 2.0, "aol")
    with pytest.raises(ValueError, match=r"lipnet_conv='cayley' is not allowed; choose one of"):
        resolve_config(tiny(reg="lipnet", lipnet_conv="cayley"))
    with pytest.raises(ValueError, match=r"loss='mse' is not allowed; choose one of"):
        resolve_config(tiny(loss="mse"))


def test_train_clf_cli_end_to_end(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["train-clf", "--data", "digits", "--train-size", "128", "--val-size", "32", "--test-size", "64",
            "--model", "mlp", "--width", "16", "--depth", "1", "--reg", "snr", "--lam", "0.01", "--epochs", "1",
            "--batch-size", "32", "--pgd-size", "16", "--pgd-steps", "3", "--lower-bound-size", "4",
            "--lower-bound-steps", "1", "--eps", "0.1,0.3", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert "done: 4 steps" in capsys.readouterr().out
    for name in ("config.json", "metrics.jsonl", "summary.json", "ckpt-00000004.pt"):
        assert (out / name).is_file(), name
    final = json.loads((out / "summary.json").read_text())["final"]
    assert {"train_acc", "val_acc", "test_acc", "gap_acc", "gap_loss", "lipschitz_lower", "lipschitz_upper",
            "pgd_acc@0.3", "cert_acc@0.3"} <= set(final)
    assert main(["train-clf", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert [r["step"] for r in rows(out)] == list(range(1, 9))
    assert main(["train-clf", "--out", str(tmp_path / "x"), "--steps", "3", "--epochs", "1"]) == 1
    assert "--epochs or --steps" in capsys.readouterr().err
    assert main(["train-clf", "--out", str(tmp_path / "y"), "--reg", "sn", "--lam", "1"]) == 1
    assert "adds no penalty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train-clf", "--reg", "dropout"])


def test_compare_clf_writes_table_csv_and_plot(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    args = ["compare-clf", "--regs", "none,l2", "--seeds", "0,1", "--lams", "l2=0.01", "--data", "digits",
            "--train-size", "64", "--val-size", "32", "--test-size", "32", "--model", "mlp", "--width", "8",
            "--depth", "1", "--steps", "3", "--batch-size", "32", "--pgd-size", "8", "--pgd-steps", "2",
            "--lower-bound-size", "4", "--lower-bound-steps", "1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert "| l2 | 0.01 |" in capsys.readouterr().out
    for name in ("table.md", "table.csv", "runs.csv", "plot.png", "none/seed-1/summary.json"):
        assert (out / name).is_file(), name
    table = list(csv.DictReader((out / "table.csv").open()))
    assert [r["reg"] for r in table] == ["none", "l2"] and "cert_acc@0.25_std" in table[0]
    assert len(list(csv.DictReader((out / "runs.csv").open()))) == 4
    assert "lipkit compare-clf --regs none,l2" in (out / "table.md").read_text()
    stamp = (out / "l2/seed-0/summary.json").stat().st_mtime_ns
    assert main(args) == 0  # finished runs are reused, not retrained
    assert (out / "l2/seed-0/summary.json").stat().st_mtime_ns == stamp


def test_compare_tunes_lambda_on_validation_only(tmp_path: Path) -> None:
    base = tiny(tmp_path, train_size=64, val_size=32, test_size=32, width=8, steps=3, robust_eval=False)
    table = compare(base, ["none", "l2"], [0], tmp_path, tune=True, grids={"l2": [1e-3, 10.0]})
    assert table[1]["lam"] in (1e-3, 10.0)
    tune = list(csv.DictReader((tmp_path / "tune.csv").open()))
    assert [float(r["lam"]) for r in tune] == [1e-3, 10.0] and "test_acc" not in tune[0]
    best = max(tune, key=lambda r: (float(r["val_acc"]), -float(r["lam"])))
    assert float(best["lam"]) == table[1]["lam"]
    with pytest.raises(ValueError, match="either fixed lams or --tune"):
        compare(base, ["l2"], [0], tmp_path, lams={"l2": 0.1}, tune=True)
    with pytest.raises(ValueError, match="lams given for"):
        compare(base, ["none", "sn"], [0], tmp_path, lams={"sn": 0.1})

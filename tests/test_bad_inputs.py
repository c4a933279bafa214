"""Issue 16: every bad command line is ONE error line naming the bad value, a non-zero exit,
and no traceback; every bad API call a clear error. Table-driven: one row per case a user hit
(silent replacements, tracebacks, unclear messages) and the ones added while fixing them.

The CLI rows run in-process through lipkit.cli.main (the error boundary lives there, so an
exception escaping it fails the test); test_entry_point_* run the real `python -m lipkit`."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import lipkit as lk
from lipkit.cli import main
from lipkit.train.gan import GanConfig, fit

TINY_GAN = ["--data", "gaussians8", "--critic", "gp", "--steps", "2", "--width", "8", "--batch-size", "16",
            "--eval-samples", "50", "--no-progress", "--no-certify"]
TINY_CLF = ["--data", "digits", "--model", "mlp", "--width", "8", "--steps", "3", "--no-progress", "--pgd-size", "4",
            "--pgd-steps", "1", "--lower-bound-size", "2", "--lower-bound-steps", "1", "--no-certify"]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


USER_MODULE = """
import torch.nn as nn


class GoneNet(nn.Linear):  # pickled, then its module is deleted: an unimportable class
    pass
"""
USER_FACTORY = """
def factory_that_raises():
    raise RuntimeError("weights file missing")
"""


def pickle_of_a_vanished_class(root: Path) -> Path:
    import importlib

    (root / "user_models.py").write_text(USER_MODULE)
    sys.path.insert(0, str(root))
    try:
        torch.save(importlib.import_module("user_models").GoneNet(2, 1), root / "unimportable.pt")
    finally:
        sys.modules.pop("user_models")
        sys.path.remove(str(root))
    (root / "user_models.py").unlink()
    (root / "factories").mkdir()
    (root / "factories" / "user_factories.py").write_text(USER_FACTORY)
    return root / "unimportable.pt"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    run = root / "gan-run"  # a finished 4-step run to resume, bound and plot
    fit(GanConfig(out=str(run), data="gaussians8", critic="gp", steps=4, width=8, g_width=8, depth=2, batch_size=16,
                  noise_dim=2, eval_every=2, checkpoint_every=2, eval_samples=50, lower_bound_steps=1,
                  image_metrics=False, certify=False, progress=False))
    (root / "a-file").write_text("not a folder\n")
    (root / "empty").mkdir()
    (root / "corrupt.pt").write_bytes(b"\x00garbage" * 10)
    ckpt = sorted(run.glob("ckpt-*.pt"))[-1].read_bytes()
    (root / "truncated.pt").write_bytes(ckpt[: len(ckpt) // 2])
    (root / "bad.json").write_text("{not json")
    idx = root / "labels-200"  # images fine, every label 200
    idx.mkdir()
    for split, n in (("train", 40), ("t10k", 10)):
        write_idx(idx / f"{split}-images-idx3-ubyte.gz", np.zeros((n, 8, 8)))
        write_idx(idx / f"{split}-labels-idx1-ubyte.gz", np.full(n, 200))
    pickle_of_a_vanished_class(root)
    sys.path.insert(0, str(root / "factories"))  # `user_factories:factory_that_raises` importable
    yield {"root": str(root), "run": str(run), "file": str(root / "a-file"), "empty": str(root / "empty"),
            "corrupt": str(root / "corrupt.pt"), "truncated": str(root / "truncated.pt"),
            "bad_json": str(root / "bad.json"), "idx200": str(idx), "unimportable": str(root / "unimportable.pt"),
            "missing": str(root / "no" / "such" / "dir")}
    sys.path.remove(str(root / "factories"))
    sys.modules.pop("user_factories", None)


# (case, argv with {placeholders} from `paths`, what the one error line must contain)
CLI_CASES = [
    # silent before: a 0 replaced by the default, a negative count skipping work
    ("gan batch 0", ["train-gan", *TINY_GAN, "--batch-size", "0", "--out", "{root}/o1"], "batch_size must be an int >= 1, got 0"),
    ("gan width 0", ["train-gan", *TINY_GAN, "--width", "0", "--out", "{root}/o2"], "width must be an int >= 1, got 0"),
    ("gan noise 0", ["train-gan", *TINY_GAN, "--noise-dim", "0", "--out", "{root}/o3"], "noise_dim must be an int >= 1, got 0"),
    ("gan eval samples 0", ["train-gan", *TINY_GAN, "--eval-samples", "0", "--out", "{root}/o4"],
     "eval_samples must be an int >= 2, got 0"),
    ("gan g-width 0", ["train-gan", *TINY_GAN, "--g-width", "0", "--out", "{root}/o5"], "g_width must be an int >= 1, got 0"),
    ("clf width 0", ["train-clf", *TINY_CLF, "--width", "0", "--out", "{root}/o6"], "width must be an int >= 1, got 0"),
    ("bound samples -5", ["bound", "lipkit.examples:mlp", "--input-shape", "2", "--samples", "-5"],
     "'-5' is not an integer >= 0"),
    ("bound steps -1", ["bound", "lipkit.examples:mlp", "--input-shape", "2", "--steps", "-1"],
     "'-1' is not an integer >= 0"),
    ("idx labels all 200", ["train-clf", *TINY_CLF, "--data", "{idx200}", "--out", "{root}/o7"],
     "labels span 0..200 but 200 of those 201 classes have no image"),
    ("resume below checkpoint", ["train-gan", "--out", "{run}", "--resume", "--steps", "2"],
     "steps=2 is below step 4"),
    ("clf lr 1e6 diverges", ["train-clf", *TINY_CLF, "--lr", "1e6", "--out", "{root}/o8"], "diverged: loss_ce="),
    ("gan steps 0", ["train-gan", *TINY_GAN, "--steps", "0", "--out", "{root}/o9"], "steps must be an int >= 1, got 0"),
    ("gan lr nan", ["train-gan", *TINY_GAN, "--lr", "nan", "--out", "{root}/o10"], "lr must be a finite number > 0, got nan"),
    ("gan betas", ["train-gan", *TINY_GAN, "--betas", "1,2", "--out", "{root}/o11"], "betas must be two numbers in [0, 1)"),
    # found by sweeping every flag with -1, 0, nan, inf, 1e12 (this session)
    ("gan depth 1e12 (would hang)", ["train-gan", *TINY_GAN, "--depth", "1000000000000", "--out", "{root}/o21"],
     "depth must be an int in [1, 1000]"),
    ("clf val size >= pool", ["train-clf", *TINY_CLF, "--val-size", "100000", "--out", "{root}/o22"],
     "val_size=100000 leaves no training image"),
    ("clf momentum 1", ["train-clf", *TINY_CLF, "--momentum", "1", "--out", "{root}/o23"], "momentum must be in [0, 1)"),
    ("seed -1", ["train-clf", *TINY_CLF, "--seed", "-1", "--out", "{root}/o24"], "seed must be an int >= 0, got -1"),
    # tracebacks before
    ("gan out is a file", ["train-gan", *TINY_GAN, "--out", "{file}"], "is a file"),
    ("clf out is a file", ["train-clf", *TINY_CLF, "--out", "{file}"], "is a file"),
    ("compare out is a file", ["compare-clf", "--regs", "none", "--seeds", "0", *TINY_CLF, "--out", "{file}"], "is a file"),
    ("reproduce out is a file", ["reproduce", "--claims", "a", "--out", "{file}"], "is a file"),
    ("gan device bogus", ["train-gan", *TINY_GAN, "--device", "bogus", "--out", "{root}/o12"],
     "device='bogus' is not a torch device"),
    ("gan device cuda:99", ["train-gan", *TINY_GAN, "--device", "cuda:99", "--out", "{root}/o13"], "device='cuda:99' but"),
    ("reproduce device bogus", ["reproduce", "--device", "bogus", "--out", "{root}/o14"], "device='bogus'"),
    ("bound empty folder", ["bound", "{empty}", "--input-shape", "2"], "no checkpoint (ckpt-*.pt) in"),
    ("bound corrupt file", ["bound", "{corrupt}", "--input-shape", "2"], "is not a readable torch file"),
    ("bound truncated checkpoint", ["bound", "{truncated}", "--input-shape", "2"], "is not a readable torch file"),
    ("bound factory raises", ["bound", "user_factories:factory_that_raises", "--input-shape", "2"],
     "user_factories:factory_that_raises() raised RuntimeError: weights file missing"),
    ("bound unimportable pickle", ["bound", "{unimportable}", "--input-shape", "2"],
     "pickles a class that cannot be imported here"),
    ("bound huge input", ["bound", "lipkit.examples:dcgan_critic", "--input-shape", "3,100000,100000", "--samples", "0"],
     "out of memory"),
    ("gan huge eval samples", ["train-gan", *TINY_GAN, "--eval-samples", "1000000000000", "--steps", "1",
                               "--out", "{root}/o15"], "out of memory"),
    ("bench width -1", ["bench", "--width", "-1"], "'-1' is not an integer >= 1"),
    ("bench batch 0", ["bench", "--batch", "0"], "'0' is not an integer >= 1"),
    ("bench json is a folder", ["bench", "--modes", "none", "--json", "{empty}"], "--json {empty} is a folder"),
    ("bench device bogus", ["bench", "--device", "bogus"], "device='bogus'"),
    ("plot out is a folder", ["plot", "{run}", "--metric", "w1", "--out", "{empty}"], "--out {empty} is a folder"),
    ("summarize not a run", ["summarize", "{empty}"], "{empty}"),
    # unclear before
    ("corrupt config", ["train-gan", "--config", "{bad_json}", "--out", "{root}/o16"],
     "--config {bad_json} is not a JSON config"),
    ("missing config", ["train-gan", "--config", "{root}/nope.json", "--out", "{root}/o17"], "No such file or directory"),
    ("compare seeds a,b", ["compare-clf", "--regs", "none", "--seeds", "a,b", "--out", "{root}/o18"],
     "'a,b' is not a list of integers"),
    ("compare lams on a constraint", ["compare-clf", "--regs", "sn,l2", "--lams", "sn=0.5", *TINY_CLF, "--out", "{root}/o19"],
     "lams given for ['sn'], which add no penalty"),
    ("compare lams not compared", ["compare-clf", "--regs", "l2", "--lams", "snr=0.5", *TINY_CLF, "--out", "{root}/o20"],
     "lams given for ['snr'], which are not in regs"),
]


@pytest.mark.parametrize("case,argv,expected", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_command_line_is_one_error_line(case, argv, expected, paths, capsys):
    argv = [a.format(**paths) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's usage errors
        code = exit_info.code
    out, err = capsys.readouterr()
    assert code not in (0, None), f"{case}: exit {code}\n{out}\n{err}"
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1, err
    assert expected.format(**paths) in errors[0], errors[0]


def test_bench_json_and_plot_into_a_missing_folder_are_created(paths, capsys):
    target = Path(paths["missing"]) / "w1.png"
    assert main(["plot", paths["run"], "--metric", "w1", "--out", str(target)]) == 0
    assert target.is_file() and target.stat().st_size > 0


def run_module(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lipkit", *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_entry_point_exit_code_and_debug_traceback(paths):
    plain = run_module("bound", paths["corrupt"], "--input-shape", "2")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().startswith("error: ") and plain.stderr.count("\n") == 1
    debug = run_module("bound", paths["corrupt"], "--input-shape", "2", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    env_debug = run_module("bound", paths["corrupt"], "--input-shape", "2", env={"LIPKIT_DEBUG": "1"})
    assert "Traceback" in env_debug.stderr


def test_unexpected_errors_still_one_line_with_the_debug_hint(monkeypatch, capsys):
    import lipkit.cli.bound as bound_cli

    def boom(*args, **kwargs):
        raise KeyError("internal")

    monkeypatch.setattr(bound_cli, "lipschitz_bound", boom)
    assert main(["bound", "lipkit.examples:mlp", "--input-shape", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KeyError" in err and "--debug" in err


# ------------------------------------------------------------------------------- the API

def test_constrain_refuses_integer_and_non_finite_weights():
    layer = nn.Linear(3, 4)
    layer.weight = nn.Parameter(torch.ones(4, 3, dtype=torch.int32), requires_grad=False)
    with pytest.raises(ValueError, match="torch.int32 weight"):
        lk.constrain(layer, "spectral")
    layer = nn.Linear(3, 4)
    with torch.no_grad():
        layer.weight[1, 2] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite"):
        lk.constrain(layer, "spectral")


@pytest.mark.parametrize("operator", ["reshape", "conv"])
def test_a_weight_turning_nan_in_training_is_named(operator):
    from lipkit.constraints.base import NonFiniteWeightError

    layer = nn.Conv2d(2, 3, 3, padding=1)
    lk.constrain(layer, "spectral", operator=operator)
    layer(torch.ones(1, 2, 6, 6))
    with torch.no_grad():
        layer.parametrizations.weight.original[0, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightError, match="1 non-finite"):
        layer(torch.ones(1, 2, 6, 6))


def test_declared_input_shape_that_disagrees_with_the_input_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    lk.constrain(model, "spectral", operator="conv", input_shape=(3, 16, 16))
    model(torch.ones(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"input_shape=\(3, 16, 16\).*\(3, 8, 8\)"):
        model(torch.ones(2, 3, 8, 8))
    model.eval()  # evaluating at another size is allowed: the norm stays that of the declared shape
    assert model(torch.ones(2, 3, 8, 8)).shape == (2, 4, 8, 8)


@pytest.mark.parametrize("layer", [nn.BatchNorm1d(4), nn.Dropout(0.5)], ids=["batchnorm", "dropout"])
def test_bound_of_a_train_mode_model_is_refused(layer):
    model = nn.Sequential(nn.Linear(3, 4), layer, nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"train mode \('1'\).*model.eval\(\)"):
        lk.lipschitz_bound(model, (3,))
    assert lk.lipschitz_bound(model.eval(), (3,)).upper > 0


def test_gradient_penalty_on_a_train_mode_batchnorm_critic_is_refused():
    critic = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    with pytest.raises(ValueError, match="BatchNorm in train mode.*meaningless"):
        lk.gradient_penalty(critic, real, fake)
    assert torch.isfinite(lk.gradient_penalty(critic.eval(), real, fake))


def test_resume_after_bad_resume_still_works(paths, tmp_path):
    """The refused `--resume --steps 2` changed nothing: the run resumes to 5 steps."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(paths["run"], run)
    assert main(["train-gan", "--out", str(run), "--resume", "--steps", "5"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]


def small_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))


# (case, call, error type, what the message must contain): API calls a probe found unclear
API_CASES = [
    ("constrain a string", lambda: lk.constrain("model", "spectral"), TypeError, "must be a torch.nn.Module, got str"),
    ("spectral_norm of ints", lambda: lk.spectral_norm(torch.ones(3, 4, dtype=torch.int64)), TypeError,
     "torch.int64 tensor"),
    ("lower bound, empty batch", lambda: lk.lipschitz_lower_bound(small_mlp(), torch.randn(0, 3)), ValueError,
     "B >= 1, got (0, 3)"),
    ("lower bound, NaN inputs", lambda: lk.lipschitz_lower_bound(small_mlp(), torch.full((4, 3), float("nan"))),
     ValueError, "inputs contain NaN"),
    ("lower bound, int inputs", lambda: lk.lipschitz_lower_bound(small_mlp(), torch.ones(4, 3, dtype=torch.long)),
     TypeError, "torch.int64"),
    ("lower bound, steps -1", lambda: lk.lipschitz_lower_bound(small_mlp(), torch.randn(4, 3), steps=-1), ValueError,
     "steps must be an int >= 0, got -1"),
    ("lower bound, lr nan", lambda: lk.lipschitz_lower_bound(small_mlp(), torch.randn(4, 3), lr=float("nan")),
     ValueError, "lr must be a finite number > 0, got nan"),
    ("conv SN, empty output", lambda: empty_output_conv_sn()(torch.zeros(1, 2, 6, 6)), ValueError,
     "the layer's output is empty ((2, 11, 0)) on inputs of shape (2, 6, 6)"),  # a torch.cat error before
]


def empty_output_conv_sn() -> nn.Module:
    """A ConvTranspose2d whose padding crops one output dim to 0 (torch accepts it)."""
    layer = nn.ConvTranspose2d(2, 2, (2, 4), (2, 1), (1, 6), (1, 0), groups=2, dilation=(1, 2))
    return lk.constrain(nn.Sequential(layer), "spectral", operator="conv")


@pytest.mark.parametrize("case,call,kind,expected", API_CASES, ids=[c[0] for c in API_CASES])
def test_bad_api_call_is_a_clear_error(case, call, kind, expected):
    with pytest.raises(kind) as info:
        call()
    assert expected in str(info.value)

"""Adding a method and a data set is one registry entry each: this test registers both from
outside the library (no library edit) and trains a GAN and a classifier with them through the
command line, which reads the same registries."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from lipkit.cli import main
from lipkit.data import DataSpec, ImageSet, data_names, register_data, unregister_data
from lipkit.methods import Method, PenaltyTerm, get_method, method_names, register_method, unregister_method
from lipkit.methods.attach import lipkit_constraint

CLIP = 0.05
CALLS: list[str] = []  # which use called the toy penalty


def stripes(split: str = "train", *, subset: int | None = None, seed: int = 0) -> ImageSet:
    """8x8 horizontal (class 0) or vertical (class 1) stripes with noise, in [0, 1]."""
    n = 96 if split == "train" else 32
    gen = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.arange(n) % 2
    rows = (torch.arange(8) % 2).float()
    base = torch.where(labels.view(-1, 1, 1) == 0, rows.view(1, 8, 1).expand(n, 8, 8), rows.view(1, 1, 8).expand(n, 8, 8))
    images = (0.8 * base + 0.2 * torch.rand(n, 8, 8, generator=gen)).unsqueeze(1)
    if subset is not None:
        images, labels = images[:subset], labels[:subset]
    return ImageSet("stripes", images, labels, num_classes=2, split=split)


def output_energy(model: nn.Module, hp) -> object:
    """A toy penalty: the mean squared output on the step's inputs (any task provides them)."""
    def term(batch) -> torch.Tensor:
        CALLS.append("critic" if batch.fake is not None else "classifier")
        return model(batch.inputs).pow(2).mean()
    return term


@pytest.fixture()
def toy_entries():
    register_data(DataSpec("test-stripes", "image", stripes, feature_epochs=1, feature_batch=32))
    register_method(Method(
        "test-clip-energy", "clip every weight to 0.05 after each step, plus an output-energy penalty",
        constraint=lipkit_constraint("clip", "project", lambda hp: {"c": CLIP}),
        penalties=(PenaltyTerm("energy", output_energy, weight="penalty_weight"),),
        critic={"optimizer": "adam", "lr": 1e-3, "betas": (0.5, 0.9), "n_critic": 2, "penalty_weight": 0.5},
        classifier={"lam": 0.25}, grid=(0.1, 1.0)))
    CALLS.clear()
    yield
    unregister_method("test-clip-energy")
    unregister_data("test-stripes")


def weights(model_state: dict) -> list[torch.Tensor]:
    return [v for k, v in model_state.items() if k.endswith("weight")]


def test_a_registered_method_and_data_set_train_a_gan_and_a_classifier(toy_entries, tmp_path: Path) -> None:
    assert "test-clip-energy" in method_names("critic") and "test-clip-energy" in method_names("classifier")
    assert "test-stripes" in data_names("image")
    gan_out, clf_out = tmp_path / "gan", tmp_path / "clf"
    assert main(["train-gan", "--data", "test-stripes", "--critic", "test-clip-energy", "--steps", "1",
                 "--width", "4", "--batch-size", "8", "--eval-samples", "16", "--no-image-metrics",
                 "--lower-bound-steps", "1", "--no-progress", "--out", str(gan_out)]) == 0
    config = json.loads((gan_out / "config.json").read_text())
    assert (config["optimizer"], config["lr"], config["n_critic"], config["penalty_weight"]) == ("adam", 1e-3, 2, 0.5)
    assert CALLS == ["critic", "critic"]  # n_critic = 2 critic updates, each with the penalty
    state = torch.load(sorted(gan_out.glob("ckpt-*.pt"))[-1], weights_only=False)["task"]["critic"]
    assert all(float(w.abs().max()) <= CLIP + 1e-7 for w in weights(state))  # the projection ran

    CALLS.clear()
    assert main(["train-clf", "--data", "test-stripes", "--reg", "test-clip-energy", "--model", "cnn",
                 "--width", "4", "--hidden", "8", "--val-size", "16", "--batch-size", "16", "--steps", "2",
                 "--pgd-size", "8", "--pgd-steps", "2", "--lower-bound-size", "4", "--lower-bound-steps", "1",
                 "--no-progress", "--out", str(clf_out)]) == 0
    assert CALLS == ["classifier", "classifier"]
    rows = [json.loads(line) for line in (clf_out / "metrics.jsonl").read_text().splitlines()]
    assert json.loads((clf_out / "config.json").read_text())["lam"] == 0.25  # the entry's default
    for row in rows:  # loss = cross-entropy + lam * penalty: the method's penalty entered the loss
        assert row["loss"] == pytest.approx(row["loss_ce"] + 0.25 * row["penalty"], rel=1e-5)
        assert row["penalty"] > 0
    state = torch.load(sorted(clf_out.glob("ckpt-*.pt"))[-1], weights_only=False)["task"]["model"]
    assert all(float(w.abs().max()) <= CLIP + 1e-7 for w in weights(state))


def test_registries_refuse_duplicates_and_name_what_exists(toy_entries) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_method(get_method("sn"))
    with pytest.raises(ValueError, match="already registered"):
        register_data(DataSpec("digits", "image", stripes))
    with pytest.raises(ValueError, match="'nope' is not a critic method; allowed: .*test-clip-energy"):
        get_method("nope", "critic")
    with pytest.raises(ValueError, match="kind='video'"):
        DataSpec("x", "video", stripes)

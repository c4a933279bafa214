"""THE registry of data sets: one entry per set (name, kind, constructor, what it offers).
Trainers, evaluation and the FID feature network look a set up here instead of branching
on names, so adding a data set is one `register_data(DataSpec(...))` call.

- toy sets (kind "toy"): `make(**options)` returns a sampler with .sample(n, generator) ->
  (points, labels or None); `uses_classes`: make takes num_classes (rings: --classes K).
- image sets (kind "image"): `make(split=..., subset=..., seed=...)` returns an ImageSet
  in [0, 1]; `feature_epochs` / `feature_batch`: how its cached FID classifier is trained.
A folder path that is not a registered name is read as a folder of the four MNIST-format
idx files (idx_folder_spec).
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..named import NamedRegistry
from .images import ImageSet, load_digits, load_idx_images
from .toy import SwissRoll, ToyMixture, gaussians8, gaussians25, rings

KINDS = ("toy", "image")


@dataclass(frozen=True)
class DataSpec:
    """One data set (module docs). cache_name: the FID classifier's cache file name part."""

    name: str
    kind: str
    make: Callable[..., Any]
    conditional: bool = True  # has labels (a conditional GAN / a classifier can use it)
    uses_classes: bool = False  # toy: make(num_classes=K) (--classes)
    feature_epochs: int = 5
    feature_batch: int = 128
    cache_name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"DataSpec {self.name!r}: kind={self.kind!r}, expected one of {KINDS}")
        if not self.cache_name:
            object.__setattr__(self, "cache_name", self.name)

    @property
    def is_toy(self) -> bool:
        return self.kind == "toy"

    def split(self, split: str, **options: Any) -> ImageSet:
        """One split of an image set (options: subset=, seed=)."""
        if self.is_toy:
            raise ValueError(f"data set {self.name!r} is a generated 2-D set with no train/test split; "
                             f"image sets: {', '.join(data_names('image'))} or an idx folder")
        return self.make(split=split, **options)


_DATA: NamedRegistry[DataSpec] = NamedRegistry("data set", DataSpec)


def register_data(spec: DataSpec, *, replace: bool = False) -> DataSpec:
    """Add a data set to the registry (replace=True to redefine a name); returns it."""
    return _DATA.register(spec.name, spec, replace=replace)


def unregister_data(name: str) -> None:
    _DATA.unregister(name)


def data_names(kind: str | None = None) -> tuple[str, ...]:
    """Registered names in registration order (kind: only "toy" or only "image" sets)."""
    return _DATA.names(None if kind is None else lambda s: s.kind == kind)


def idx_folder_spec(folder: str | Path) -> DataSpec:
    """A folder of the four MNIST-format idx files as an image set; its FID classifier is
    cached under a key of the folder's absolute path (two folders never share one)."""
    digest = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:12]
    return DataSpec(str(folder), "image", functools.partial(load_idx_images, folder, name="mnist"),
                    cache_name=f"idx-{digest}")


def get_data(name: str) -> DataSpec:
    """The data set called `name`, or a folder of idx files; a clear error otherwise."""
    if name in _DATA:
        return _DATA[name]
    if Path(name).is_dir():
        return idx_folder_spec(name)
    raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(_DATA)} or a folder holding the "
                     "four MNIST-format idx files")


def make_dataset(name: str, **options: Any) -> ToyMixture | SwissRoll | ImageSet:
    """A data set by name, built with its constructor's options: gaussians8, gaussians25,
    swissroll (none), rings (options of rings()), digits (options of load_digits()),
    fashion-mnist (options of load_idx_images()), mnist (root= a folder)."""
    if name == "mnist":  # MNIST has no default folder: the idx reader names what is missing
        return load_idx_images(name="mnist", **options)
    if name not in _DATA:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(_DATA)} or mnist")
    spec = _DATA[name]
    if spec.is_toy and not spec.uses_classes and options:
        raise ValueError(f"{name} takes no options; got {sorted(options)}")
    return spec.make(**options)


for _spec in (
    DataSpec("gaussians8", "toy", gaussians8),
    DataSpec("gaussians25", "toy", gaussians25),
    DataSpec("swissroll", "toy", SwissRoll, conditional=False),
    DataSpec("rings", "toy", rings, uses_classes=True),
    DataSpec("digits", "image", load_digits, feature_epochs=20, feature_batch=32),  # 1437 images: small batches
    DataSpec("fashion-mnist", "image", functools.partial(load_idx_images, name="fashion-mnist")),
):
    register_data(_spec)

"""make_dataset: every lipkit data set by name, with its loader's options."""
from __future__ import annotations

from typing import Any

from .images import IMAGE_NAMES, ImageSet, load_digits, load_idx_images
from .toy import TOY_NAMES, SwissRoll, ToyMixture, gaussians8, gaussians25, rings


def make_dataset(name: str, **options: Any) -> ToyMixture | SwissRoll | ImageSet:
    """A data set by name: gaussians8, gaussians25, swissroll, rings (options of rings()),
    digits (options of load_digits()), fashion-mnist / mnist (options of load_idx_images())."""
    if name in ("gaussians8", "gaussians25", "swissroll"):
        if options:
            raise ValueError(f"{name} takes no options; got {sorted(options)}")
        return {"gaussians8": gaussians8, "gaussians25": gaussians25, "swissroll": SwissRoll}[name]()
    if name == "rings":
        return rings(**options)
    if name == "digits":
        return load_digits(**options)
    if name in ("fashion-mnist", "mnist"):
        return load_idx_images(name=name, **options)
    raise ValueError(f"unknown data set {name!r}; expected one of {TOY_NAMES + IMAGE_NAMES}")

"""Whether a layer's class computes the map lipkit knows for one of its base classes.

lipkit's rules describe the maps of known classes (nn.Linear, nn.Conv2d, ...). A subclass that
keeps its base's forward (a parametrized layer, a renamed Conv2d) computes that map; one that
overrides forward (a LoRA Linear, a conv that pads or rescales on its own) computes another,
so the base's rule must not be applied to it: lk.lipschitz_bound refuses to inherit the rule
(bounds/layer_rules.py), its merges skip the layer (bounds/merges.py), and the constraints
that bound the layer's map refuse it (constraints/api.py)."""
from __future__ import annotations

from typing import Container


def known_base(cls: type, bases: Container[type]) -> type | None:
    """The nearest class in cls's MRO (cls itself first) that is in `bases`; object never counts."""
    return next((c for c in cls.__mro__ if c is not object and c in bases), None)


def overridden_base(cls: type, bases: Container[type]) -> type | None:
    """known_base(cls, bases) when cls (or a class between them) overrides its forward, else None."""
    base = known_base(cls, bases)
    return base if base is not None and base is not cls and cls.forward is not base.forward else None

"""`where` means the same in lk.constrain and in every weight penalty (lipkit/where.py): each
form picks the same layers in both, and the same typos are errors in both."""
from __future__ import annotations

import pytest
import torch.nn as nn

import lipkit as lk
from lipkit.constraints import constraints_of
from lipkit.penalties.layers import select_layers


def model() -> nn.Sequential:
    inner = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    return nn.Sequential(nn.Conv2d(3, 3, 1), inner, nn.Flatten(), nn.Linear(4, 2))


@pytest.mark.parametrize("where,expected", [
    (None, ["0", "1.0", "1.2", "3"]),
    (nn.Linear, ["3"]),
    ((nn.Linear, nn.Conv2d), ["0", "1.0", "1.2", "3"]),
    ("1.*", ["1.0", "1.2"]),
    ("0*", ["0"]),  # the example: a pattern worked in constrain, raised in l2_penalty
    (["3", "1.2"], ["1.2", "3"]),
    (lambda name, m: name.endswith("2"), ["1.2"]),
])
def test_constrain_and_penalties_select_the_same_layers(where, expected) -> None:
    constrained = [name for name, *_ in constraints_of(lk.constrain(model(), "clip", where=where))]
    penalized = [layer.name for layer in select_layers(model(), where)]
    assert constrained == penalized == expected
    assert float(lk.l2_penalty(model(), where=where).detach()) > 0


@pytest.mark.parametrize("where,message", [
    (["0", "9"], r"pattern\(s\) \['9'\]"),  # one pattern matching nothing is a typo
    ("nothing.*", "matched no layer"),
    (nn.Conv3d, "matched no layer"),
    (42, "where=42 is not allowed"),
])
def test_the_same_typos_are_errors_in_both(where, message) -> None:
    with pytest.raises(ValueError, match=message):
        lk.constrain(model(), "clip", where=where)
    with pytest.raises(ValueError, match=message):
        lk.l2_penalty(model(), where=where)

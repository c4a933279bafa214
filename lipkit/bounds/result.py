"""What lipschitz_bound returns: the certified constant and one row per layer (or merged run
of layers), with a text table of them."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LayerRow:
    name: str  # qualified module name (or the function) in the traced graph
    kind: str  # layer type
    input_shape: tuple[int, ...]  # one sample, no batch dim
    bound: float  # certified Lipschitz constant of this layer
    how: str  # method or reason
    reshaped_sigma: float | None  # sigma of the reshaped weight (torch/SN-GAN convention)
    cumulative: float  # certified constant of the network up to and including this layer


@dataclass(frozen=True)
class LipschitzBound:
    upper: float
    layers: list[LayerRow] = field(default_factory=list)
    method: str = "gram"

    def __float__(self) -> float:
        return self.upper

    def table(self) -> str:
        """The per-layer table as aligned text."""
        head = ("layer", "type", "input", "sigma(reshaped)", "bound", "cumulative", "how")
        rows = [head] + [
            (r.name, r.kind, "x".join(map(str, r.input_shape)),
             "-" if r.reshaped_sigma is None else f"{r.reshaped_sigma:.4f}",
             f"{r.bound:.4f}", f"{r.cumulative:.4g}", r.how)
            for r in self.layers
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)

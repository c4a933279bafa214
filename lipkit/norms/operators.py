"""The linear map a layer computes at a given input shape, as forward and adjoint functions.

This is what "the TRUE operator norm" is the norm of: a Conv2d on 12x12 inputs is a
(C_out*H'*W') x (C_in*12*12) matrix, not its reshaped (C_out, C_in*k*k) kernel. Biases are
dropped (they shift, they do not stretch). Every function maps a batch (B, *in_shape).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _ntuple

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
IDENTITY_LIKE = (nn.Flatten, nn.Identity, nn.Unflatten)
SUPPORTED = (nn.Linear, *CONV, *CONV_TRANSPOSE, *BATCHNORM, *AVGPOOL, *IDENTITY_LIKE)

CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass(frozen=True)
class LinearOperator:
    forward: Callable[[Tensor], Tensor]  # (B, *in_shape) -> (B, *out_shape)
    adjoint: Callable[[Tensor], Tensor]  # (B, *out_shape) -> (B, *in_shape)
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    nonnegative: bool = False  # all matrix entries >= 0 (pooling): a Schur bound applies

    @property
    def in_dim(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_dim(self) -> int:
        return math.prod(self.out_shape)


def autograd_adjoint(forward: Callable[[Tensor], Tensor], in_shape, dtype, device):
    """Adjoint of a linear map by reverse mode: A^T y = d<A x, y>/dx (exact for linear A)."""

    def adjoint(y: Tensor) -> Tensor:
        x = torch.zeros((y.shape[0], *in_shape), dtype=dtype, device=device, requires_grad=True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(forward(x), x, y)
        return g

    return adjoint


def conv_output_padding(layer, in_spatial, out_spatial) -> tuple[int, ...] | None:
    """output_padding making conv_transpose land exactly on the conv's input size."""
    if isinstance(layer.padding, str):
        return None
    pads = []
    for n, m, s, p, d, k in zip(
        in_spatial, out_spatial, layer.stride, layer.padding, layer.dilation, layer.kernel_size
    ):
        pads.append(n - ((m - 1) * s - 2 * p + d * (k - 1) + 1))
    return tuple(pads)


def layer_operator(
    layer: nn.Module, input_shape, dtype: torch.dtype = torch.float64, weight: Tensor | None = None
) -> LinearOperator:
    """The layer's linear part for inputs of `input_shape` (no batch dim).

    weight: use this tensor instead of layer.weight (a constraint normalizing a raw weight).
    Raises ValueError when input_shape does not fit the layer.
    """
    in_shape = as_input_shape(input_shape)
    check_input_shape(layer, in_shape)
    return build_operator(layer, in_shape, dtype, weight)


def build_operator(layer: nn.Module, in_shape: tuple[int, ...], dtype: torch.dtype = torch.float64,
                   weight: Tensor | None = None) -> LinearOperator:
    """layer_operator for a shape already checked (as_input_shape + check_input_shape)."""
    device = next((p.device for p in layer.parameters()), torch.device("cpu"))
    if weight is None and hasattr(layer, "weight") and isinstance(layer.weight, Tensor):
        weight = layer.weight
    w = weight.detach().to(dtype) if weight is not None else None
    adjoint = None
    nonneg = False

    if isinstance(layer, nn.Linear):
        forward = lambda x: x @ w.T  # noqa: E731
        adjoint = lambda y: y @ w  # noqa: E731
    elif isinstance(layer, CONV):
        forward = lambda x: layer._conv_forward(x, w, None)  # noqa: E731  (handles padding_mode)
    elif isinstance(layer, CONV_TRANSPOSE):
        nd = len(in_shape) - 1
        fn = CONV_T_FN[nd]
        forward = lambda x: fn(  # noqa: E731
            x, w, None, layer.stride, layer.padding, layer.output_padding, layer.groups,
            layer.dilation,
        )
        # output_padding >= a dim's stride (allowed when the dilation is larger) makes the
        # conv of the output longer than the input: conv_transpose is the adjoint of that conv
        # cropped to its first n outputs, so its adjoint is the conv, cropped.
        crop = (Ellipsis, *(slice(0, n) for n in in_shape[1:]))
        adjoint = lambda y: CONV_FN[nd](  # noqa: E731
            y, w, None, layer.stride, layer.padding, layer.dilation, layer.groups
        )[crop]
    elif isinstance(layer, BATCHNORM):
        scale = batchnorm_scale(layer).to(dtype)
        view = (1, -1) + (1,) * (len(in_shape) - 1)
        forward = adjoint = lambda x: x * scale.view(view)  # noqa: E731
    elif isinstance(layer, AVGPOOL):
        forward, nonneg = layer, True
    elif isinstance(layer, IDENTITY_LIKE):
        forward = lambda x: layer(x)  # noqa: E731
    else:
        raise TypeError(
            f"no linear operator for {type(layer).__name__}; supported: "
            + ", ".join(t.__name__ for t in SUPPORTED)
        )
    try:
        with torch.no_grad():
            probe = forward(torch.zeros((1, *in_shape), dtype=dtype, device=device))
    except RuntimeError as err:
        raise ValueError(f"input_shape {in_shape} does not fit {layer}: {err}") from None
    out_shape = tuple(probe.shape[1:])
    if isinstance(layer, CONV) and layer.padding_mode == "zeros":
        op = conv_output_padding(layer, in_shape[1:], out_shape[1:])
        if op is not None:
            nd = len(in_shape) - 1
            adjoint = lambda y: CONV_T_FN[nd](  # noqa: E731
                y, w, None, layer.stride, layer.padding, op, layer.groups, layer.dilation
            )
    if adjoint is None:
        adjoint = autograd_adjoint(forward, in_shape, dtype, device)
    return LinearOperator(forward, adjoint, in_shape, out_shape, nonneg)


def batchnorm_scale(layer: nn.Module) -> Tensor:
    """gamma / sqrt(running_var + eps), BatchNorm's eval slope per channel, in float64 (float16: 1.2e-4 low)."""
    if layer.training or layer.running_var is None:
        raise ValueError(
            f"{layer} has no fixed linear map: in training mode (or without running stats) "
            "it normalizes by batch statistics. Call model.eval() first."
        )
    gamma = layer.weight if layer.affine else torch.ones_like(layer.running_var)
    return gamma.detach().double() / torch.sqrt(layer.running_var.double() + layer.eps)


def _expected(layer: nn.Module) -> str | None:
    if isinstance(layer, nn.Linear):
        return f"(..., {layer.in_features})"
    if isinstance(layer, (*CONV, *CONV_TRANSPOSE)):
        nd = len(layer.kernel_size)
        return "(" + ", ".join([f"C={layer.in_channels}"] + ["H", "W", "D"][:nd]) + ")"
    if isinstance(layer, BATCHNORM):
        return f"(C={layer.num_features}, ...)"
    return None


def as_input_shape(value, what: str = "input_shape") -> tuple[int, ...]:
    """One sample's shape (no batch dim) as a tuple of ints > 0, or a one-line error naming
    the value: what every public entry point taking an input shape checks first, once."""
    try:
        shape = tuple(operator.index(s) for s in value)
    except TypeError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"{what}={value!r}: expected one sample's shape as positive integers, e.g. (3, 32, 32) "
                         "(no batch dimension)")
    return shape


def check_input_shape(layer: nn.Module, in_shape: tuple[int, ...]) -> None:
    """A clear ValueError when in_shape (no batch dim) cannot feed the layer."""
    ok = all(s > 0 for s in in_shape) and len(in_shape) > 0
    if isinstance(layer, nn.Linear):
        ok = ok and in_shape[-1] == layer.in_features
    elif isinstance(layer, (*CONV, *CONV_TRANSPOSE)):
        ok = ok and len(in_shape) == len(layer.kernel_size) + 1 and in_shape[0] == layer.in_channels
    elif isinstance(layer, BATCHNORM):
        ok = ok and len(in_shape) >= 1 and in_shape[0] == layer.num_features
    if not ok:
        raise ValueError(
            f"input_shape {in_shape} does not fit {layer}: expected {_expected(layer)} "
            "(no batch dimension)"
        )


def avgpool_as_conv(layer: nn.Module, channels: int) -> nn.Module | None:
    """The depthwise conv an average pooling equals, or None where it is not one
    (ceil_mode, a divisor override, or padding excluded from the count)."""
    nd = AVGPOOL.index(type(layer)) + 1 if type(layer) in AVGPOOL else 0
    if not nd or layer.ceil_mode or getattr(layer, "divisor_override", None) is not None:
        return None
    k = _ntuple(nd)(layer.kernel_size)
    s = _ntuple(nd)(layer.stride or layer.kernel_size)
    p = _ntuple(nd)(layer.padding)
    if any(p) and not layer.count_include_pad:
        return None
    conv = CONV[nd - 1](channels, channels, k, s, p, groups=channels, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0 / math.prod(k))
    return conv


@dataclass(frozen=True)
class ConvGeometry:
    """A Conv*/ConvTranspose* layer's hyperparameters without its weight or its input shape.

    The layer's linear map as a function of (x, weight): a constraint normalizing a RAW
    weight applies it at every update without rebuilding closures, re-probing shapes, or
    holding a reference to the layer (plain data: deepcopy, pickling and state_dict stay
    clean). Zero padding uses conv_transpose as the exact adjoint; other paddings and
    "same"/"valid" strings fall back to reverse mode (exact for a linear map).
    """

    transposed: bool
    nd: int
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str
    reversed_padding: tuple[int, ...]  # F.pad order, used for non-zero padding modes
    output_padding: tuple[int, ...]  # ConvTranspose only

    @property
    def axis_pads(self) -> list[tuple[int, int]]:
        """(low, high) padding of each spatial axis in axis order (a conv, not a ConvTranspose);
        torch stores them as reversed_padding, last axis first."""
        rev = self.reversed_padding
        return [(rev[2 * i], rev[2 * i + 1]) for i in range(self.nd)][::-1]

    @classmethod
    def of(cls, layer: nn.Module) -> "ConvGeometry":
        if not isinstance(layer, (*CONV, *CONV_TRANSPOSE)):
            raise TypeError(f"ConvGeometry needs a Conv or ConvTranspose layer, got {type(layer).__name__}")
        transposed = isinstance(layer, CONV_TRANSPOSE)
        padding = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
        return cls(
            transposed=transposed,
            nd=len(layer.kernel_size),
            stride=tuple(layer.stride),
            padding=padding,
            dilation=tuple(layer.dilation),
            groups=int(layer.groups),
            padding_mode=layer.padding_mode,
            reversed_padding=tuple(getattr(layer, "_reversed_padding_repeated_twice", ())),
            output_padding=tuple(layer.output_padding) if transposed else (),
        )

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        """The layer's map without bias: (B, *in_shape) -> (B, *out_shape)."""
        if self.transposed:
            return CONV_T_FN[self.nd](
                x, weight, None, self.stride, self.padding, self.output_padding, self.groups,
                self.dilation,
            )
        if self.padding_mode != "zeros":
            x = F.pad(x, self.reversed_padding, mode=self.padding_mode)
            return CONV_FN[self.nd](x, weight, None, self.stride, 0, self.dilation, self.groups)
        return CONV_FN[self.nd](x, weight, None, self.stride, self.padding, self.dilation, self.groups)

    def output_shape(self, in_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Output shape (no batch dim) for inputs of in_shape, computed on the meta device."""
        x = torch.empty((1, *in_shape), device="meta")
        w = torch.empty(weight_shape, device="meta")
        try:
            return tuple(self.forward(x, w).shape[1:])
        except RuntimeError as err:
            raise ValueError(f"input shape {tuple(in_shape)} does not fit this layer: {err}") from None

    def adjoint(self, y: Tensor, weight: Tensor, in_shape: tuple[int, ...]) -> Tensor:
        """The transpose map: (B, *out_shape) -> (B, *in_shape)."""
        k = weight.shape[2:]
        if self.transposed:
            x = CONV_FN[self.nd](y, weight, None, self.stride, self.padding, self.dilation, self.groups)
            if tuple(x.shape[1:]) == tuple(in_shape):
                return x
        elif self.padding_mode == "zeros" and not isinstance(self.padding, str):
            pads = tuple(
                n - ((m - 1) * s - 2 * p + d * (kk - 1) + 1)
                for n, m, s, p, d, kk in zip(
                    in_shape[1:], y.shape[2:], self.stride, self.padding, self.dilation, k
                )
            )
            return CONV_T_FN[self.nd](
                y, weight, None, self.stride, self.padding, pads, self.groups, self.dilation
            )
        x = torch.zeros((y.shape[0], *in_shape), dtype=y.dtype, device=y.device, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.forward(x, weight.detach()), x, y)
        return grad

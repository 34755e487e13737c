"""The shared base of every fake quantizer, and the straight-through helpers (torch).

Conventions every quantizer in :mod:`golden.quant` follows:

* **Rounding** is round half up, ``floor(v + 1/2)`` (:func:`round_half_up`), the same as
  :func:`golden.arith.quantize_activation` and :func:`golden.arith.requantize`; nearest-level
  projections onto non-uniform sets break ties towards the larger magnitude.
* **Straight-through estimator**: helpers are written as ``value.detach() + (x - x.detach())`` so
  the forward value is *bit exact* (no ``x + (r - x)`` rounding) while the gradient is the
  identity. Clipping is an ordinary ``torch.clamp``, so the input gradient is 1 inside the
  clipping range and 0 outside.
* **Lazy, data-driven initialisation**: the learned scale (step, alpha, interval) is set from
  the first tensor the module sees, in any mode; the persistent buffer ``initialized`` records
  it so a checkpoint restores an initialised quantizer.
* **Per-tensor or per-channel scale**: ``per_channel=True`` needs ``channels`` (the size of
  ``channel_dim``, 0 for weights, 1 for activations) so parameter shapes are known at
  construction and checkpoints load without resizing.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import arith

__all__ = ["round_half_up", "round_ste", "grad_scale", "Quantizer", "FPQuantizer"]


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """``floor(x + 1/2)`` elementwise (ties go up, like the hardware)."""
    return torch.floor(x + 0.5)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half up in the forward pass, identity gradient (straight-through estimator)."""
    return round_half_up(x).detach() + (x - x.detach())


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Return ``x`` unchanged (bit exact) with its gradient multiplied by ``scale`` (LSQ trick)."""
    y = x * scale
    return x.detach() + (y - y.detach())


class Quantizer(nn.Module):
    """Base of the fake quantizers: bit-width, signedness, scale granularity, initialisation.

    Subclasses set :attr:`kind` (the registry name), :attr:`bits_range`, implement
    :meth:`initialize` (data-driven initialisation of the learned scale), :meth:`quantize`
    (the fake-quantized forward) and :meth:`levels` (the normalised level set).

    Parameters
    ----------
    bits : int
        Bit-width of the code words; validated by :meth:`check_bits`, which raises
        :class:`golden.arith.ArithError` (a ``ValueError``) outside :attr:`bits_range`.
    signed : bool
        Whether the levels include negative values (weights) or not (activations).
    per_channel : bool
        One learned scale per channel of ``channel_dim`` instead of one per tensor.
    channels : int, optional
        Size of ``channel_dim``; required when ``per_channel`` is true.
    channel_dim : int
        The channel axis of the quantized tensor (0 for weights, 1 for NCHW/NC activations).

    Attributes
    ----------
    initialized : bool tensor (buffer, persistent)
        True once the learned scale was set from data.
    """

    #: registry name (``golden.quant.registry``)
    kind = "base"
    #: valid bit-widths
    bits_range = range(2, 9)
    #: why :attr:`bits_range` is what it is (used in the error message)
    bits_reason = ""

    def __init__(self, bits: int, *, signed: bool, per_channel: bool = False, channels: int | None = None,
                 channel_dim: int = 0):
        super().__init__()
        self.bits = self.check_bits(bits)
        self.signed = bool(signed)
        self.per_channel = bool(per_channel)
        self.channel_dim = int(channel_dim)
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, (int, np.integer))
                                     or channels < 1):
            raise ValueError(f"{type(self).__name__}: channels must be a positive integer, got {channels!r}")
        if self.per_channel and channels is None:
            raise ValueError(f"{type(self).__name__}: per_channel=True needs channels= (the size of dim "
                             f"{self.channel_dim})")
        self.channels = None if channels is None else int(channels)
        self.register_buffer("initialized", torch.tensor(False))

    @classmethod
    def check_bits(cls, bits) -> int:
        """Return ``int(bits)`` or raise :class:`golden.arith.ArithError` if outside :attr:`bits_range`."""
        r = cls.bits_range
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in r:
            why = f" ({cls.bits_reason})" if cls.bits_reason else ""
            raise arith.ArithError(f"{cls.kind} quantizer: bits must be an integer in {r.start}..{r.stop - 1}"
                                   f"{why}, got {bits!r}")
        return int(bits)

    def extra_repr(self) -> str:
        s = f"bits={self.bits}"
        if self.per_channel:
            s += f", per_channel=True, channels={self.channels}, channel_dim={self.channel_dim}"
        return s

    # --- per-tensor / per-channel helpers -----------------------------------------

    def scale_shape(self) -> tuple:
        """Shape of a learned scale: ``()`` per tensor, ``(channels,)`` per channel."""
        return (self.channels,) if self.per_channel else ()

    def broadcast(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """View a scale of :meth:`scale_shape` so it broadcasts against ``x`` (no-op per tensor)."""
        if not self.per_channel:
            return p
        if x.dim() <= self.channel_dim or x.shape[self.channel_dim] != self.channels:
            raise ValueError(f"{type(self).__name__}: expected {self.channels} channels on dim "
                             f"{self.channel_dim}, got a tensor of shape {tuple(x.shape)}")
        shape = [1] * x.dim()
        shape[self.channel_dim] = self.channels
        return p.reshape(shape)

    def count_per_scale(self, x: torch.Tensor) -> int:
        """Number of elements sharing one scale (``N`` in the LSQ gradient scale)."""
        return x.numel() // self.channels if self.per_channel else x.numel()

    def channel_rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` detached as ``[channels, -1]`` (per channel) for data statistics."""
        self.broadcast(torch.empty(self.scale_shape()), x)   # shape check
        return x.detach().transpose(0, self.channel_dim).reshape(self.channels, -1)

    @staticmethod
    def sanitize(values: torch.Tensor, fallback: float = 1.0) -> torch.Tensor:
        """Replace non-finite or non-positive initial scales by ``fallback``."""
        ok = torch.isfinite(values) & (values > 0)
        return torch.where(ok, values, torch.full_like(values, fallback))

    # --- interface -------------------------------------------------------------------

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:     # pragma: no cover - abstract
        raise NotImplementedError

    def quantize(self, x: torch.Tensor) -> torch.Tensor:   # pragma: no cover - abstract
        raise NotImplementedError

    def levels(self) -> torch.Tensor:                       # pragma: no cover - abstract
        """Normalised levels, ascending, float64."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x`` (initialising the learned scale from ``x`` the first time)."""
        if not bool(self.initialized):
            self.initialize(x)
        return self.quantize(x)


class FPQuantizer(Quantizer):
    """Full precision: the identity (``fp`` in the registries).

    ``bits`` is accepted and ignored (so ``--weight-quant fp --wbits 4`` is not an error); it is
    stored as ``None``. Gradients pass unchanged. There is nothing to learn or initialise.
    """

    kind = "fp"

    def __init__(self, bits=None, *, channels: int | None = None):
        nn.Module.__init__(self)
        self.bits = None
        self.signed = True
        self.per_channel = False
        self.channel_dim = 0
        self.channels = channels
        self.register_buffer("initialized", torch.tensor(True))

    @classmethod
    def check_bits(cls, bits):
        return None

    def extra_repr(self) -> str:
        return "full precision"

    def initialize(self, x: torch.Tensor) -> None:
        pass

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor, return_codes: bool = False):
        if return_codes:
            raise ValueError("a full-precision quantizer has no integer codes")
        return x

    def levels(self) -> torch.Tensor:
        raise ValueError("a full-precision quantizer has no level set")

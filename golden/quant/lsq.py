"""LSQ: learned step size quantization (Esser et al., ICLR 2020), signed and unsigned (torch)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import arith
from .. import levels as L
from .base import Quantizer, grad_scale, round_half_up, round_ste

__all__ = ["LSQQuantizer", "LSQActQuantizer", "LSQWeightQuantizer"]


class LSQQuantizer(Quantizer):
    """LSQ fake quantizer ``x_q = clamp(round(x / s), -Qn, Qp) * s`` with a learned step ``s``.

    Levels
        ``q * s`` for integer ``q`` in ``[-Qn, Qp]``. Unsigned: ``Qn = 0``, ``Qp = 2**bits - 1``
        (``2**bits`` levels). Signed (two's complement): ``Qn = 2**(bits-1)``,
        ``Qp = 2**(bits-1) - 1`` (``2**bits`` levels); ``symmetric=True`` uses ``Qn = Qp``
        (``2**bits - 1`` levels). Normalised levels (:meth:`levels`) are ``q / Qp``.
    Rounding
        Round half up, ``floor(v + 1/2)`` of the clamped ratio ``v = clamp(x / s, -Qn, Qp)``
        (the same value as clamping the rounded ratio, since the bounds are integers).
    Gradients
        Input: straight-through, 1 where ``-Qn <= x / s <= Qp``, 0 outside. Step (LSQ Eq. 3):
        ``round(x/s) - x/s`` inside, ``-Qn`` below, ``Qp`` above, multiplied by the gradient
        scale ``g = 1 / sqrt(N * Qp)`` where ``N`` is the number of elements sharing the step
        (the whole tensor, batch included, per tensor; the elements of one channel per channel).
        (Clamping *before* rounding is what makes ``Qp < x/s < Qp + 1/2`` count as outside.)
    Initialisation
        ``s = 2 * mean|x| / sqrt(Qp)`` (LSQ paper, Sec. 2.1) from the first tensor seen, per
        tensor or per channel; 1.0 where that statistic is zero or not finite.

    Parameters
    ----------
    bits : int
        2..8.
    signed : bool
        Signed (weights) or unsigned (activations after ReLU).
    symmetric : bool
        Signed only: drop the most negative code (``Qn = Qp``).
    per_channel, channels, channel_dim
        See :class:`golden.quant.base.Quantizer`.

    Attributes
    ----------
    step : Parameter
        The learned step, shape ``()`` or ``(channels,)``.
    qmin, qmax : int
        ``-Qn`` and ``Qp``.
    """

    kind = "lsq"
    bits_range = range(2, 9)

    def __init__(self, bits: int, *, signed: bool = False, symmetric: bool = False, per_channel: bool = False,
                 channels: int | None = None, channel_dim: int = 0):
        super().__init__(bits, signed=signed, per_channel=per_channel, channels=channels, channel_dim=channel_dim)
        if symmetric and not signed:
            raise ValueError("LSQ: symmetric=True only applies to a signed quantizer")
        self.symmetric = bool(symmetric)
        if self.signed:
            qp = 2 ** (self.bits - 1) - 1
            self.qmin = -qp if self.symmetric else -(qp + 1)
        else:
            qp = 2 ** self.bits - 1
            self.qmin = 0
        self.qmax = qp
        self.step = nn.Parameter(torch.ones(self.scale_shape()))

    def grad_scale_factor(self, x: torch.Tensor) -> float:
        """LSQ gradient scale ``1 / sqrt(N * Qp)`` for input ``x``."""
        return 1.0 / math.sqrt(self.count_per_scale(x) * self.qmax)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set ``s = 2 * mean|x| / sqrt(Qp)`` from ``x`` (per tensor or per channel) and mark initialised."""
        if self.per_channel:
            s = 2.0 * self.channel_rows(x).abs().mean(dim=1) / math.sqrt(self.qmax)
            self.step.copy_(self.sanitize(s.to(self.step.dtype)))
        else:
            s = 2.0 * x.detach().abs().mean().item() / math.sqrt(self.qmax)
            if not (math.isfinite(s) and s > 0):
                s = 1.0
            self.step.fill_(s)
        self.initialized.fill_(True)

    def effective_step(self, x: torch.Tensor) -> torch.Tensor:
        """The step used on ``x`` in the forward pass (gradient-scaled, broadcastable to ``x``)."""
        return self.broadcast(grad_scale(self.step, self.grad_scale_factor(x)), x)

    def quantize(self, x: torch.Tensor, return_codes: bool = False):
        s = self.effective_step(x)
        q = round_ste(torch.clamp(x / s, self.qmin, self.qmax))
        xq = q * s
        if return_codes:
            return xq, q.detach().to(torch.int64)
        return xq

    def forward(self, x: torch.Tensor, return_codes: bool = False):
        """Fake-quantize ``x`` (any shape, float). With ``return_codes`` also return the int64 codes ``q``."""
        if not bool(self.initialized):
            self.initialize(x)
        return self.quantize(x, return_codes=return_codes)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes ``clamp(floor(x / s + 1/2), -Qn, Qp)`` as int64 (same arithmetic as forward)."""
        if not bool(self.initialized):
            raise RuntimeError(f"{type(self).__name__} has not seen any data yet; its step is not initialised")
        s = self.broadcast(self.step, x)
        return torch.clamp(round_half_up(x / s), self.qmin, self.qmax).to(torch.int64)

    def levels(self) -> torch.Tensor:
        """Normalised levels ``q / Qp``, ascending, float64."""
        return torch.arange(self.qmin, self.qmax + 1, dtype=torch.float64) / self.qmax


class LSQActQuantizer(LSQQuantizer):
    """Unsigned LSQ activation quantizer: ``x_q = clamp(round(x / s), 0, Qp) * s``, ``Qp = 2**bits - 1``.

    The step ``s`` is learned; its gradient is scaled by ``1 / sqrt(N * Qp)`` where ``N`` is the
    number of elements of the batch being quantized. ``s`` is initialised from the first batch
    the module sees (in any mode) as ``2 * mean|x| / sqrt(Qp)`` (1.0 if that batch is all zero).
    Rounding is half up. ``bits`` is validated by :func:`golden.arith.check_abits`
    (:class:`golden.arith.ArithError`, a ``ValueError``). See :class:`LSQQuantizer` for levels and
    gradients. This is the quantizer export and the integer executor rely on: its forward value
    is the contract (``x_q == codes(x) * step`` exactly).

    Parameters
    ----------
    bits : int
        Activation bits, 2..8.
    per_channel, channels, channel_dim
        Optional per-channel step (default per tensor; ``channel_dim`` 1 for NCHW / NC).
        ``channels`` alone (without ``per_channel``) is accepted and ignored, so the registry can
        pass it to every activation quantizer.
    """

    kind = "lsq"

    def __init__(self, bits: int, *, per_channel: bool = False, channels: int | None = None, channel_dim: int = 1):
        super().__init__(bits, signed=False, per_channel=per_channel, channels=channels, channel_dim=channel_dim)

    @classmethod
    def check_bits(cls, bits) -> int:
        return arith.check_abits(bits)


class LSQWeightQuantizer(LSQQuantizer):
    """Signed LSQ weight quantizer (``uniform`` in the registry); see :class:`LSQQuantizer`.

    Two's complement by default, ``Qn = 2**(bits-1)``, ``Qp = 2**(bits-1) - 1`` as in the LSQ
    paper; normalised levels :func:`golden.levels.uniform_levels`. Step initialised to
    ``2 * mean|w| / sqrt(Qp)``, gradient scale ``1 / sqrt(N_W * Qp)`` with ``N_W`` the number of
    weights (per channel: the weights of one output channel).
    """

    kind = "uniform"
    bits_range = L.BITS_RANGES["uniform"]
    bits_reason = "a signed quantizer needs a sign bit and at least one magnitude bit"

    def __init__(self, bits: int, *, symmetric: bool = False, per_channel: bool = False,
                 channels: int | None = None, channel_dim: int = 0):
        super().__init__(bits, signed=True, symmetric=symmetric, per_channel=per_channel, channels=channels,
                         channel_dim=channel_dim)

    def levels(self) -> torch.Tensor:
        return torch.as_tensor(L.uniform_levels(self.bits, symmetric=self.symmetric), dtype=torch.float64)

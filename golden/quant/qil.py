"""QIL: quantization-interval learning (Jung et al., CVPR 2019, arXiv:1808.05779) (torch).

A QIL quantizer is a *transformer* ``T`` that maps the learned interval ``[c - d, c + d]`` (centre
``c``, half-width ``d``) onto ``[0, 1]`` -- values below the interval are pruned to 0, values above
are clipped to 1 -- followed by a *discretiser* ``D(t) = round(t * q_D) / q_D``:

* weights, ``q_D = 2**(bits-1) - 1``:
  ``T_W(w) = sign(w) * (alpha_W |w| + beta_W)**gamma`` inside the interval, with
  ``alpha_W = 0.5 / d``, ``beta_W = -0.5 c / d + 0.5`` and a learned exponent ``gamma``;
  0 for ``|w| < c - d``, ``sign(w)`` for ``|w| > c + d``. Levels ``q / q_D``, ``q`` in
  ``[-q_D, q_D]`` (``2**bits - 1`` levels in [-1, 1]).
* activations, ``q_D = 2**bits - 1``: ``T_X(x) = alpha_X x + beta_X`` inside (same alpha, beta,
  no gamma), 0 below, 1 above. Levels ``q / q_D``, ``q`` in ``[0, q_D]``.

The output is the discretised value in the normalised range ([-1, 1] or [0, 1]), as in the paper:
QIL does not multiply back by an interval scale, so the layer after it (batch norm, or the next
learned quantizer) absorbs the scale.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import Quantizer, round_half_up, round_ste

__all__ = ["QILQuantizer", "QILWeightQuantizer", "QILActQuantizer"]

_D_MIN = 1e-8        # floor of the half-width d (keeps alpha = 0.5 / d finite)
_GAMMA_MIN = 1e-2    # floor of gamma (keeps the weight transformer monotone and finite)
_U_MIN = 1e-12       # pow() is evaluated on max(u, _U_MIN) so its gradient stays finite at u = 0


class QILQuantizer(Quantizer):
    """Shared part of the QIL weight and activation quantizers (per-tensor interval).

    Rounding
        ``D(t) = floor(t * q_D + 1/2) / q_D`` (round half up, like the rest of the library).
    Gradients
        Straight-through through the discretiser; through the transformer by autograd, i.e. the
        paper's derivatives: w.r.t. the input ``alpha * gamma * u**(gamma-1)`` inside the
        interval and 0 outside; w.r.t. ``c``, ``d`` (and ``gamma``) inside the interval only
        (``T`` is constant outside). ``d`` is floored at 1e-8 and ``gamma`` at 1e-2 in the
        forward pass.
    Initialisation
        From the first tensor: ``u = min(max|x|, 2 * mean|x| * sqrt(q_D))`` (the clip point LSQ's
        initial step would give, ``Q_P * s_0``, but never beyond the data) and ``c = d = u / 2``, so
        the interval starts as ``[0, u]``: nothing pruned, and the quantizer starts as a uniform
        one with step ``u / q_D``. ``gamma = 1``.

    Attributes
    ----------
    c, d : Parameter
        Centre and half-width of the interval (scalars).
    qd : int
        ``q_D``, the number of positive levels.
    """

    kind = "qil"

    def __init__(self, bits: int, *, signed: bool):
        super().__init__(bits, signed=signed)
        self.qd = 2 ** (self.bits - 1) - 1 if self.signed else 2 ** self.bits - 1
        self.c = nn.Parameter(torch.tensor(0.5))
        self.d = nn.Parameter(torch.tensor(0.5))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """``c = d = u / 2`` with ``u = min(max|x|, 2 * mean|x| * sqrt(q_D))``; mark initialised."""
        a = x.detach().abs()
        u = min(a.max().item(), 2.0 * a.mean().item() * math.sqrt(self.qd)) if x.numel() else 1.0
        if not (math.isfinite(u) and u > 0):
            u = 1.0
        self.c.fill_(u / 2.0)
        self.d.fill_(u / 2.0)
        self.initialized.fill_(True)

    def interval(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c, d)`` as used in the forward pass (``d`` floored)."""
        return self.c, self.d.clamp(min=_D_MIN)

    def unit(self, a: torch.Tensor) -> torch.Tensor:
        """``clamp(alpha * a + beta, 0, 1)`` = ``clamp((a - (c - d)) / (2 d), 0, 1)``."""
        c, d = self.interval()
        return torch.clamp((0.5 / d) * a + (0.5 - 0.5 * c / d), 0.0, 1.0)

    def transform(self, x: torch.Tensor) -> torch.Tensor:     # pragma: no cover - abstract
        raise NotImplementedError

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return round_ste(self.transform(x) * self.qd) / self.qd

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes ``q`` (int64) with ``forward(x) == q / q_D``."""
        if not bool(self.initialized):
            raise RuntimeError(f"{type(self).__name__} has not seen any data yet; its interval is not initialised")
        return round_half_up(self.transform(x) * self.qd).to(torch.int64)

    def levels(self) -> torch.Tensor:
        lo = -self.qd if self.signed else 0
        return torch.arange(lo, self.qd + 1, dtype=torch.float64) / self.qd


class QILWeightQuantizer(QILQuantizer):
    """QIL weights (``qil`` in the weight registry): transformer with learned ``gamma``, then discretiser.

    See the module docstring and :class:`QILQuantizer`. Bits 2..8 (``q_D = 2**(bits-1) - 1``
    needs at least one magnitude level). Output in ``[-1, 1]``.

    Attributes
    ----------
    gamma : Parameter
        Exponent of the weight transformer, initialised to 1 (linear).
    """

    bits_reason = "q_D = 2**(bits-1) - 1 must be at least 1"

    def __init__(self, bits: int):
        super().__init__(bits, signed=True)
        self.gamma = nn.Parameter(torch.tensor(1.0))

    def transform(self, w: torch.Tensor) -> torch.Tensor:
        u = self.unit(w.abs())
        gamma = self.gamma.clamp(min=_GAMMA_MIN)
        t = torch.where(u > 0, u.clamp(min=_U_MIN) ** gamma, torch.zeros_like(u))
        return torch.sign(w) * t


class QILActQuantizer(QILQuantizer):
    """QIL activations (``qil`` in the activation registry): linear transformer, then discretiser.

    See the module docstring and :class:`QILQuantizer`. Bits 2..8, ``q_D = 2**bits - 1``; output in
    ``[0, 1]``. ``channels`` is accepted and ignored (the interval is per tensor).
    """

    def __init__(self, bits: int, *, channels: int | None = None):
        super().__init__(bits, signed=False)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.unit(x)

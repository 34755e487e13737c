"""Fake quantizers for quantization-aware training (torch).

* :class:`LSQActQuantizer` -- unsigned LSQ activations with a learned step.
* :class:`POSTWeightQuantizer` -- POST weights ``0`` or ``+-alpha*sqrt(2)**-k`` with a learned
  ``alpha``; the level choice is exactly :func:`golden.arith.encode_post`.

Rounding is *round half up* (``floor(v + 1/2)``) everywhere, the same as
:func:`golden.arith.quantize_activation` and :func:`golden.arith.requantize`, so the codes the
float model produces are the codes the integer executor reproduces. The straight-through
helpers are written as ``value.detach() + (x - x.detach())`` so the forward value is *bit
exact* (no ``x + (r - x)`` rounding), which export relies on.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import arith

__all__ = ["round_half_up", "round_ste", "grad_scale", "LSQActQuantizer", "POSTWeightQuantizer"]


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


class LSQActQuantizer(nn.Module):
    """Unsigned LSQ activation quantizer: ``x_q = clamp(round(x / s), 0, Qp) * s``, ``Qp = 2**bits - 1``.

    The step ``s`` is learned; its gradient is scaled by ``1 / sqrt(N * Qp)`` where ``N`` is the
    number of elements of the batch being quantized. ``s`` is initialised from the first batch
    the module sees (in any mode) as ``2 * mean|x| / sqrt(Qp)`` (1.0 if that batch is all zero).
    Rounding is half up. ``bits`` is validated by :func:`golden.arith.check_abits`
    (:class:`golden.arith.ArithError`, a ``ValueError``).
    """

    def __init__(self, bits: int):
        super().__init__()
        self.bits = arith.check_abits(bits)
        self.qmax = 2 ** self.bits - 1
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def extra_repr(self) -> str:
        return f"bits={self.bits}"

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set ``s = 2 * mean|x| / sqrt(Qp)`` from ``x`` and mark the quantizer initialised."""
        s = 2.0 * x.detach().abs().mean().item() / math.sqrt(self.qmax)
        if not (math.isfinite(s) and s > 0):
            s = 1.0
        self.step.fill_(s)
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor, return_codes: bool = False):
        """Fake-quantize ``x`` (any shape, float). With ``return_codes`` also return the int64 codes."""
        if not bool(self.initialized):
            self.initialize(x)
        s = grad_scale(self.step, 1.0 / math.sqrt(x.numel() * self.qmax))
        q = torch.clamp(round_ste(x / s), 0, self.qmax)
        xq = q * s
        if return_codes:
            return xq, q.detach().to(torch.int64)
        return xq

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes ``clamp(floor(x / s + 1/2), 0, Qp)`` as int64 (same arithmetic as forward)."""
        if not bool(self.initialized):
            raise RuntimeError("LSQActQuantizer has not seen any data yet; its step is not initialised")
        return torch.clamp(round_half_up(x / self.step), 0, self.qmax).to(torch.int64)


class POSTWeightQuantizer(nn.Module):
    """POST weight quantizer: ``w_q = alpha * Q(clamp(w / alpha, -1, 1))``.

    ``Q`` picks the nearest level of ``{0} U {+-sqrt(2)**-k : k = 0..kmax}`` exactly as
    :func:`golden.arith.encode_post` does (ties to the larger magnitude, values below half the
    smallest level become 0); the comparison runs in float64 on the float32 ratio, like
    ``encode_post(ratio.double())``, so :meth:`codes` reproduces the forward levels exactly.

    Gradients: straight-through for ``w`` (1 inside ``[-alpha, alpha]``, 0 outside); LSQ-style
    for ``alpha`` (``Q(v) - v`` inside, ``sign(w)`` outside) scaled by ``1 / sqrt(N * Qp)`` with
    ``N`` the number of weights and ``Qp = kmax + 1`` the number of positive levels.

    ``alpha`` is initialised to ``max|w|`` (1.0 for an all-zero tensor) the first time the
    quantizer sees its weights. ``bits`` is validated by :func:`golden.arith.check_wbits`.
    """

    def __init__(self, bits: int):
        super().__init__()
        self.bits = arith.check_wbits(bits)
        self.kmax = arith.post_max_exponent(self.bits)
        self.qp = self.kmax + 1
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))
        levels = torch.as_tensor(arith.post_magnitudes(self.bits), dtype=torch.float64)
        levels = torch.cat([levels, torch.zeros(1, dtype=torch.float64)])   # descending, zero last
        mids_ascending = torch.flip((levels[:-1] + levels[1:]) / 2.0, dims=[0])
        self.register_buffer("_levels", levels, persistent=False)
        self.register_buffer("_mids_ascending", mids_ascending, persistent=False)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"

    def levels(self) -> torch.Tensor:
        """All normalised levels (alpha = 1), ascending, float64: ``2 * (kmax + 1) + 1`` values."""
        pos = self._levels[:-1]
        return torch.sort(torch.cat([-pos, self._levels[-1:], pos])).values

    def quantize_normalised(self, v: torch.Tensor) -> torch.Tensor:
        """Nearest POST level of each normalised weight (no gradient), same dtype as ``v``."""
        a = v.detach().to(torch.float64).abs().clamp(0.0, 1.0)
        n_mids = self._mids_ascending.numel()
        # number of midpoints strictly greater than a == index of the nearest descending level
        idx = n_mids - torch.searchsorted(self._mids_ascending, a, right=True)
        mag = self._levels[idx]
        return torch.where(v.detach() < 0, -mag, mag).to(v.dtype)

    @torch.no_grad()
    def initialize(self, w: torch.Tensor) -> None:
        """Set ``alpha = max|w|`` and mark the quantizer initialised."""
        a = w.detach().abs().max().item()
        self.alpha.fill_(a if (math.isfinite(a) and a > 0) else 1.0)
        self.initialized.fill_(True)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Fake-quantized weights, same shape and dtype as ``w``."""
        if not bool(self.initialized):
            self.initialize(w)
        alpha = grad_scale(self.alpha, 1.0 / math.sqrt(w.numel() * self.qp))
        v = torch.clamp(w / alpha, -1.0, 1.0)
        vq = self.quantize_normalised(v) + (v - v.detach())
        return vq * alpha

    @torch.no_grad()
    def normalised(self, w: torch.Tensor) -> torch.Tensor:
        """``w / alpha`` computed exactly as in :meth:`forward` (float32)."""
        if not bool(self.initialized):
            raise RuntimeError("POSTWeightQuantizer has not seen its weights yet; alpha is not initialised")
        return w.detach() / self.alpha.detach()

    @torch.no_grad()
    def codes(self, w: torch.Tensor):
        """POST codes ``arith.encode_post(w / alpha, bits)`` as a NumPy int64 array, shape of ``w``.

        Raises :class:`golden.arith.ArithError` if ``w / alpha`` contains NaN or inf.
        """
        return arith.encode_post(self.normalised(w).to(torch.float64).cpu().numpy(), self.bits)

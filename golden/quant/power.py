"""Sign-magnitude weight quantizers on a fixed normalised level set with a learned alpha (torch).

* :class:`POTWeightQuantizer` -- ``alpha * {0, +-2**-k}``;
* :class:`POSTWeightQuantizer` -- ``alpha * {0, +-sqrt(2)**-k}`` (the accelerator's format; the
  level choice is exactly :func:`golden.arith.encode_post`);
* :class:`APoTWeightQuantizer` -- additive powers of two (Li et al., ICLR 2020) with the
  authors' weight normalisation.

The level sets come from :mod:`golden.levels`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import arith
from .. import levels as L
from .base import Quantizer, grad_scale

__all__ = ["SignMagnitudeWeightQuantizer", "POTWeightQuantizer", "POSTWeightQuantizer", "APoTWeightQuantizer"]


class SignMagnitudeWeightQuantizer(Quantizer):
    """``w_q = alpha * Q(clamp(w / alpha, -1, 1))`` on a symmetric normalised level set.

    Levels
        ``alpha * {0} U {+-m : m in M}``, ``M`` = :func:`golden.levels.magnitudes` of
        :attr:`kind` at ``bits`` (``len(M) = 2**(bits-1) - 1``, so ``2**bits - 1`` levels; code
        words are sign-magnitude, :func:`golden.levels.code_values`).
    Rounding
        ``Q`` picks the nearest level: ties go to the larger magnitude and values below half the
        smallest magnitude become 0. The comparison runs in float64 on the (float32) ratio
        ``w / alpha``, like :func:`golden.levels.encode_magnitude`, so :meth:`codes` reproduces
        the forward levels exactly.
    Gradients
        Weights: straight-through, 1 inside ``[-alpha, alpha]``, 0 outside. Alpha (LSQ-style):
        ``Q(v) - v`` inside, ``sign(w)`` outside, scaled by ``1 / sqrt(N * Qp)`` with ``N`` the
        number of weights sharing alpha and ``Qp = 2**(bits-1) - 1`` the number of positive levels.
    Initialisation
        ``alpha = max|w|`` (per tensor or per channel; 1.0 for an all-zero tensor) the first time
        the quantizer sees its weights.

    Attributes
    ----------
    alpha : Parameter
        Learned clipping scale, shape ``()`` or ``(channels,)``.
    qp : int
        Number of positive levels.
    """

    kind = "sign-magnitude"

    def __init__(self, bits: int, *, per_channel: bool = False, channels: int | None = None, channel_dim: int = 0):
        super().__init__(bits, signed=True, per_channel=per_channel, channels=channels, channel_dim=channel_dim)
        mags = self.magnitudes()
        self.qp = len(mags)
        self.alpha = nn.Parameter(torch.ones(self.scale_shape()))
        levels = torch.as_tensor(mags, dtype=torch.float64)
        levels = torch.cat([levels, torch.zeros(1, dtype=torch.float64)])   # descending, zero last
        mids_ascending = torch.flip((levels[:-1] + levels[1:]) / 2.0, dims=[0])
        self.register_buffer("_levels", levels, persistent=False)
        self.register_buffer("_mids_ascending", mids_ascending, persistent=False)

    def magnitudes(self):
        """Non-zero normalised magnitudes, descending (NumPy float64)."""
        return L.magnitudes(self.kind, self.bits)

    @classmethod
    def check_bits(cls, bits) -> int:
        return L.check_bits(cls.kind, bits)

    def levels(self) -> torch.Tensor:
        """All normalised levels (alpha = 1), ascending, float64: ``2 * Qp + 1`` values."""
        pos = self._levels[:-1]
        return torch.sort(torch.cat([-pos, self._levels[-1:], pos])).values

    def quantize_normalised(self, v: torch.Tensor) -> torch.Tensor:
        """Nearest level of each normalised weight (no gradient), same dtype as ``v``."""
        a = v.detach().to(torch.float64).abs().clamp(0.0, 1.0)
        n_mids = self._mids_ascending.numel()
        # number of midpoints strictly greater than a == index of the nearest descending level
        idx = n_mids - torch.searchsorted(self._mids_ascending, a, right=True)
        mag = self._levels[idx]
        return torch.where(v.detach() < 0, -mag, mag).to(v.dtype)

    def prepare(self, w: torch.Tensor) -> torch.Tensor:
        """Transform applied to ``w`` before quantization (identity; APoT normalises)."""
        return w

    @torch.no_grad()
    def initialize(self, w: torch.Tensor) -> None:
        """Set ``alpha = max|w|`` and mark the quantizer initialised."""
        w = self.prepare(w)
        if self.per_channel:
            a = self.channel_rows(w).abs().amax(dim=1)
            self.alpha.copy_(self.sanitize(a.to(self.alpha.dtype)))
        else:
            a = w.detach().abs().max().item()
            self.alpha.fill_(a if (math.isfinite(a) and a > 0) else 1.0)
        self.initialized.fill_(True)

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        w = self.prepare(w)
        alpha = self.broadcast(grad_scale(self.alpha, 1.0 / math.sqrt(self.count_per_scale(w) * self.qp)), w)
        v = torch.clamp(w / alpha, -1.0, 1.0)
        vq = self.quantize_normalised(v) + (v - v.detach())
        return vq * alpha

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Fake-quantized weights, same shape and dtype as ``w``."""
        if not bool(self.initialized):
            self.initialize(w)
        return self.quantize(w)

    @torch.no_grad()
    def normalised(self, w: torch.Tensor) -> torch.Tensor:
        """``w / alpha`` (after :meth:`prepare`) computed exactly as in :meth:`forward` (float32)."""
        if not bool(self.initialized):
            raise RuntimeError(f"{type(self).__name__} has not seen its weights yet; alpha is not initialised")
        w = self.prepare(w.detach())
        return w / self.broadcast(self.alpha.detach(), w)

    @torch.no_grad()
    def codes(self, w: torch.Tensor):
        """Sign-magnitude code words of ``w`` as a NumPy int64 array (:func:`golden.levels.encode_magnitude`).

        Raises :class:`golden.arith.ArithError` if ``w / alpha`` contains NaN or inf.
        """
        v = self.normalised(w).to(torch.float64).cpu().numpy()
        return L.encode_magnitude(v, self.magnitudes(), self.bits)


class POTWeightQuantizer(SignMagnitudeWeightQuantizer):
    """Power-of-two weights: ``alpha * {0, +-2**-k : k = 0..2**(bits-1) - 2}`` (``pot``), bits 2..8.

    Same code assignment, rounding, gradients and initialisation as :class:`POSTWeightQuantizer`
    with base 2 instead of ``sqrt(2)``; see :class:`SignMagnitudeWeightQuantizer`. ``kmax`` is the
    largest exponent.
    """

    kind = "pot"

    def __init__(self, bits: int, *, per_channel: bool = False, channels: int | None = None, channel_dim: int = 0):
        super().__init__(bits, per_channel=per_channel, channels=channels, channel_dim=channel_dim)
        self.kmax = self.qp - 1


class POSTWeightQuantizer(SignMagnitudeWeightQuantizer):
    """POST weight quantizer: ``w_q = alpha * Q(clamp(w / alpha, -1, 1))`` (``post``), bits 2..8.

    ``Q`` picks the nearest level of ``{0} U {+-sqrt(2)**-k : k = 0..kmax}``,
    ``kmax = 2**(bits-1) - 2``, exactly as :func:`golden.arith.encode_post` does (ties to the
    larger magnitude, values below half the smallest level become 0); the comparison runs in
    float64 on the float32 ratio, like ``encode_post(ratio.double())``, so :meth:`codes`
    reproduces the forward levels exactly.

    Gradients: straight-through for ``w`` (1 inside ``[-alpha, alpha]``, 0 outside); LSQ-style
    for ``alpha`` (``Q(v) - v`` inside, ``sign(w)`` outside) scaled by ``1 / sqrt(N * Qp)`` with
    ``N`` the number of weights and ``Qp = kmax + 1`` the number of positive levels.

    ``alpha`` is initialised to ``max|w|`` (1.0 for an all-zero tensor) the first time the
    quantizer sees its weights. ``bits`` is validated by :func:`golden.arith.check_wbits`.
    Export and the integer executor depend on this forward value (see ``docs/export.md``).
    """

    kind = "post"

    def __init__(self, bits: int, *, per_channel: bool = False, channels: int | None = None, channel_dim: int = 0):
        super().__init__(bits, per_channel=per_channel, channels=channels, channel_dim=channel_dim)
        self.kmax = arith.post_max_exponent(self.bits)
        assert self.qp == self.kmax + 1

    @classmethod
    def check_bits(cls, bits) -> int:
        return arith.check_wbits(bits)

    @torch.no_grad()
    def codes(self, w: torch.Tensor):
        """POST codes ``arith.encode_post(w / alpha, bits)`` as a NumPy int64 array, shape of ``w``.

        Raises :class:`golden.arith.ArithError` if ``w / alpha`` contains NaN or inf.
        """
        return arith.encode_post(self.normalised(w).to(torch.float64).cpu().numpy(), self.bits)


class APoTWeightQuantizer(SignMagnitudeWeightQuantizer):
    """Additive powers-of-two weights (Li, Dong & Wang, ICLR 2020) (``apot``), bits 2..7.

    Levels
        ``alpha * {0} U {+-m}`` with the magnitudes of the authors' ``build_power_value(bits-1)``
        (:func:`golden.levels.apot_magnitudes`), ``2**bits - 1`` levels; 2 bits is ternary
        ``{-1, 0, 1}`` as in their code. 8 bits raises :class:`golden.arith.ArithError`
        (their ``build_power_value`` stops at ``B = 6``).
    Weight normalisation
        With ``normalize=True`` (default, as the authors' code) the quantizer sees
        ``(w - mean(w)) / std(w)`` (per tensor, unbiased std, gradient flowing through mean and
        std as in their ImageNet code), so the output is in units of the normalised weights --
        meant to be followed by batch norm. ``normalize=False`` quantizes ``w`` itself.
    Rounding, gradients
        As :class:`SignMagnitudeWeightQuantizer` (nearest level, ties to the larger magnitude;
        clipped STE; alpha gradient ``Q(v) - v`` / ``sign`` scaled by ``1 / sqrt(N * Qp)``).
        The authors' 2-bit path does not clip the weight gradient and their default applies no
        gradient scale; we keep one rule for every bit-width (``docs/quantizers.md``).
    Initialisation
        ``alpha = 3.0`` with normalisation (the authors' ``weight_alpha`` init: clip at 3 std),
        ``max|w|`` without.
    """

    kind = "apot"

    def __init__(self, bits: int, *, normalize: bool = True, per_channel: bool = False,
                 channels: int | None = None, channel_dim: int = 0):
        super().__init__(bits, per_channel=per_channel, channels=channels, channel_dim=channel_dim)
        self.normalize = bool(normalize)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", normalize={self.normalize}"

    def prepare(self, w: torch.Tensor) -> torch.Tensor:
        if not self.normalize:
            return w
        std = w.std() if w.numel() > 1 else torch.ones((), dtype=w.dtype)
        return (w - w.mean()) / std.clamp(min=1e-12)

    @torch.no_grad()
    def initialize(self, w: torch.Tensor) -> None:
        if not self.normalize:
            return super().initialize(w)
        self.alpha.fill_(3.0)
        self.initialized.fill_(True)

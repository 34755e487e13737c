"""ASQ: adaptive step size quantization of activations (the 000_* seed paper, Sec. 3.2) (torch).

ASQ is unsigned LSQ whose step is rescaled per input sample by a small *adapter*:
``beta = adapter(x)`` (Eq. 4), ``s' = beta * s`` (Eq. 5), ``x_q = clamp(round(x / s'), 0, Qp) * s'``
(Eq. 6). The adapter is global average pooling of the activation being quantized followed by
``Linear(C, C/r) -> ReLU -> Linear(C/r, 1)`` (two layers, ``r = 16``) or ``Linear(C, 1)`` (one
layer), then a positive output function.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import arith
from .base import grad_scale, round_half_up
from .lsq import LSQActQuantizer

__all__ = ["ASQAdapter", "ASQActQuantizer", "ADAPTER_FACTORS", "snap_to_z_grid"]


def snap_to_z_grid(z: torch.Tensor) -> torch.Tensor:
    """``clamp(round_half_up(z * 2**F) / 2**F, -L, L - 2**-F)`` with ``F = arith.ASQ_Z_FRAC``,
    ``L = arith.ASQ_Z_LIMIT``: exact forward value, straight-through gradient inside the range."""
    step = 2.0 ** -arith.ASQ_Z_FRAC
    zc = torch.clamp(z, -float(arith.ASQ_Z_LIMIT), arith.ASQ_Z_LIMIT - step)
    return torch.clamp(round_half_up(zc.detach() / step) * step, -float(arith.ASQ_Z_LIMIT),
                       arith.ASQ_Z_LIMIT - step) + (zc - zc.detach())

#: Output functions of the adapter: name -> (function of the last layer's output z, its bias at init).
ADAPTER_FACTORS = {
    "sigmoid": (lambda z: 2.0 * torch.sigmoid(z), 0.0),    # (0, 2), 1 at z = 0, slope 1/2
    "exp": (torch.exp, 0.0),                               # (0, inf), 1 at z = 0, slope 1
    "relu": (lambda z: torch.relu(z).clamp(min=1e-8), 1.0),  # SENGEL13/ASQ-POST's choice, 1 at z = 1
}


class ASQAdapter(nn.Module):
    """The ASQ adapter: ``x -> GAP -> [Linear(C, H) -> ReLU ->] Linear(., 1) -> factor(z)``, one value per sample.

    Parameters
    ----------
    channels : int
        ``C``, the channel count of the activation (dim 1 of an NC, NCL or NCHW tensor).
    reduction : int
        ``r``; the hidden width is ``H = max(1, C // r)`` (default 16).
    layers : int
        2 (default) or 1 (``Linear(C, 1)`` directly).
    factor : str
        Positive output function, a key of :data:`ADAPTER_FACTORS`: ``"sigmoid"`` (default,
        ``2 * sigmoid(z)``, bounded in (0, 2)), ``"exp"`` or ``"relu"`` (``max(z, 1e-8)``).
    z_grid : bool
        Round ``z`` to the integer hardware's grid before the factor function (default True):
        ``2**-ASQ_Z_FRAC`` steps, clipped to ``[-ASQ_Z_LIMIT, ASQ_Z_LIMIT)`` (:mod:`golden.arith`),
        straight-through gradient inside that range, zero outside. The factor is then one of the
        values of the hardware's table, so the float model and the integer executor agree.

    Initialisation
        The last layer's weight is zero and its bias is the value where the factor is exactly 1
        (0, or 1 for ``relu``), so ``beta == 1`` for every input at the start and ASQ starts as
        LSQ bit for bit. The first layer keeps PyTorch's default init. With the last weight at
        zero only the last layer receives gradient on the first step; the hidden layer starts
        learning once that weight moves (the usual zero-init-residual trade).

    Attributes
    ----------
    hidden : Linear or None
        ``Linear(C, H)`` (2 layers) or None.
    out : Linear
        ``Linear(H, 1)`` or ``Linear(C, 1)``.
    """

    def __init__(self, channels: int, reduction: int = 16, layers: int = 2, factor: str = "sigmoid",
                 z_grid: bool = True):
        super().__init__()
        for name, v in (("channels", channels), ("reduction", reduction)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ASQ adapter: {name} must be a positive integer, got {v!r}")
        if layers not in (1, 2):
            raise ValueError(f"ASQ adapter: layers must be 1 or 2, got {layers!r}")
        if factor not in ADAPTER_FACTORS:
            raise ValueError(f"ASQ adapter: unknown factor {factor!r}; valid: {', '.join(ADAPTER_FACTORS)}")
        self.channels, self.reduction, self.layers, self.factor = channels, reduction, layers, factor
        self.z_grid = bool(z_grid)
        self.hidden_units = max(1, channels // reduction)
        if layers == 2:
            self.hidden = nn.Linear(channels, self.hidden_units)
            self.out = nn.Linear(self.hidden_units, 1)
        else:
            self.hidden = None
            self.out = nn.Linear(channels, 1)
        with torch.no_grad():
            self.out.weight.zero_()
            self.out.bias.fill_(ADAPTER_FACTORS[factor][1])

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden_units if self.layers == 2 else None}, " \
               f"factor={self.factor!r}"

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent start of the hidden layer from a batch ``x`` (called once, with the step's init).

        The pooled activations of a ReLU network are all positive and nearly equal across samples
        (e.g. mean 0.4, spread 0.05), so with PyTorch's default init a hidden unit is either dead on
        every sample (it never learns: its output and the gradient through it are 0) or almost
        constant (the last layer then moves ``z`` by far less than the ``2**-ASQ_Z_FRAC`` grid and
        every sample gets the same ``beta``). Rescale each hidden unit so that its pre-activation has
        mean 0 and standard deviation 1 over the batch: it is active on about half the samples and
        varies by O(1) between them. The last layer stays zero, so ``beta == 1`` still holds at init.
        No-op for 1-layer adapters and for batches of fewer than 2 samples.
        """
        if self.hidden is None or x.shape[0] < 2:
            return
        pre = self.hidden(self.pool(x.detach()))
        mean, std = pre.mean(dim=0), pre.std(dim=0)
        ok = torch.isfinite(std) & (std > 1e-6)
        scale = torch.where(ok, 1.0 / std.clamp(min=1e-6), torch.ones_like(std))
        shift = torch.where(ok, mean, torch.zeros_like(mean))
        self.hidden.weight.mul_(scale[:, None])
        self.hidden.bias.sub_(shift).mul_(scale)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool over every dim after the channel dim: ``[B, C, ...] -> [B, C]``."""
        if x.dim() < 2 or x.shape[1] != self.channels:
            raise ValueError(f"ASQ adapter expects [B, {self.channels}, ...] activations, got shape {tuple(x.shape)}")
        return x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """The last layer's output ``z`` (before the factor function), shape ``[B]``, on the hardware grid
        when :attr:`z_grid` is set."""
        h = self.pool(x)
        if self.hidden is not None:
            h = torch.relu(self.hidden(h))
        z = self.out(h).squeeze(-1)
        if self.z_grid:
            z = snap_to_z_grid(z)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The factor ``beta``, shape ``[B]``, > 0."""
        return ADAPTER_FACTORS[self.factor][0](self.logit(x))


class ASQActQuantizer(LSQActQuantizer):
    """ASQ activations (``asq``): unsigned LSQ with the step multiplied per sample by an :class:`ASQAdapter`.

    Levels, rounding
        As :class:`golden.quant.lsq.LSQActQuantizer` with step ``s'_i = beta_i * s`` for sample
        ``i``: ``x_q = clamp(floor(x / s' + 1/2), 0, Qp) * s'``, ``Qp = 2**bits - 1``.
    Gradients (paper Eq. 7-9)
        With ``x^ = x / s'`` and ``g = 1 / sqrt(N * Qp)`` (``N`` = elements of the whole batch,
        as for LSQ): ``d x_q / d s'`` is LSQ's ``round(x^) - x^`` inside, ``Qp`` above, 0 below
        (Eq. 7); ``dL/ds = g * sum_i beta_i * sum_(j in i) dL/dx_q * d x_q/d s'`` (Eq. 8) and
        ``dL/dbeta_i = s * sum_(j in i) dL/dx_q * d x_q/d s'`` (Eq. 9, no gradient scale), from
        which autograd continues into the adapter. The input gets the straight-through gradient
        (1 inside, 0 outside) *plus* the path through the adapter's pooling, as in the only
        public implementation (SENGEL13/ASQ-POST), which feeds the undetached input to the adapter.
    Initialisation
        ``s`` as LSQ (``2 * mean|x| / sqrt(Qp)`` from the first batch); the adapter gives
        ``beta == 1`` exactly at init (see :class:`ASQAdapter`), so the first forward pass
        equals LSQ bit for bit.

    Parameters
    ----------
    bits : int
        2..8.
    channels : int
        Channel count ``C`` of the activations (required).
    reduction, layers, factor
        Passed to :class:`ASQAdapter` (defaults 16, 2, ``"sigmoid"``).
    """

    kind = "asq"

    def __init__(self, bits: int, channels: int | None = None, *, reduction: int = 16, layers: int = 2,
                 factor: str = "sigmoid", z_grid: bool = True):
        if channels is None:
            raise ValueError("ASQ activation quantizer needs channels= (the adapter is Linear(channels, ...))")
        super().__init__(bits)
        self.channels = channels
        self.adapter = ASQAdapter(channels, reduction=reduction, layers=layers, factor=factor, z_grid=z_grid)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, channels={self.channels}"

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """LSQ's step from ``x`` and the adapter's data-dependent start (:meth:`ASQAdapter.initialize`)."""
        super().initialize(x)
        self.adapter.initialize(x)

    def sample_view(self, beta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``beta`` of shape ``[B]`` viewed as ``[B, 1, ...]`` to broadcast against ``x``."""
        return beta.reshape((x.shape[0],) + (1,) * (x.dim() - 1))

    def effective_step(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample step ``s' = beta(x) * s`` (gradient-scaled ``s``), shape ``[B, 1, ...]``."""
        s = grad_scale(self.step, self.grad_scale_factor(x))
        return s * self.sample_view(self.adapter(x), x)

    @torch.no_grad()
    def adaptive_step(self, x: torch.Tensor) -> torch.Tensor:
        """``s'`` per sample, shape ``[B]`` (no gradient)."""
        return self.step.detach() * self.adapter(x)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes ``clamp(floor(x / s' + 1/2), 0, Qp)`` (int64), ``s'`` per sample."""
        if not bool(self.initialized):
            raise RuntimeError("ASQActQuantizer has not seen any data yet; its step is not initialised")
        s = self.sample_view(self.adaptive_step(x), x)
        return torch.clamp(round_half_up(x / s), self.qmin, self.qmax).to(torch.int64)

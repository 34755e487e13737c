"""Fake quantizers for quantization-aware training (torch) -- the public entry point.

The implementations live in the package :mod:`golden.quant` (one module per quantizer family,
one shared base); this module re-exports them under their historical names:

* :class:`LSQActQuantizer` -- unsigned LSQ activations with a learned step.
* :class:`POSTWeightQuantizer` -- POST weights ``0`` or ``+-alpha*sqrt(2)**-k`` with a learned
  ``alpha``; the level choice is exactly :func:`golden.arith.encode_post`.
* :class:`LSQWeightQuantizer` (``uniform``), :class:`POTWeightQuantizer`,
  :class:`APoTWeightQuantizer`, :class:`QILWeightQuantizer`, :class:`QILActQuantizer`,
  :class:`ASQActQuantizer`, :class:`FPQuantizer`, and the registries
  :data:`WEIGHT_QUANTIZERS`, :data:`ACT_QUANTIZERS`, :func:`make_weight_quantizer`,
  :func:`make_act_quantizer`.

Rounding is *round half up* (``floor(v + 1/2)``) everywhere, the same as
:func:`golden.arith.quantize_activation` and :func:`golden.arith.requantize`, so the codes the
float model produces are the codes the integer executor reproduces. The straight-through
helpers are written as ``value.detach() + (x - x.detach())`` so the forward value is *bit
exact* (no ``x + (r - x)`` rounding), which export relies on. ``docs/quantizers.md`` records
every decision.
"""

from __future__ import annotations

from .quant import *  # noqa: F401,F403
from .quant import __all__ as _quant_all

__all__ = list(_quant_all)

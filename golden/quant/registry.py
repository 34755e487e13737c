"""Quantizers by name, for the models and the CLI (``--weight-quant`` / ``--act-quant``)."""

from __future__ import annotations

from .asq import ASQActQuantizer
from .base import FPQuantizer, Quantizer
from .lsq import LSQActQuantizer, LSQWeightQuantizer
from .power import APoTWeightQuantizer, POSTWeightQuantizer, POTWeightQuantizer
from .qil import QILActQuantizer, QILWeightQuantizer

__all__ = ["WEIGHT_QUANTIZERS", "ACT_QUANTIZERS", "make_weight_quantizer", "make_act_quantizer"]

#: Weight quantizers: name -> class (constructor ``cls(bits, **kw)``).
WEIGHT_QUANTIZERS: dict[str, type[Quantizer]] = {
    "fp": FPQuantizer,
    "uniform": LSQWeightQuantizer,
    "pot": POTWeightQuantizer,
    "post": POSTWeightQuantizer,
    "apot": APoTWeightQuantizer,
    "qil": QILWeightQuantizer,
}

#: Activation quantizers: name -> class (constructor ``cls(bits, channels=..., **kw)``).
ACT_QUANTIZERS: dict[str, type[Quantizer]] = {
    "fp": FPQuantizer,
    "lsq": LSQActQuantizer,
    "qil": QILActQuantizer,
    "asq": ASQActQuantizer,
}


def _lookup(table: dict, name, what: str):
    if name not in table:
        raise ValueError(f"unknown {what} quantizer {name!r}; valid: {', '.join(table)}")
    return table[name]


def make_weight_quantizer(name: str, bits, **kw) -> Quantizer:
    """Build weight quantizer ``name`` at ``bits``; ``kw`` go to its constructor.

    Raises ``ValueError`` for an unknown name (listing the valid ones) and
    :class:`golden.arith.ArithError` (a ``ValueError``) for bits outside the quantizer's range.
    """
    return _lookup(WEIGHT_QUANTIZERS, name, "weight")(bits, **kw)


def make_act_quantizer(name: str, bits, channels: int | None = None, **kw) -> Quantizer:
    """Build activation quantizer ``name`` at ``bits`` for activations with ``channels`` channels.

    ``channels`` is required by ``asq`` (its adapter) and by per-channel LSQ; the others accept
    and ignore it. Errors as :func:`make_weight_quantizer`.
    """
    return _lookup(ACT_QUANTIZERS, name, "activation")(bits, channels=channels, **kw)

"""Bit-exact integer executor of an :class:`golden.intmodel.IntModel` (NumPy only, no torch).

Per layer: ``acc[b, o] = bias[o] + sum_i arith.product_table(...)[x[b, i], codes[o, i]]``
(int64, exact); non-final layers output ``arith.requantize(acc, mult, shift, abits_out)``, the
final layer outputs ``acc`` as signed logits. This is exactly what the hardware computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import arith
from .intmodel import IntModel

__all__ = ["IntRun", "quantize_input", "layer_accumulate", "layer_output", "run"]

#: Largest number of gathered products held in memory at once (batch chunking bound).
_MAX_GATHER = 1 << 22


@dataclass
class IntRun:
    """Result of :func:`run`.

    ``activations``: input codes, then each non-final layer's output codes (int64 ``[B, n]``).
    ``accumulators``: every layer's accumulator (int64 ``[B, fan_out]``; the last one is ``logits``).
    ``logits``: int64 ``[B, classes]`` in units of the final layer's ``step_in * alpha * 2**-frac_bits``.
    ``predictions``: int64 ``[B]``, first index of the maximum logit.
    """

    activations: list
    accumulators: list
    logits: np.ndarray
    predictions: np.ndarray


def quantize_input(model: IntModel, X_real) -> np.ndarray:
    """Real features ``[B, input_features]`` -> int64 codes via :func:`golden.arith.quantize_activation`
    (``clip(floor(x / step + 1/2), 0, 2**bits - 1)``)."""
    X = np.asarray(X_real, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != model.input_features:
        raise ValueError(f"input must have shape [batch, {model.input_features}], got {list(X.shape)}")
    return arith.quantize_activation(X, model.input_step, model.input_bits)


def layer_accumulate(layer, x: np.ndarray, frac_bits: int) -> np.ndarray:
    """Accumulators ``bias + sum of POST products`` for int64 codes ``x`` ``[B, fan_in]`` -> ``[B, fan_out]``."""
    table = arith.product_table(layer.wbits, layer.abits_in, frac_bits)   # [2**abits, 2**wbits]
    codes = layer.codes.astype(np.intp)
    B = x.shape[0]
    acc = np.empty((B, layer.fan_out), dtype=np.int64)
    chunk = max(1, _MAX_GATHER // max(1, layer.fan_out * layer.fan_in))
    for s in range(0, B, chunk):
        xs = x[s:s + chunk].astype(np.intp)
        prods = table[xs[:, None, :], codes[None, :, :]]                    # [b, fan_out, fan_in]
        acc[s:s + chunk] = prods.sum(axis=2, dtype=np.int64)
    return acc + layer.bias[None, :]


def layer_output(layer, acc: np.ndarray) -> np.ndarray:
    """A layer's output from its accumulators: requantised int64 codes, or ``acc`` itself if final."""
    if layer.final:
        return acc
    return np.asarray(arith.requantize(acc, layer.mult, layer.shift, layer.abits_out), dtype=np.int64)


def run(model: IntModel, x_codes) -> IntRun:
    """Run the integer model on input codes ``[B, input_features]`` (integers in ``0..2**input_bits-1``).

    Raises ``ValueError`` for a wrong shape, non-integer dtype or codes out of range.
    """
    x = np.asarray(x_codes)
    if x.ndim != 2 or x.shape[1] != model.input_features:
        raise ValueError(f"input codes must have shape [batch, {model.input_features}], got {list(x.shape)}")
    if x.dtype.kind not in "iu":
        raise ValueError(f"input codes must be integers, got dtype {x.dtype}")
    x = x.astype(np.int64)
    if x.size and (x.min() < 0 or x.max() >= 2 ** model.input_bits):
        raise ValueError(f"input codes out of range 0..{2 ** model.input_bits - 1}")
    activations, accumulators = [x], []
    for layer in model.layers:
        acc = layer_accumulate(layer, x, model.frac_bits)
        accumulators.append(acc)
        if layer.final:
            break
        x = layer_output(layer, acc)
        activations.append(x)
    logits = accumulators[-1]
    return IntRun(activations=activations, accumulators=accumulators, logits=logits,
                  predictions=np.argmax(logits, axis=1).astype(np.int64))

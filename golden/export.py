"""Export a trained :class:`golden.models.QuantMLP` to an :class:`golden.intmodel.IntModel` (torch).

Follows ``docs/export.md``: per layer

* ``codes = arith.encode_post(w / alpha)`` (the weight quantizer's :meth:`codes`), uint8;
* ``bias = round_half_up(b / (step_in * alpha * 2**-frac_bits))`` limited to
  ``+-fan_in * arith.max_product_magnitude(abits_in, frac_bits)``, int64;
* ``(mult, shift) = arith.fixed_point_multiplier(step_in * alpha * 2**-frac_bits / step_out)``
  for non-final layers, where ``step_out`` is the next layer's input step.

Any NaN/inf, non-positive scale or unrepresentable multiplier raises :class:`ExportError`;
nothing is exported in that case.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from . import arith
from .intmodel import IntLayer, IntModel, bias_limit, requant_ratio, validate_intmodel
from .models import QuantMLP
from .errors import InputError

__all__ = ["ExportError", "export_model", "export_bias"]


class ExportError(InputError):
    """The model cannot be exported (NaN/inf, untrained quantizers, degenerate scales)."""


def export_bias(bias, step_in: float, alpha: float, frac_bits: int, fan_in: int, abits_in: int):
    """Float bias -> int64 accumulator units, round half up, clipped to :func:`bias_limit`.

    Returns ``(bias_int, n_clipped)``.
    """
    unit = float(step_in) * float(alpha) * 2.0 ** -int(frac_bits)
    b = np.floor(np.asarray(bias, dtype=np.float64) / unit + 0.5)
    lim = bias_limit(fan_in, abits_in, frac_bits)
    clipped = int(np.count_nonzero(np.abs(b) > lim))
    return np.clip(b, -lim, lim).astype(np.int64), clipped


def _scalar(t: torch.Tensor, what: str) -> float:
    v = float(t.detach())
    if not (math.isfinite(v) and v > 0):
        raise ExportError(f"{what} is {v!r}; it must be finite and > 0, refusing to export")
    return v


def _provenance(config, metrics, clipped: dict) -> dict:
    if dataclasses.is_dataclass(config):
        config = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    prov = {"generator": "golden.export"}
    prov.update(dict(config or {}))
    prov.update(dict(metrics or {}))
    prov["bias_clipped"] = clipped
    return prov


@torch.no_grad()
def export_model(model: QuantMLP, config=None, metrics=None, *,
                 frac_bits: int = arith.DEFAULT_FRAC_BITS) -> IntModel:
    """Integer form of a trained ``model`` (quantization enabled, quantizers initialised).

    ``config`` (a :class:`golden.train.TrainConfig` or dict) and ``metrics`` (dict) are merged
    into the JSON ``provenance``. Raises :class:`ExportError` on NaN/inf or degenerate scales.
    """
    frac_bits = arith.check_frac_bits(frac_bits)
    if not getattr(model, "quant_enabled", False):
        raise ExportError("model has quantization disabled (float warm-up only); train it with QAT first")
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ExportError(f"parameter {name!r} contains NaN or inf; refusing to export")
    layers, clipped = [], {}
    n = len(model.layers)
    for i, ql in enumerate(model.layers):
        lname = f"fc{i + 1}"
        if not (bool(ql.act_quant.initialized) and bool(ql.weight_quant.initialized)):
            raise ExportError(f"layer {lname} quantizers were never initialised; train the model first")
        step_in = _scalar(ql.act_quant.step, f"{lname} input step")
        alpha = _scalar(ql.weight_quant.alpha, f"{lname} alpha")
        try:
            codes = ql.weight_quant.codes(ql.linear.weight).astype(np.uint8)
        except arith.ArithError as exc:
            raise ExportError(f"{lname}: {exc}") from None
        bias, clipped[lname] = export_bias(ql.linear.bias.double().numpy(), step_in, alpha, frac_bits,
                                           ql.fan_in, ql.abits_in)
        final = i == n - 1
        abits_out = step_out = mult = shift = None
        if not final:
            nxt = model.layers[i + 1].act_quant
            abits_out = nxt.bits
            step_out = _scalar(nxt.step, f"fc{i + 2} input step")
            try:
                mult, shift = arith.fixed_point_multiplier(requant_ratio(step_in, alpha, frac_bits, step_out))
            except arith.ArithError as exc:
                raise ExportError(f"{lname}: {exc}") from None
        layers.append(IntLayer(name=lname, codes=np.ascontiguousarray(codes), bias=bias,
                               wbits=ql.wbits, abits_in=ql.abits_in, abits_out=abits_out,
                               alpha=alpha, step_in=step_in, step_out=step_out,
                               mult=mult, shift=shift, final=final))
    first = model.layers[0]
    im = IntModel(frac_bits=frac_bits, input_features=first.fan_in, input_bits=first.abits_in,
                  input_step=layers[0].step_in, classes=model.layers[-1].fan_out, layers=layers,
                  provenance=_provenance(config, metrics, clipped))
    validate_intmodel(im, where="export_model")
    return im

"""Compile an exported integer model into an engine program (layer descriptors + memory images).

The engine is sized for the model: PE widths are the widest layer's (narrower POST codes are
re-encoded exactly with :func:`golden.arith.widen_post_code`, narrower activations zero-extend),
memories are rounded up to powers of two, and :func:`hw.program.build_program` checks that every
layer fits before anything is simulated.
"""

from __future__ import annotations

import math

import numpy as np

from golden import arith
from golden.intmodel import IntModel
from hw.program import EngineParams, LayerSpec, Program, build_program

__all__ = ["engine_params_for", "layer_specs", "compile_model"]


def _pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def engine_params_for(model: IntModel, rows: int = 4, cols: int = 4) -> EngineParams:
    """Smallest power-of-two-sized engine of ``rows`` × ``cols`` PEs that runs ``model``."""
    if not (isinstance(rows, int) and rows >= 1 and isinstance(cols, int) and cols >= 1):
        raise ValueError(f"rows and cols must be integers >= 1, got rows={rows!r} cols={cols!r}")
    layers = model.layers
    wbits = max(l.wbits for l in layers)
    abits = max(max(l.abits_in for l in layers), model.input_bits)
    fan_in = max(l.codes.shape[1] for l in layers)
    regions = [model.input_features] + [l.codes.shape[0] for l in layers if not l.final]
    act_words = sum(math.ceil(n / rows) for n in regions)
    weight_words = sum(math.ceil(l.codes.shape[0] / cols) * math.ceil(l.codes.shape[1] / rows) for l in layers)
    bias_words = sum(math.ceil(l.codes.shape[0] / cols) * cols for l in layers)
    result_words = math.ceil(layers[-1].codes.shape[0] / cols) * cols
    return EngineParams(rows=rows, cols=cols, wbits=wbits, abits=abits, frac_bits=model.frac_bits,
                        max_fan_in=_pow2(fan_in), act_words=_pow2(act_words), weight_words=_pow2(weight_words),
                        bias_words=_pow2(bias_words), result_words=_pow2(result_words),
                        max_layers=_pow2(len(layers)))


def layer_specs(model: IntModel, params: EngineParams) -> list[LayerSpec]:
    """The model's layers as engine layers: codes widened to ``params.wbits``."""
    specs = []
    for layer in model.layers:
        if layer.wbits > params.wbits:
            raise ValueError(f"layer {layer.name}: {layer.wbits}-bit weights do not fit the engine's "
                             f"{params.wbits}-bit PEs; regenerate with --wbits {layer.wbits}")
        if layer.abits_in > params.abits:
            raise ValueError(f"layer {layer.name}: {layer.abits_in}-bit activations do not fit the engine's "
                             f"{params.abits}-bit PEs; regenerate with --abits {layer.abits_in}")
        codes = arith.widen_post_code(layer.codes.astype(np.int64), layer.wbits, params.wbits)
        specs.append(LayerSpec(codes=codes, bias=layer.bias.astype(np.int64),
                               mult=layer.mult, shift=layer.shift,
                               out_bits=None if layer.final else layer.abits_out,
                               final=layer.final, name=layer.name))
    return specs


def compile_model(model: IntModel, params: EngineParams | None = None, rows: int = 4, cols: int = 4) -> Program:
    """Program for ``model`` on ``params`` (default: :func:`engine_params_for` the model)."""
    params = params or engine_params_for(model, rows, cols)
    return build_program(params, layer_specs(model, params))

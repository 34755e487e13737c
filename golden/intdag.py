"""The one integer form of every zoo model: the integer DAG, its exporter and its executor (the golden model).

:func:`export_dag` turns a trained zoo model (chains like the digits MLP and CNN are DAGs too;
ResNets with branches and residual adds) into a list of :class:`golden.intgraph.Stage` (an
:class:`golden.intgraph.IntGraph`) that needs no PyTorch model to run; :mod:`golden.graphfile`
stores it (format tag ``post-accel-intgraph`` v4) and :func:`run_graph` executes it. ``run_graph`` is
the golden model: the engine's expected outputs come from it. :func:`golden.intgraph.run_dag` walks the
PyTorch module in the same arithmetic (the tests' reference); the two agree bit for bit
(``tests/test_intdag.py``).

A DAG stage is one quantized layer and what follows it up to the next consumer::

    codes = Q(rescale(v_src, in_mult, in_offset, in_shift))     # the layer's own input quantizer
    acc   = conv/linear(codes)
    v     = stage_value(acc, mult, shift, bias, acc_shift, beta) # beta: Q's factor if Q is ASQ
    v    += align_value(v_res, res_mult, res_shift)             # residual add (optional)
    v     = saturate(v)                                         # 16-bit value register
    v     = max(v, 0)                                           # ReLU (optional)
    v     = maxpool(v) or sum_pool(v) (global average pooling)  # (optional)

``v_src`` is the value of the stage named by ``input_from`` (or the real network input, quantized
by ``graph.input_quant``) and ``v_res`` that of the stage named in ``residual``; Q is LSQ/QIL
(``clip(., lo, hi)``) or ASQ (``golden.arith.asq_quantize`` after the adapter on the channel sums).
A model whose dataflow does not fit this pattern (an add whose first operand is not a fresh
layer output, a ReLU after pooling, one value read at two different points of its post-processing,
ReLU6) raises :class:`golden.intgraph.ExportError` naming the node.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import arith
from .intgraph import (ExportError, GraphRun, IntGraph, Stage, _act_quant_any, _adapter, _asq_codes, _bn,
                       _factor_name, _real_codes, _weights, rescale_params, stage_acc, stage_bound, trace,
                       value_params)
from .zoo import QConv2d, QLinear

__all__ = ["export_dag", "run_graph", "predict", "integer_accuracy", "stage_units", "consumer_units"]

# post-processing phases of a stage's value, in the order a stage applies them
_RESCALED, _ADDED, _RELU, _POOLED = range(4)


@dataclass
class _Aff:
    """A stage's accumulator with its real affine map (BN folds in until it is materialized)."""
    stage: Stage
    scale: np.ndarray
    offset: np.ndarray
    shape: tuple                  # per-sample (C, H, W) or (F,)
    bound: int = 0                # largest |acc| (golden.intgraph.stage_bound)


@dataclass
class _Val:
    """The value of ``stage`` after its post-processing up to ``phase`` (stage None: the real input)."""
    stage: Stage | None
    unit: float
    shape: tuple
    phase: int


def _materialize(a: _Aff, units: dict) -> _Val:
    """The same per-channel rescale as :func:`golden.intgraph._materialize` (:func:`value_params`)."""
    st = a.stage
    if st.mult is None:
        factor = _factor_name(st.in_quant) if st.input_beta else None
        st.mult, st.shift, st.bias, st.acc_shift, st.value_unit = value_params(a.scale, a.offset, a.bound,
                                                                               factor, st.name, units.get(st.name))
    return _Val(st, st.value_unit, a.shape, _RESCALED)


def _conv_shape(layer: QConv2d, shape: tuple, where: str) -> tuple:
    if len(shape) != 3:
        raise ExportError(f"{where}: a convolution needs a C x H x W input, got {shape}")
    k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
    _, h, w = shape
    return (layer.out_channels, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)


@torch.no_grad()
def export_dag(model: nn.Module, input_shape=None, frac_bits: int = arith.DEFAULT_FRAC_BITS) -> IntGraph:
    """The integer stages of a trained (eval-mode) zoo model with branches and residual adds.

    Works on chains too (each stage then reads the previous one). Raises :class:`ExportError`
    naming the node that has no stage form. Two passes: the first finds each value's consumers, the
    second gives a value that feeds quantizers the unit at which its consumers' clip ranges span the
    16-bit range (:func:`consumer_units`; through a sum pooling, times ``positions / 2**sum_pool_shift``),
    the logits a worst-case unit
    (:func:`golden.intgraph.value_params`).
    """
    first, pooled = _export(model, input_shape, frac_bits, {})
    return _export(model, input_shape, frac_bits, consumer_units(first, pooled))[0]


def stage_units(graph: IntGraph) -> dict:
    """Stage name -> its value unit: what :func:`golden.intgraph.run_dag` needs (``units=``) to walk the
    PyTorch model in the same units as the exported graph."""
    return {st.name: st.value_unit for st in graph.stages}


def consumer_units(graph: IntGraph, pooled: dict) -> dict:
    """Stage name -> the unit its value gets from its quantizing consumers (see :func:`export_dag`);
    ``pooled`` maps a sum-pooled stage to its positions.

    The consumer's real clip range ``[(lo - z)/a, (hi - z)/a]`` (ASQ: times beta < 2) spans the value
    range: the whole positive range for values read only by quantizers (a quantizer clips what
    saturates: an 8-bit consumer gets 128 units a step, a 4-bit one 2184), a quarter of it for values a
    residual add also reads (headroom for the sum). A sum-pooled value gets the unit that makes its mean
    span the range; the values it averages then have ``2**SUM_POOL_GUARD`` times the headroom
    (:func:`golden.arith.sum_pool_shift`).
    """
    residual_read = {st.residual[0] for st in graph.stages if st.residual is not None}
    units: dict = {}
    for st in graph.stages:
        if st.input_from in (None, "input"):
            continue
        q = st.in_quant
        reach = max(abs((q.lo - q.zero) / q.scale), abs((q.hi - q.zero) / q.scale)) * (2 if q.kind == "asq" else 1)
        positions = pooled.get(st.input_from)
        room = 2 ** (arith.VALUE_BITS - 3) if st.input_from in residual_read else 2 ** (arith.VALUE_BITS - 1) - 1
        want = reach / room
        if positions:
            want *= positions / 2.0 ** arith.sum_pool_shift(positions)
        units[st.input_from] = min(units.get(st.input_from, math.inf), want)
    return units


def _export(model: nn.Module, input_shape, frac_bits: int, units: dict) -> tuple[IntGraph, dict]:
    """One pass of :func:`export_dag` with the given value units; also returns the sum-pooled stages'
    positions."""
    model.eval()
    graph = trace(model)
    mods = dict(model.named_modules())
    input_shape = tuple(input_shape or getattr(model, "input_shape", None) or ())
    if not input_shape:
        raise ExportError("input shape unknown: pass input_shape=(C, H, W) or (features,)")
    env: dict = {}
    stages: list[Stage] = []
    phase: dict = {}                   # stage name -> its latest phase
    frozen: dict = {}                  # stage name -> who read its value (no post-processing after that)
    input_q = None

    pooled: dict = {}                  # sum-pooled stage -> positions

    def value(x, where) -> _Val:
        return _materialize(x, units) if isinstance(x, _Aff) else x

    def advance(x: _Val, to: int, what: str, where: str) -> None:
        """Apply post-processing step ``what`` (phase ``to``) to stage ``x.stage``."""
        if x.stage is None:
            raise ExportError(f"{where}: {what} on the network input has no integer stage form")
        name = x.stage.name
        if name in frozen:
            raise ExportError(f"{where}: {what} on the output of {name} after {frozen[name]} read it; the "
                              f"integer graph reads each layer's value at one point")
        if x.phase != phase[name]:
            raise ExportError(f"{where}: {what} on an earlier point of {name}'s output than its other uses")
        if x.phase >= to:
            order = "rescale -> residual add -> ReLU -> pooling"
            raise ExportError(f"{where}: {what} after a later step of {name}'s post-processing; a stage runs "
                              f"{order}, once each")
        phase[name] = to

    def read(x: _Val, by: str) -> None:
        if x.stage is not None:
            if x.phase != phase[x.stage.name]:
                raise ExportError(f"{by}: reads an earlier point of {x.stage.name}'s output than its other uses")
            frozen.setdefault(x.stage.name, by)

    for node in graph.nodes:
        if node.op == "placeholder":
            env[node.name] = _Val(None, 1.0, input_shape, _RESCALED)
            continue
        if node.op == "output":
            out = value(env[node.args[0].name], "output")
            if out.stage is None:
                raise ExportError("the model's output is its input")
            read(out, "the output")
            return IntGraph(input_quant=input_q, input_shape=input_shape, stages=stages,
                            meta={"model": getattr(model, "model_name", type(model).__name__),
                                  "weight_quant": getattr(model, "weight_quant_name", None),
                                  "act_quant": getattr(model, "act_quant_name", None)},
                            kind="dag", output=out.stage.name), pooled
        args = [env[a.name] if isinstance(a, torch.fx.Node) else a for a in node.args]
        where = str(node.target) if node.op == "call_module" else node.name
        if node.op == "call_module":
            m = mods[node.target]
            if isinstance(m, (QConv2d, QLinear)):
                src = value(args[0], where)
                read(src, where)
                q = _act_quant_any(m.act_quant, where)
                fmt, wts, unit, frac = _weights(m, where, frac_bits)      # refuses 'fp' weights by name
                st = Stage(name=where, kind="conv" if isinstance(m, QConv2d) else "linear", weight_format="",
                           weights=None, wbits=int(m.weight_quant.bits), frac_bits=0, in_quant=q,
                           input_beta=q.kind == "asq")
                if src.stage is None:
                    if input_q is not None:
                        raise ExportError(f"{where}: a second layer reads the network input; the integer graph "
                                          f"quantizes the input once")
                    input_q = q
                    if q.kind == "asq":
                        q.adapter = m.act_quant            # float adapter on the real input (host side)
                    st.input_from = "input"
                else:
                    st.input_from = src.stage.name
                    if q.kind == "asq":
                        (w,), (s,), (o,) = rescale_params([src.unit / q.value_step * 2.0 ** q.value_frac], [0.0],
                                                          f"{where} input rescale")
                        st.in_mult, st.in_shift, st.in_offset = int(w), int(s), int(o)
                        positions = int(np.prod(src.shape[1:])) if len(src.shape) == 3 else 1
                        q.adapter = _adapter(m.act_quant, q, positions, where)
                    else:
                        (w,), (s,), (o,) = rescale_params([src.unit * q.scale], [q.zero], f"{where} input rescale")
                        st.in_mult, st.in_shift, st.in_offset = int(w), int(s), int(o)
                st.weight_format, st.weights, st.frac_bits = fmt, wts, frac
                if isinstance(m, QConv2d):
                    if m.stride[0] != m.stride[1] or m.padding[0] != m.padding[1] \
                            or m.kernel_size[0] != m.kernel_size[1] or m.dilation != (1, 1):
                        raise ExportError(f"{where}: only square kernels, equal strides/paddings, no dilation")
                    st.stride, st.padding, st.groups = m.stride[0], m.padding[0], m.groups
                    shape = _conv_shape(m, src.shape, where)
                else:
                    if int(np.prod(src.shape)) != m.in_features:
                        raise ExportError(f"{where}: {m.in_features} inputs, but its input has shape {src.shape}")
                    shape = (m.out_features,)
                scale = q.value_step * unit
                bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(len(scale))
                st.mult = None
                stages.append(st)
                phase[where] = _RESCALED
                env[node.name] = _Aff(st, np.asarray(scale, dtype=np.float64), bias, shape, stage_bound(st, q))
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                a = args[0]
                if not isinstance(a, _Aff) or a.stage.mult is not None:
                    raise ExportError(f"{where}: batch norm must directly follow a conv/linear layer")
                g, h = _bn(m)
                env[node.name] = _Aff(a.stage, a.scale * g, a.offset * g + h, a.shape, a.bound)
            elif isinstance(m, nn.ReLU):
                env[node.name] = _relu(value(args[0], where), advance, where)
            elif isinstance(m, nn.ReLU6):
                raise ExportError(f"{where}: ReLU6 (a clip at 6) has no stage form in the integer graph file; "
                                  f"models with it (MobileNetV2) run in golden.intgraph.run_dag (the PyTorch-side reference) only")
            elif isinstance(m, nn.MaxPool2d):
                x = value(args[0], where)
                k, s, p = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding))
                if m.dilation not in (1, (1, 1)) or m.ceil_mode:
                    raise ExportError(f"{where}: max pooling with dilation or ceil_mode is not supported")
                if len(x.shape) != 3:
                    raise ExportError(f"{where}: max pooling needs a C x H x W map, got {x.shape}")
                advance(x, _POOLED, "max pooling", where)
                x.stage.post_ops.append(("maxpool", int(k), int(s), int(p)))
                c, h, w = x.shape
                env[node.name] = _Val(x.stage, x.unit, (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1),
                                      _POOLED)
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                if m.output_size not in (1, (1, 1)):
                    raise ExportError(f"{where}: only global average pooling is supported")
                x = value(args[0], where)
                if len(x.shape) != 3:
                    raise ExportError(f"{where}: average pooling needs a C x H x W map, got {x.shape}")
                advance(x, _POOLED, "global average pooling", where)
                x.stage.post_ops.append(("sumpool",))
                c, h, w = x.shape
                pooled[x.stage.name] = h * w
                env[node.name] = _Val(x.stage, x.unit * 2.0 ** arith.sum_pool_shift(h * w) / (h * w), (c, 1, 1),
                                      _POOLED)
            elif isinstance(m, (nn.Dropout, nn.Identity)):
                env[node.name] = args[0]
            else:
                raise ExportError(f"{where}: module {type(m).__name__} has no integer form")
        elif node.op == "call_function":
            fn = node.target
            if fn in (torch.nn.functional.relu, torch.relu):
                env[node.name] = _relu(value(args[0], where), advance, where)
            elif fn is torch.flatten:
                env[node.name] = _flatten(args[0], where, units)
            elif fn in (operator.add, torch.add):
                if len(args) != 2 or not all(isinstance(a, (_Aff, _Val)) for a in args):
                    raise ExportError(f"{where}: only the sum of two tensors has an integer form")
                a, b = value(args[0], where), value(args[1], where)
                if b.stage is None or a.stage is None:
                    raise ExportError(f"{where}: adding the network input has no integer form")
                advance(a, _ADDED, "a residual add", where)
                read(b, where)
                if b.unit == a.unit:
                    rm, rs = 1 << (arith.MULT_BITS - 1), arith.MULT_BITS - 1   # exact: align_value is the identity
                else:
                    (rm,), (rs,), _ = rescale_params([b.unit / a.unit], [0.0], f"{where} residual alignment")
                if b.shape != a.shape:
                    raise ExportError(f"{where}: adds shapes {a.shape} and {b.shape}")
                a.stage.residual = (b.stage.name, int(rm), int(rs))
                env[node.name] = _Val(a.stage, a.unit, a.shape, _ADDED)
            else:
                raise ExportError(f"{where}: function {getattr(fn, '__name__', fn)} has no integer form")
        elif node.op == "call_method" and node.target in ("view", "reshape", "flatten"):
            x = args[0]
            new_shape = tuple(args[1:]) if node.target != "flatten" else None
            if new_shape and len(new_shape) == 1 and isinstance(new_shape[0], (tuple, list)):
                new_shape = tuple(new_shape[0])
            if isinstance(x, _Val) and x.stage is None and new_shape and len(new_shape) > 2:
                if int(np.prod(new_shape[1:])) != int(np.prod(x.shape)):
                    raise ExportError(f"{where}: reshapes the {x.shape} input to {new_shape}")
                env[node.name] = _Val(None, x.unit, tuple(int(v) for v in new_shape[1:]), x.phase)
            elif new_shape is None or len(new_shape) == 2:
                env[node.name] = _flatten(x, where, units)
            else:
                raise ExportError(f"{where}: reshape to {new_shape} has no integer stage form (only flattening)")
        else:
            raise ExportError(f"{where}: graph node {node.op} {node.target} has no integer form")
    raise ExportError("graph has no output")


def _relu(x: _Val, advance, where: str) -> _Val:
    advance(x, _RELU, "ReLU", where)
    x.stage.relu, x.stage.relu_floor = True, 0
    return _Val(x.stage, x.unit, x.shape, _RELU)


def _flatten(x, where: str, units: dict) -> _Val:
    """Flattening a value changes only its shape (the next linear layer reads it in CHW order)."""
    if isinstance(x, _Aff):
        x = _materialize(x, units)
    if x.stage is not None and len(x.shape) == 3:
        x.stage.post_ops.append(("flatten",))
    return _Val(x.stage, x.unit, (int(np.prod(x.shape)),), x.phase)


def run_graph(graph: IntGraph, X) -> GraphRun:
    """Run real inputs ``X`` (``[N, *input_shape]`` or flattened) through the integer graph (see the module
    docstring): ``codes[i]``/``betas[i]`` are stage ``i``'s input codes and ASQ factors, ``logits`` the
    output stage's value."""
    x_in = np.asarray(X, dtype=np.float64).reshape((-1,) + tuple(graph.input_shape))
    if not np.all(np.isfinite(x_in)):
        raise ValueError("input contains NaN or inf")
    values, codes_l, betas_l, accs_l = {}, [], [], []
    for st in graph.stages:
        q = st.in_quant
        if st.input_from == "input":
            codes, beta = _real_codes(q, q.adapter if q.kind == "asq" else None, x_in)
        else:
            v = values[st.input_from]
            if q.kind == "asq":
                codes, beta = _asq_codes(arith.prescale(v, st.in_mult, st.in_offset, st.in_shift), q)
            else:
                codes = arith.quantize_value(arith.rescale(v, st.in_mult, st.in_offset, st.in_shift), 0, q.lo, q.hi)
                beta = None
        codes_l.append(codes)
        betas_l.append(beta)
        acc = stage_acc(st, codes, q.bits)
        accs_l.append(acc)
        v = arith.stage_value(acc, st.mult, st.shift, st.bias, st.acc_shift, beta if st.input_beta else None)
        res = None
        if st.residual is not None:
            name, rm, rs = st.residual
            res = arith.align_value(values[name], int(rm), int(rs))
        v = arith.finish_value(v, res, st.relu_floor if st.relu else None)
        for op in st.post_ops:
            if op[0] == "maxpool":
                v = arith.pool2d(v, *op[1:])
            elif op[0] == "sumpool":
                v = arith.sum_pool(v)
            else:                                          # flatten (CHW order)
                v = v.reshape(v.shape[0], -1)
        values[st.name] = v
    out = values[graph.output]
    logits = out.reshape(out.shape[0], -1)
    return GraphRun(codes_l, betas_l, logits, np.argmax(logits, axis=1), accs_l,
                    [values[st.name] for st in graph.stages])


def predict(graph: IntGraph, X, chunk: int = 256) -> np.ndarray:
    """The golden model's predictions for real inputs ``X``, ``chunk`` samples at a time (a whole
    Fashion-MNIST test set through :func:`run_graph` at once would hold every stage's im2col patches and
    values of all 10,000 images in memory)."""
    x = np.asarray(X)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk!r}")
    return np.concatenate([run_graph(graph, x[i:i + chunk]).predictions for i in range(0, len(x), chunk)]) \
        if len(x) else np.zeros(0, dtype=np.int64)


def integer_accuracy(model: nn.Module, X, y) -> float:
    """Test accuracy of ``model`` exported to the integer graph (raises :class:`ExportError`)."""
    model.eval()
    return float((predict(export_dag(model), X) == np.asarray(y)).mean())

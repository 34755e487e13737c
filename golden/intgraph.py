"""Integer graph (export v2): conv/linear chains with BN folded, LSQ/QIL/ASQ activations, any weight set.

:func:`export_graph` turns a trained quantizable model of :mod:`golden.zoo` (the digits MLP and
CNN: chains of ``QConv2d``/``QLinear``, batch norm, ReLU, max pooling, flatten) into integer
*stages*, one per quantized layer; :func:`run_graph` executes them with the integer arithmetic of
:mod:`golden.arith` (``docs/arithmetic.md``, "Integer graph (v2)"). Per stage:

1. ``acc = sum(product(x, w))`` over the receptive field: POST weights use the √2-LUT product
   (:func:`golden.arith.post_product`, units ``2**-F``); every other weight set (uniform, POT,
   APoT, QIL) is an integer level table (:func:`golden.arith.integer_levels`), ``product = x * w``.
2. If the input codes came from an ASQ quantizer: ``acc = (acc * beta) >> 8`` per sample (``beta``
   with 16 fraction bits, so ``acc`` keeps 8).
3. ``v = (acc * mult_c + offset_c) >> shift_c`` per output channel: conv bias, batch norm, the
   next quantizer's step and zero point folded in; ``v`` is in units of the next quantizer's
   step ``/ 2**value_frac`` (``value_frac`` = 0 for LSQ/QIL, 8 for ASQ and the logits).
4. ReLU (``max(v, relu_floor)``), max pooling and flatten act on ``v``.
5. The next quantizer: ``clip(round(v / 2**value_frac), lo, hi)`` (LSQ, QIL), or ASQ: the integer
   adapter on the global sum of ``v``, the factor tables, ``clip(round(v * inv_beta / 2**(8+16)))``.
   The last stage outputs ``v`` (logits in units of ``2**-8`` of its reference unit).

Residual adds (ResNets, MobileNetV2) are not in this format yet: :func:`export_graph` says so.
The float model and this executor differ only by the LUT and fixed-point roundings; the tests
measure by how much (codes equal almost everywhere, never more than 1 apart).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import arith
from .quant.asq import ASQActQuantizer
from .quant.lsq import LSQActQuantizer, LSQWeightQuantizer
from .quant.power import POSTWeightQuantizer, SignMagnitudeWeightQuantizer
from .quant.qil import QILActQuantizer, QILWeightQuantizer
from .zoo import DigitsCNN, DigitsMLP, QConv2d, QLinear

__all__ = ["ExportError", "ActQuant", "Adapter", "Stage", "IntGraph", "GraphRun", "export_graph",
           "FloatRun", "run_graph", "run_stage", "stage_input_bits", "integer_accuracy", "float_codes"]

LOGIT_FRAC = arith.ASQ_VALUE_FRAC


class ExportError(ValueError):
    """The model (or one of its quantizers) cannot be expressed in integer form; the message says why."""


@dataclass
class Adapter:
    """An ASQ adapter in fixed point (see ``docs/arithmetic.md``).

    ``h = relu(w1 @ S + b1)`` (units ``2**-e1``) with ``S`` the per-channel sum of ``v`` over the
    feature map; ``z = w2 @ h + b2`` (units ``2**-(e1+e2)``); 1-layer adapters have ``w2 = None``
    and ``z = w1 @ S + b1``. ``factor`` names the ``beta(z)`` table.
    """

    w1: np.ndarray
    b1: np.ndarray
    e1: int
    w2: np.ndarray | None
    b2: np.ndarray | None
    e2: int
    factor: str

    @property
    def z_frac(self) -> int:
        return self.e1 + (self.e2 if self.w2 is not None else 0)

    def z(self, sums: np.ndarray) -> np.ndarray:
        """Fixed-point adapter output for per-sample channel sums ``[N, C]`` -> ``[N]``."""
        h = sums.astype(np.int64) @ self.w1.T.astype(np.int64) + self.b1
        if self.w2 is None:
            return h[:, 0]
        h = np.maximum(h, 0)
        return (h @ self.w2.T.astype(np.int64) + self.b2)[:, 0]


@dataclass
class ActQuant:
    """An activation quantizer in integer form: codes in ``[lo, hi]``; real value ``code * value_step``
    (times the sample's ``beta`` for ASQ)."""

    kind: str                       # "lsq", "qil" or "asq"
    bits: int
    lo: int
    hi: int
    scale: float                    # a: code = round(a * x + b) (before clipping)
    zero: float                     # b
    value_step: float               # real value of one code step (ASQ: times beta)
    value_frac: int                 # fraction bits of v for this quantizer
    adapter: Adapter | None = None

    def quantize_real(self, x: np.ndarray, beta: np.ndarray | None = None) -> np.ndarray:
        """Codes of a real tensor (the network input), float64."""
        t = self.scale * np.asarray(x, dtype=np.float64) + self.zero
        if beta is not None:
            t = t / beta.reshape((-1,) + (1,) * (t.ndim - 1))
        return np.clip(np.floor(t + 0.5), self.lo, self.hi).astype(np.int64)


@dataclass
class Stage:
    """One quantized layer and everything up to the next quantizer."""

    name: str
    kind: str                       # "conv" or "linear"
    weight_format: str              # "post" or "table"
    weights: np.ndarray             # post: codes [O, I/g, kh, kw] / [O, I]; table: integer weights
    wbits: int
    frac_bits: int                  # product fraction bits (post) or 0 (table)
    stride: int = 1
    padding: int = 0
    groups: int = 1
    input_beta: bool = False        # input codes came from an ASQ quantizer
    mult: np.ndarray = None         # [O]
    shift: np.ndarray = None        # [O]
    offset: np.ndarray = None       # [O]
    relu: bool = False
    relu_floor: int = 0
    post_ops: list = field(default_factory=list)   # ("maxpool", k, stride, pad) / ("flatten",)
    out: ActQuant | None = None     # None: final layer (logits)
    value_frac: int = 0


@dataclass
class IntGraph:
    """An exported model: the input quantizer, the stages, provenance."""

    input_quant: ActQuant
    input_shape: tuple
    stages: list
    meta: dict


@dataclass
class FloatRun:
    codes: list                     # codes[i]: input codes of quantized layer i in the float model
    betas: list                     # betas[i]: fixed-point beta of an ASQ input quantizer, else None
    logits: np.ndarray


@dataclass
class GraphRun:
    codes: list                     # codes[i]: input codes of stage i, [N, ...]
    betas: list                     # betas[i]: per-sample beta (fixed) of stage i's input, or None
    logits: np.ndarray              # [N, classes], units 2**-8 of the last stage's reference
    predictions: np.ndarray


# --- export ----------------------------------------------------------------------

def _chain(model: nn.Module) -> list:
    if isinstance(model, DigitsCNN):
        return list(model.features) + ["flatten", model.fc]
    if isinstance(model, DigitsMLP):
        items = ["flatten"]
        for i, layer in enumerate(model.layers):
            items.append(layer)
            if i < len(model.layers) - 1:
                items.append(nn.ReLU())
        return items
    name = getattr(model, "model_name", type(model).__name__)
    raise ExportError(f"integer export supports the digits MLP and CNN (chains of conv/linear, BN, ReLU, "
                      f"max pooling); {name!r} has residual adds, which export v2 does not cover yet")


def _act_quant(q: nn.Module, where: str) -> ActQuant:
    if not bool(getattr(q, "initialized", torch.tensor(False))):
        raise ExportError(f"{where}: activation quantizer never saw data; train (or run) the model first")
    if isinstance(q, ASQActQuantizer):
        if q.adapter.factor not in arith.ASQ_FACTORS:
            raise ExportError(f"{where}: ASQ factor {q.adapter.factor!r} has no integer form; use one of "
                              f"{', '.join(arith.ASQ_FACTORS)}")
        s = float(q.step.detach())
        return ActQuant("asq", q.bits, int(q.qmin), int(q.qmax), 1.0 / s, 0.0, s, arith.ASQ_VALUE_FRAC)
    if isinstance(q, LSQActQuantizer):
        if q.per_channel:
            raise ExportError(f"{where}: per-channel activation steps are not supported by the integer graph")
        if q.qmin < 0:
            raise ExportError(f"{where}: signed activations are not supported by the integer graph")
        s = float(q.step.detach())
        return ActQuant("lsq", q.bits, int(q.qmin), int(q.qmax), 1.0 / s, 0.0, s, 0)
    if isinstance(q, QILActQuantizer):
        c, d = (float(t.detach()) for t in q.interval())
        a = q.qd / (2.0 * d)
        return ActQuant("qil", q.bits, 0, int(q.qd), a, -(c - d) * a, 1.0 / q.qd, 0)
    raise ExportError(f"{where}: activation quantizer {type(q).__name__} has no integer form "
                      f"(supported: lsq, qil, asq; 'fp' layers cannot run on integer hardware)")


def _weights(layer, where: str, frac_bits: int = arith.DEFAULT_FRAC_BITS):
    """``(format, integer weights or codes, real value of one unit per output channel [O], frac_bits)``."""
    q = layer.weight_quant
    if not bool(getattr(q, "initialized", torch.tensor(False))):
        raise ExportError(f"{where}: weight quantizer never saw the weights; train the model first")
    with torch.no_grad():
        w = layer.weight.detach()
        if not torch.all(torch.isfinite(w)):
            raise ExportError(f"{where}: weights contain NaN or inf; refusing to export them")
        wq = q(w).to(torch.float64).numpy()
    out_ch = wq.shape[0]
    if isinstance(q, POSTWeightQuantizer):
        codes = q.codes(w)
        alpha = np.broadcast_to(q.alpha.detach().to(torch.float64).numpy(), (out_ch,)).copy()
        frac = arith.check_frac_bits(frac_bits)
        return "post", codes.astype(np.int64), alpha * 2.0 ** -frac, frac
    if isinstance(q, SignMagnitudeWeightQuantizer):
        scale = np.broadcast_to(q.alpha.detach().to(torch.float64).numpy(), (out_ch,)).copy()
    elif isinstance(q, LSQWeightQuantizer):
        scale = np.broadcast_to(q.step.detach().to(torch.float64).numpy() * q.qmax, (out_ch,)).copy()
    elif isinstance(q, QILWeightQuantizer):
        scale = np.ones(out_ch)
    else:
        raise ExportError(f"{where}: weight quantizer {type(q).__name__} has no integer form "
                          f"(supported: post, pot, apot, uniform, qil; 'fp' cannot run on integer hardware)")
    try:
        _, unit = arith.integer_levels(q.levels().numpy())
    except arith.ArithError as exc:
        raise ExportError(f"{where}: {exc}") from None
    step = scale * unit                                            # real value of integer weight 1
    ints = np.floor(wq / step.reshape((-1,) + (1,) * (wq.ndim - 1)) + 0.5)
    err = np.abs(ints * step.reshape((-1,) + (1,) * (wq.ndim - 1)) - wq)
    if np.max(err, initial=0.0) > 1e-4 * max(float(np.max(step)), 1e-30):
        raise ExportError(f"{where}: quantized weights are not integer multiples of the level unit "
                          f"(max error {np.max(err):.3g}); the quantizer's levels are inconsistent")
    return "table", ints.astype(np.int64), step, 0


def _bn(bn: nn.BatchNorm2d | nn.BatchNorm1d):
    g = (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).numpy()
    h = (bn.bias.detach().double() - bn.running_mean.double() * torch.from_numpy(g)).numpy()
    return g, h


def _adapter(q: ASQActQuantizer, act: ActQuant, positions: int, where: str) -> Adapter:
    """Fold ``1 / (positions * 2**value_frac) * step`` into the first adapter layer and go fixed point."""
    ad = q.adapter
    first = ad.hidden if ad.hidden is not None else ad.out
    w1f = first.weight.detach().double().numpy() * act.value_step / (positions * 2.0 ** act.value_frac)
    b1f = first.bias.detach().double().numpy()
    for t, what in ((w1f, "weights"), (b1f, "biases")):
        if not np.all(np.isfinite(t)):
            raise ExportError(f"{where}: ASQ adapter {what} contain NaN or inf; refusing to export them")
    e1 = arith.adapter_weight_exponent(w1f)
    w1 = np.floor(w1f * 2.0 ** e1 + 0.5).astype(np.int64)
    b1 = np.floor(b1f * 2.0 ** e1 + 0.5).astype(np.int64)
    if ad.hidden is None:
        return Adapter(w1, b1, e1, None, None, 0, ad.factor)
    w2f = ad.out.weight.detach().double().numpy()
    b2f = ad.out.bias.detach().double().numpy()
    e2 = arith.adapter_weight_exponent(w2f)
    w2 = np.floor(w2f * 2.0 ** e2 + 0.5).astype(np.int64)
    b2 = np.floor(b2f * 2.0 ** (e1 + e2) + 0.5).astype(np.int64)
    return Adapter(w1, b1, e1, w2, b2, e2, ad.factor)


@torch.no_grad()
def export_graph(model: nn.Module, input_shape=None, frac_bits: int = arith.DEFAULT_FRAC_BITS) -> IntGraph:
    """Integer stages of a trained (eval-mode) digits MLP or CNN. Raises :class:`ExportError`.

    ``frac_bits`` is the POST product's fraction bits ``F`` (the √2 LUT precision).
    """
    items = _chain(model)
    layers = [m for m in items if isinstance(m, (QConv2d, QLinear))]
    if not layers:
        raise ExportError("model has no quantized conv/linear layer")
    input_shape = tuple(input_shape or getattr(model, "input_shape", None) or ())
    acts = [_act_quant(l.act_quant, f"layer {i} ({type(l).__name__})") for i, l in enumerate(layers)]
    if not input_shape:
        raise ExportError("input shape unknown: pass input_shape=(C, H, W) or (features,)")
    # spatial positions each quantizer sees (for the ASQ global average pool)
    positions = _positions(model, input_shape, layers)
    stages, li = [], -1
    cur = None
    for item in items:
        if isinstance(item, (QConv2d, QLinear)):
            li += 1
            where = f"layer {li} ({type(item).__name__})"
            fmt, w, unit, frac = _weights(item, where, frac_bits)
            cur = Stage(name=f"layer{li}", kind="conv" if isinstance(item, QConv2d) else "linear",
                        weight_format=fmt, weights=w, wbits=int(item.weight_quant.bits), frac_bits=frac,
                        input_beta=acts[li].kind == "asq")
            if isinstance(item, QConv2d):
                if item.stride[0] != item.stride[1] or item.padding[0] != item.padding[1] \
                        or item.kernel_size[0] != item.kernel_size[1] or item.dilation != (1, 1):
                    raise ExportError(f"{where}: only square kernels, equal strides/paddings, no dilation")
                cur.stride, cur.padding, cur.groups = item.stride[0], item.padding[0], item.groups
            cur._u = acts[li].value_step * unit            # real value of one acc unit per channel
            cur._bias = (item.bias.detach().double().numpy() if item.bias is not None
                         else np.zeros(w.shape[0]))
            cur._g, cur._h = np.ones(w.shape[0]), np.zeros(w.shape[0])
            stages.append(cur)
        elif isinstance(item, (nn.BatchNorm2d, nn.BatchNorm1d)):
            if cur is None or cur.relu or cur.post_ops:
                raise ExportError("batch norm must directly follow a conv/linear layer")
            g, h = _bn(item)
            cur._g, cur._h = cur._g * g, cur._h * g + h
        elif isinstance(item, nn.ReLU):
            if cur is None:
                raise ExportError("ReLU before the first quantized layer is not supported")
            cur.relu = True
        elif isinstance(item, nn.MaxPool2d):
            k, s, p = (item.kernel_size, item.stride, item.padding)
            k, s, p = (v if isinstance(v, int) else v[0] for v in (k, s, p))
            if item.dilation not in (1, (1, 1)) or item.ceil_mode:
                raise ExportError("max pooling with dilation or ceil_mode is not supported")
            if cur is None:
                raise ExportError("pooling before the first quantized layer is not supported")
            cur.post_ops.append(("maxpool", int(k), int(s), int(p)))
        elif item == "flatten":
            if cur is not None:
                cur.post_ops.append(("flatten",))
        else:
            raise ExportError(f"op {type(item).__name__} is not supported by the integer graph")
    # fold each stage's affine map into the next quantizer (or the logits)
    for i, st in enumerate(stages):
        u, g, h, b = st._u, st._g, st._h, st._bias
        if i + 1 < len(stages):
            nxt = acts[i + 1]
            if nxt.kind == "asq":
                nxt.adapter = _adapter(layers[i + 1].act_quant, nxt, positions[i + 1], f"layer {i + 1}")
            a, z, vf = nxt.scale, nxt.zero, nxt.value_frac
            st.out = nxt
        else:
            a, z, vf = 1.0 / float(np.max(np.abs(g * u))), 0.0, LOGIT_FRAC
        ratio = g * u * a * 2.0 ** vf
        if st.input_beta:                       # acc carries ASQ_ACC_FRAC fraction bits after apply_beta
            ratio = ratio * 2.0 ** -arith.ASQ_ACC_FRAC
        real_off = (g * b * a + h * a + z) * 2.0 ** vf
        mults, shifts = zip(*(arith.signed_multiplier(float(r)) for r in ratio))
        st.mult, st.shift = np.array(mults, dtype=np.int64), np.array(shifts, dtype=np.int64)
        st.offset = np.array([arith.rescale_offset(float(o), int(s)) for o, s in zip(real_off, st.shift)],
                             dtype=np.int64)
        st.value_frac = vf
        st.relu_floor = int(math.floor(z * 2.0 ** vf + 0.5)) if st.relu else 0
        for attr in ("_u", "_bias", "_g", "_h"):
            delattr(st, attr)
    in_q = acts[0]
    if in_q.kind == "asq":
        in_q.adapter = layers[0].act_quant          # float adapter on the real input (host side)
    meta = {"model": getattr(model, "model_name", type(model).__name__),
            "weight_quant": getattr(model, "weight_quant_name", None),
            "act_quant": getattr(model, "act_quant_name", None)}
    return IntGraph(input_quant=in_q, input_shape=input_shape, stages=stages, meta=meta)


def _positions(model, input_shape, layers) -> list[int]:
    """Elements per channel of each quantized layer's input (1 for linear layers)."""
    seen = {}
    hooks = [l.register_forward_pre_hook(lambda m, inp, i=i: seen.__setitem__(i, inp[0].shape))
             for i, l in enumerate(layers)]
    flags = [l.quant_enabled for l in layers]
    was_training = model.training
    try:
        for l in layers:
            l.quant_enabled = False
        model.eval()
        model(torch.zeros((1,) + tuple(input_shape)))
    finally:
        for h in hooks:
            h.remove()
        for l, f in zip(layers, flags):
            l.quant_enabled = f
        model.train(was_training)
    return [int(np.prod(seen[i][2:])) if len(seen[i]) > 2 else 1 for i in range(len(layers))]


# --- execution -------------------------------------------------------------------

def _im2col(x: np.ndarray, k: int, stride: int, pad: int) -> tuple[np.ndarray, int, int]:
    """``[N, C, H, W]`` -> ``[N, OH, OW, C, k, k]`` patches (zero padding = code 0)."""
    n, c, h, w = x.shape
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    sn, sc, sh, sw = x.strides
    cols = np.lib.stride_tricks.as_strided(x, (n, oh, ow, c, k, k), (sn, sh * stride, sw * stride, sc, sh, sw))
    return cols, oh, ow


def _matmul_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer ``a @ b`` through float64, exact while every partial sum stays below 2**53."""
    bound = float(np.max(np.abs(a), initial=0)) * float(np.max(np.abs(b), initial=0)) * a.shape[-1]
    if bound >= 2.0 ** 52:
        return a.astype(np.int64) @ b.astype(np.int64)
    return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def _dot(st: Stage, x: np.ndarray, abits: int) -> np.ndarray:
    """``acc[n, o] = sum_k product(x[n, k], w[o, k])``; x ``[M, K]``, weights ``[O, K]``."""
    w = st.weights.reshape(st.weights.shape[0], -1)
    if st.weight_format == "table":
        return _matmul_exact(x, w.T)
    table = arith.product_table(st.wbits, abits, st.frac_bits)      # [2**abits, 2**wbits]
    acc = np.zeros((x.shape[0], w.shape[0]), dtype=np.int64)
    for code in np.unique(w):
        if code & ((1 << (st.wbits - 1)) - 1) == 0:
            continue                                                 # zero weight
        acc += _matmul_exact(table[x, code], (w == code).T.astype(np.int64))
    return acc


def _accumulate(st: Stage, x: np.ndarray, abits: int) -> np.ndarray:
    if st.kind == "linear":
        return _dot(st, x.reshape(x.shape[0], -1), abits)
    o, cg, k, _ = st.weights.shape
    cols, oh, ow = _im2col(x, k, st.stride, st.padding)
    n, g = x.shape[0], st.groups
    out = np.empty((n, o, oh, ow), dtype=np.int64)
    og = o // g
    for gi in range(g):
        sub = Stage(**{**st.__dict__, "weights": st.weights[gi * og:(gi + 1) * og], "post_ops": []})
        patches = cols[:, :, :, gi * cg:(gi + 1) * cg].reshape(n * oh * ow, cg * k * k)
        out[:, gi * og:(gi + 1) * og] = _dot(sub, patches, abits).reshape(n, oh, ow, og).transpose(0, 3, 1, 2)
    return out


def _maxpool(v: np.ndarray, k: int, s: int, p: int) -> np.ndarray:
    if p:
        v = np.pad(v, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=np.iinfo(np.int64).min)
    n, c, h, w = v.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    sn, sc, sh, sw = v.strides
    win = np.lib.stride_tricks.as_strided(v, (n, c, oh, ow, k, k), (sn, sc, sh * s, sw * s, sh, sw))
    return win.max(axis=(4, 5))


def _asq_codes(v: np.ndarray, q: ActQuant):
    """ASQ: integer adapter on the per-channel sums of ``v``, then the factor tables."""
    sums = v.reshape(v.shape[0], v.shape[1], -1).sum(axis=2) if v.ndim > 2 else v
    z = q.adapter.z(sums)
    idx = arith.asq_z_index(z, q.adapter.z_frac)
    beta_t, inv_t = arith.asq_tables(q.adapter.factor)
    beta, inv = beta_t[idx], inv_t[idx]
    shape = (-1,) + (1,) * (v.ndim - 1)
    return arith.asq_quantize(v, inv.reshape(shape), q.value_frac, q.hi), beta


def _input_codes(graph: IntGraph, X: np.ndarray):
    q = graph.input_quant
    x = np.asarray(X, dtype=np.float64).reshape((-1,) + tuple(graph.input_shape))
    if not np.all(np.isfinite(x)):
        raise ValueError("input contains NaN or inf")
    if q.kind != "asq":
        return q.quantize_real(x), None
    with torch.no_grad():          # the input adapter runs on the host, in float, on the z grid
        ad = q.adapter.adapter
        z = ad.logit(torch.from_numpy(x).float()).double().numpy()
    idx = arith.asq_z_index(np.floor(z * 2.0 ** 24 + 0.5).astype(np.int64), 24)
    beta_t, _ = arith.asq_tables(ad.factor)
    beta = beta_t[idx]
    return q.quantize_real(x, beta / 2.0 ** arith.ASQ_BETA_FRAC), beta


def run_stage(st: Stage, x: np.ndarray, beta: np.ndarray | None, in_bits: int):
    """One stage on its input codes ``x`` (and per-sample fixed-point ``beta`` if they came from ASQ).

    Returns ``(codes, beta)`` of the next quantizer, or ``(logits, None)`` for the final stage.
    """
    acc = _accumulate(st, x, in_bits)
    if st.input_beta:
        if beta is None:
            raise ValueError(f"{st.name}: input codes came from an ASQ quantizer; pass their beta")
        acc = arith.apply_beta(acc, np.asarray(beta).reshape((-1,) + (1,) * (acc.ndim - 1)))
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    v = arith.rescale(acc, st.mult.reshape(shape), st.offset.reshape(shape), st.shift.reshape(shape))
    if st.relu:
        v = np.maximum(v, st.relu_floor)
    for op in st.post_ops:
        v = _maxpool(v, *op[1:]) if op[0] == "maxpool" else v.reshape(v.shape[0], -1)
    if st.out is None:
        return v, None
    if st.out.kind == "asq":
        return _asq_codes(v, st.out)
    return arith.quantize_value(v, st.value_frac, st.out.lo, st.out.hi), None


def stage_input_bits(graph: IntGraph, i: int) -> int:
    """Code width of stage ``i``'s input."""
    return graph.input_quant.bits if i == 0 else graph.stages[i - 1].out.bits


def run_graph(graph: IntGraph, X) -> GraphRun:
    """Run real inputs ``X`` (``[N, *input_shape]`` or flattened) through the integer stages."""
    x, beta = _input_codes(graph, X)
    codes, betas = [], []
    for i, st in enumerate(graph.stages):
        codes.append(x)
        betas.append(beta)
        x, beta = run_stage(st, x, beta, stage_input_bits(graph, i))
    return GraphRun(codes, betas, x, np.argmax(x, axis=1))


def integer_accuracy(model: nn.Module, X, y) -> float:
    """Test accuracy of ``model`` exported to the integer graph (raises :class:`ExportError`)."""
    model.eval()
    run = run_graph(export_graph(model), X)
    return float((run.predictions == np.asarray(y)).mean())


@torch.no_grad()
def float_codes(model: nn.Module, X) -> "FloatRun":
    """The codes each quantized layer's activation quantizer produces in the float model, the per-sample
    ASQ factors (fixed point, ``2**-ASQ_BETA_FRAC``; None for other quantizers) and the logits."""
    items = _chain(model)
    layers = [m for m in items if isinstance(m, (QConv2d, QLinear))]
    got, betas = {}, {}

    def hook(i):
        def f(module, inp):
            q = module.act_quant
            got[i] = q.codes(inp[0]).numpy()
            if isinstance(q, ASQActQuantizer):
                b = q.adapter(inp[0]).double().numpy()
                betas[i] = np.floor(b * 2.0 ** arith.ASQ_BETA_FRAC + 0.5).astype(np.int64)
        return f

    hooks = [l.register_forward_pre_hook(hook(i)) for i, l in enumerate(layers)]
    model.eval()
    try:
        x = torch.as_tensor(np.asarray(X, dtype=np.float32)).reshape((-1,) + tuple(model.input_shape))
        logits = model(x).numpy()
    finally:
        for h in hooks:
            h.remove()
    return FloatRun([got[i] for i in range(len(layers))], [betas.get(i) for i in range(len(layers))], logits)

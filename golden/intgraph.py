"""The integer graph's data types, the stage arithmetic, and the PyTorch-side integer walk.

One exported form exists: the integer DAG of :mod:`golden.intdag` (:func:`golden.intdag.export_dag`,
executed by :func:`golden.intdag.run_graph`, the golden model; stored by :mod:`golden.graphfile`).
This module holds what it is made of -- :class:`ActQuant`, :class:`Adapter`, :class:`Stage`,
:class:`IntGraph`, the conversion of a trained layer's quantizers and weights to integers
(``_act_quant``, ``_weights``, ``_adapter``, ``_bn``) and a stage's accumulation
(:func:`stage_acc`: √2-LUT products for POST weights, integer level tables for the others).

:func:`run_dag` walks a trained PyTorch model node by node in the same integer arithmetic; it is the
*float-side reference* of the tests, which compare it with the float model
(:func:`float_codes_by_name`) and with :func:`golden.intdag.run_graph` on the exported file. It is
not a second golden model: the engine's expected outputs come from ``golden.intdag.run_graph`` only.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
from torch import nn

from . import arith
from .quant.asq import ASQActQuantizer
from .quant.lsq import LSQActQuantizer, LSQWeightQuantizer
from .quant.power import POSTWeightQuantizer, SignMagnitudeWeightQuantizer
from .quant.qil import QILActQuantizer, QILWeightQuantizer
from .zoo import QConv2d, QLinear
from .errors import InputError

__all__ = ["ExportError", "ActQuant", "Adapter", "Stage", "IntGraph", "GraphRun", "FloatRun", "stage_acc",
           "run_dag", "DagRun", "float_codes_by_name", "trace"]



class ExportError(InputError):
    """The model (or one of its quantizers) cannot be expressed in integer form; the message says why."""


@dataclass
class Adapter:
    """An ASQ adapter in fixed point (see ``docs/arithmetic.md``).

    ``H = w1 @ S + b1`` (units ``2**-e1``) with ``S`` the adapter input of :func:`golden.arith.asq_sums`;
    ``h = relu(H) >> h_shift``; ``z = w2 @ h + b2`` (units ``2**-(e1+e2-h_shift)``); 1-layer adapters have
    ``w2 = None`` and ``z = H >> h_shift``. ``factor`` names the ``beta(z)`` table.
    """

    w1: np.ndarray
    b1: np.ndarray
    e1: int
    w2: np.ndarray | None
    b2: np.ndarray | None
    e2: int
    factor: str
    h_shift: int = 0

    @property
    def z_frac(self) -> int:
        return self.e1 + (self.e2 if self.w2 is not None else 0) - self.h_shift

    def z(self, sums: np.ndarray) -> np.ndarray:
        """Fixed-point adapter output for per-sample adapter inputs ``[N, C]`` -> ``[N]`` (:func:`golden.arith.adapter_z`)."""
        return arith.adapter_z(sums, self.w1, self.b1, self.w2, self.b2, self.h_shift)


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
    mult: np.ndarray = None         # [O] signed, |mult| < 2**MULT_BITS
    shift: np.ndarray = None        # [O]
    bias: np.ndarray = None         # [O] value units, |bias| < 2**(BIAS_BITS-1)
    acc_shift: int = 0              # the rescale operand is acc >> acc_shift (golden.arith.stage_value)
    relu: bool = False
    relu_floor: int = 0
    post_ops: list = field(default_factory=list)   # ("maxpool", k, stride, pad) / ("flatten",)
    out: ActQuant | None = None     # None: final layer (logits)
    value_frac: int = 0
    # DAG graphs (golden.intdag): where the input codes come from and how they are made
    input_from: str | None = None   # None: the previous stage (chain); "input"; or a stage's name
    in_quant: ActQuant | None = None  # the quantizer of this stage's input (DAG; chain: the producer's ``out``)
    in_mult: int = 0                # source value -> quantizer units: rescale(v, in_mult, in_offset, in_shift)
    in_shift: int = 1
    in_offset: int = 0
    residual: tuple | None = None   # (stage name, mult, shift): v += align_value(its value, mult, shift)
    value_unit: float = 0.0         # DAG: real value of one unit of the stage's output value


@dataclass
class IntGraph:
    """An exported model: the input quantizer, the stages, provenance."""

    input_quant: ActQuant
    input_shape: tuple
    stages: list
    meta: dict
    kind: str = "dag"               #: always "dag" (golden.intdag.export_dag); kept for the file's loader
    output: str | None = None       #: DAG: the stage whose value is the logits
    provenance: dict = field(default_factory=dict)  #: from the model file (training spec, data set), if any


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
    accs: list = field(default_factory=list)    # accs[i]: stage i's sums of products [N, O, ...] (before the rescale)
    values: list = field(default_factory=list)  # values[i]: stage i's value after rescale (+ residual), ReLU, pooling,
    #                                             flatten: the pre-quantization integers its consumers quantize


# --- export ----------------------------------------------------------------------

def _act_quant(q: nn.Module, where: str) -> ActQuant:
    if not bool(getattr(q, "initialized", torch.tensor(False))):
        raise ExportError(f"{where}: activation quantizer never saw data; train (or run) the model first")
    if isinstance(q, ASQActQuantizer):
        if q.adapter.factor not in arith.ASQ_FACTORS:
            raise ExportError(f"{where}: ASQ factor {q.adapter.factor!r} has no integer form; use one of "
                              f"{', '.join(arith.ASQ_FACTORS)}")
        s = _positive_step(q, where)
        return ActQuant("asq", q.bits, int(q.qmin), int(q.qmax), 1.0 / s, 0.0, s, arith.asq_value_frac(q.bits))
    if isinstance(q, LSQActQuantizer):
        if q.per_channel:
            raise ExportError(f"{where}: per-channel activation steps are not supported by the integer graph")
        if q.qmin < 0:
            raise ExportError(f"{where}: signed activations are not supported by the integer graph")
        s = _positive_step(q, where)
        return ActQuant("lsq", q.bits, int(q.qmin), int(q.qmax), 1.0 / s, 0.0, s, 0)
    if isinstance(q, QILActQuantizer):
        c, d = (float(t.detach()) for t in q.interval())
        if not (math.isfinite(c) and math.isfinite(d) and d > 0):
            raise ExportError(f"{where}: QIL interval (center {c!r}, half-width {d!r}) must be finite with a "
                              f"half-width > 0; refusing to export it")
        a = q.qd / (2.0 * d)
        return ActQuant("qil", q.bits, 0, int(q.qd), a, -(c - d) * a, 1.0 / q.qd, 0)
    raise ExportError(f"{where}: activation quantizer {type(q).__name__} has no integer form "
                      f"(supported: lsq, qil, asq; 'fp' layers cannot run on integer hardware)")


def rescale_params(ratios, real_offsets, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel ``(mult, shift, offset)`` int64 arrays of :func:`golden.arith.rescale` for real
    ``ratios`` and ``real_offsets`` (a value's re-expression in another unit: input quantizers,
    residual alignment); a non-finite or out-of-range channel raises :class:`ExportError` naming
    ``where`` and the channel."""
    mults, shifts, offsets = [], [], []
    for ch, (r, o) in enumerate(zip(np.asarray(ratios, dtype=np.float64).reshape(-1),
                                    np.asarray(real_offsets, dtype=np.float64).reshape(-1))):
        try:
            m, s = arith.signed_multiplier(float(r))
            if not math.isfinite(float(o)) or abs(float(o)) * 2.0 ** s >= 2.0 ** 40:
                raise arith.ArithError(f"offset {float(o)!r} (a zero point) does not fit 40 bits "
                                       f"after scaling by 2**{s}")
            off = arith.rescale_offset(float(o), s)
        except arith.ArithError as exc:
            raise ExportError(f"{where}, output channel {ch}: {exc}; refusing to export it") from None
        mults.append(m), shifts.append(s), offsets.append(off)
    return (np.array(mults, dtype=np.int64), np.array(shifts, dtype=np.int64),
            np.array(offsets, dtype=np.int64))


def _ratio_bits(factor: str | None) -> int:
    """log2 of the largest rescale ratio: every shift then stays >= 1, and with an ASQ factor on the input
    ``shift + beta_shift - FACTOR_MANT_BITS >= 1`` for every table entry (:func:`golden.arith.beta_multiplier`)."""
    if factor is None:
        return arith.MULT_BITS - 2
    return min(arith.MULT_BITS - 2, int(arith.factor_words(factor)[1].min()) - 2)


def value_params(scale, offset, bound: int, factor: str | None, where: str, unit: float | None = None):
    """The hardware-sized rescale of a stage whose accumulators satisfy ``|acc| <= bound``: ``(mult,
    shift, bias, acc_shift, unit)`` for :func:`golden.arith.stage_value`.

    ``unit`` (the real value of one value unit) is given by export for values that feed quantizers
    (``golden.intdag.consumer_units``); otherwise (the logits) it makes the worst-case value -- the
    largest accumulator contribution (times 2 for ASQ input codes with factor ``factor``) plus the
    largest offset -- :func:`golden.arith.value_unit_bound` units, so the logits never saturate. Either way it is at least the unit at which a rescale ratio reaches
    ``2**_ratio_bits(factor)``. ``bias`` is ``offset / unit`` rounded half up, clamped to
    :data:`golden.arith.BIAS_BITS`.
    """
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    offset = np.asarray(offset, dtype=np.float64).reshape(-1)
    peak = float(np.max(np.abs(scale), initial=0.0))
    if not (math.isfinite(peak) and np.all(np.isfinite(offset))):
        raise ExportError(f"{where}: output scale or offset is not finite (a NaN or inf BN or quantizer "
                          f"parameter); refusing to export it")
    peak = peak if peak > 0 else 1.0
    acc_shift = arith.acc_shift_for(bound)
    if unit is None:
        unit = (peak * max(int(bound), 1) * (2.0 if factor is not None else 1.0)
                + float(np.max(np.abs(offset), initial=0.0))) / arith.value_unit_bound()
    unit = max(float(unit), peak * 2.0 ** (acc_shift - _ratio_bits(factor)))
    if not (math.isfinite(unit) and unit > 0):
        raise ExportError(f"{where}: value unit {unit!r} is not finite and positive; refusing to export it")
    mults, shifts = [], []
    for ch, r in enumerate(scale * 2.0 ** acc_shift / unit):
        try:
            m, sh = arith.signed_multiplier(float(r))
        except arith.ArithError as exc:
            raise ExportError(f"{where}, output channel {ch}: {exc}; refusing to export it") from None
        mults.append(m), shifts.append(sh)
    top = (1 << (arith.BIAS_BITS - 1)) - 1
    bias = np.clip(np.floor(offset / unit + 0.5), -top, top).astype(np.int64)
    return (np.array(mults, dtype=np.int64), np.array(shifts, dtype=np.int64), bias, acc_shift, unit)


def acc_bound(kind: str, weight_format: str, weights: np.ndarray, wbits: int, frac_bits: int, xmax: int,
              abits: int) -> int:
    """Largest ``|acc|`` of a layer over every input with ``|code| <= xmax``: ``max_o sum_k |product(xmax,
    w[o, k])|`` (POST products are monotonic in ``|x|``; integer weights: ``xmax * sum |w|``)."""
    w = np.asarray(weights, dtype=np.int64).reshape(np.shape(weights)[0], -1)
    if weight_format == "table":
        return int(np.max(np.abs(w).sum(axis=1), initial=0)) * int(xmax)
    mags = np.abs(arith.product_table(wbits, abits, frac_bits)[int(xmax)])     # per code
    return int(np.max(mags[w].sum(axis=1), initial=0))


def _factor_name(q: "ActQuant") -> str:
    """The factor function of an ASQ quantizer's adapter (integer or the host's float adapter)."""
    ad = q.adapter
    return ad.factor if isinstance(ad, Adapter) else ad.adapter.factor


def stage_bound(st: "Stage", q: "ActQuant") -> int:
    """:func:`acc_bound` of stage ``st`` for input codes of quantizer ``q``."""
    return acc_bound(st.kind, st.weight_format, st.weights, st.wbits, st.frac_bits, max(abs(q.lo), abs(q.hi)),
                     q.bits)


def _positive_step(q, where: str) -> float:
    """The quantizer's (scalar) step, refused unless finite and > 0 (a zero step divides by zero, a negative
    one gives a model the loader refuses)."""
    s = float(q.step.detach())
    if not (math.isfinite(s) and s > 0):
        raise ExportError(f"{where}: activation step {s!r} must be finite and > 0; refusing to export it")
    return s


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
    """The adapter in fixed point: its input is :func:`golden.arith.asq_sums` of the prescaled value
    (``|S| <= 2**15``, ``S * 2**pool_shift(P) / P`` the channel mean in units ``step / 2**value_frac``),
    so ``step * 2**pool_shift / (P * 2**value_frac)`` folds into the first layer; exponents from
    :func:`golden.arith.adapter_layer_exponent` keep every accumulator in 32 bits and ``h_shift`` every
    hidden unit in a 16-bit multiplier operand."""
    ad = q.adapter
    first = ad.hidden if ad.hidden is not None else ad.out
    ps = arith.pool_shift(positions)
    w1f = first.weight.detach().double().numpy() * act.value_step * 2.0 ** ps / (positions * 2.0 ** act.value_frac)
    b1f = first.bias.detach().double().numpy()
    w2f = b2f = None
    if ad.hidden is not None:
        w2f = ad.out.weight.detach().double().numpy()
        b2f = ad.out.bias.detach().double().numpy()
    for t, what in ((w1f, "weights w1"), (b1f, "biases b1"), (w2f, "weights w2"), (b2f, "biases b2")):
        if t is not None and not np.all(np.isfinite(t)):
            raise ExportError(f"{where}: ASQ adapter {what} contain NaN or inf; refusing to export them")
    in_bound = 1 << (arith.VALUE_BITS - 1)
    try:
        e1 = arith.adapter_layer_exponent(w1f, b1f, in_bound)
    except arith.ArithError as exc:
        raise ExportError(f"{where}: ASQ adapter layer 1: {exc}") from None
    w1 = np.floor(w1f * 2.0 ** e1 + 0.5).astype(np.int64)
    b1 = np.floor(b1f * 2.0 ** e1 + 0.5).astype(np.int64)
    h_bound = int(np.max(np.abs(w1).sum(axis=1) * in_bound + np.abs(b1), initial=0))
    h_shift = max(0, h_bound.bit_length() - (arith.ADAPTER_WEIGHT_BITS - 1))
    if ad.hidden is None:
        if e1 - h_shift < arith.ASQ_Z_FRAC:
            raise ExportError(f"{where}: ASQ adapter weights w1 / biases b1 (max |b1| {np.max(np.abs(b1f)):.3g}) leave "
                              f"z only {e1 - h_shift} fraction bits in 32-bit fixed point, fewer than the factor "
                              f"grid's {arith.ASQ_Z_FRAC}; refusing to export them")
        return Adapter(w1, b1, e1, None, None, 0, ad.factor, h_shift)
    try:
        e2 = arith.adapter_layer_exponent(w2f, b2f, h_bound >> h_shift, e1 - h_shift)
    except arith.ArithError as exc:
        raise ExportError(f"{where}: ASQ adapter layer 2: {exc}") from None
    if not np.any(w2f) and not np.any(b2f):           # z = 0 (an untrained adapter): any exponent is exact
        e2 = max(e2, arith.ASQ_Z_FRAC - e1 + h_shift)
    if e1 + e2 - h_shift < arith.ASQ_Z_FRAC:
        raise ExportError(f"{where}: ASQ adapter weights w2 / biases b2 (max |w2| {np.max(np.abs(w2f)):.3g}, "
                          f"max |b2| {np.max(np.abs(b2f)):.3g}) leave z only {e1 + e2 - h_shift} fraction bits in "
                          f"32-bit fixed point, fewer than the factor grid's {arith.ASQ_Z_FRAC}; refusing to export them")
    w2 = np.floor(w2f * 2.0 ** e2 + 0.5).astype(np.int64)
    b2 = np.floor(b2f * 2.0 ** (e1 + e2 - h_shift) + 0.5).astype(np.int64)
    return Adapter(w1, b1, e1, w2, b2, e2, ad.factor, h_shift)


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
    codes = np.unique(w)
    if x.shape[0] * w.size <= len(codes) * (x.size + w.size):      # few rows: gather directly
        chunk = max(1, (1 << 24) // max(1, w.size))
        for i in range(0, x.shape[0], chunk):
            acc[i:i + chunk] = table[x[i:i + chunk, None, :], w[None, :, :]].sum(axis=-1)
        return acc
    for code in codes:
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
    if cg == 1 and g == o:                        # depthwise: one input channel per output channel
        patches = cols.reshape(n, oh, ow, o, k * k)
        w = st.weights.reshape(o, k * k)
        if st.weight_format == "table":
            prod = patches * w
        else:
            prod = arith.product_table(st.wbits, abits, st.frac_bits)[patches, w]
        return prod.sum(axis=-1).transpose(0, 3, 1, 2)
    out = np.empty((n, o, oh, ow), dtype=np.int64)
    og = o // g
    for gi in range(g):
        sub = Stage(**{**st.__dict__, "weights": st.weights[gi * og:(gi + 1) * og], "post_ops": []})
        patches = cols[:, :, :, gi * cg:(gi + 1) * cg].reshape(n * oh * ow, cg * k * k)
        out[:, gi * og:(gi + 1) * og] = _dot(sub, patches, abits).reshape(n, oh, ow, og).transpose(0, 3, 1, 2)
    return out


def _asq_codes(v: np.ndarray, q: ActQuant):
    """ASQ: integer adapter on the per-channel sums of ``v``, then the factor tables."""
    z = q.adapter.z(arith.asq_sums(v))
    idx = arith.asq_z_index(z, q.adapter.z_frac)
    beta_t, inv_t = arith.asq_tables(q.adapter.factor)
    beta, inv = beta_t[idx], inv_t[idx]
    shape = (-1,) + (1,) * (v.ndim - 1)
    return arith.asq_quantize(v, inv.reshape(shape), q.value_frac, q.hi), beta


def _real_codes(q: ActQuant, module, x: np.ndarray):
    """Codes of the real network input; an ASQ input adapter runs on the host, in float, on the z grid."""
    if q.kind != "asq":
        return q.quantize_real(x), None
    with torch.no_grad():
        ad = module.adapter
        z = ad.logit(torch.from_numpy(x).float()).double().numpy()
    idx = arith.asq_z_index(np.floor(z * 2.0 ** 24 + 0.5).astype(np.int64), 24)
    beta_t, _ = arith.asq_tables(ad.factor)
    beta = beta_t[idx]
    return q.quantize_real(x, beta / 2.0 ** arith.ASQ_BETA_FRAC), beta


# === DAG models: residual adds, depthwise convs, average pooling, ReLU6 ==========================
#
# ResNets and MobileNetV2 add un-quantized tensors (the identity path) and pool them, so the
# integer graph keeps such tensors as *values*: integers ``v`` with a real unit ``u`` per tensor
# (``v * u`` is the real value). A quantized layer turns its input value into codes with its own
# quantizer, accumulates, and its affine output (``acc * scale_c + offset_c``, batch norm folded)
# becomes a 16-bit saturating value (:func:`value_params`, :func:`golden.arith.stage_value`). Adds align
# the second operand to the first's unit; ReLU6 clips at ``round(6 / u)``; average pooling is
# :func:`golden.arith.sum_pool` (unit ``u * 2**sum_pool_shift(P) / P``). docs/arithmetic.md, "Integer
# DAG", is the prose version.



@dataclass
class _Value:
    v: np.ndarray
    unit: float
    raw: bool = False               # a fresh rescale not yet saturated (a residual add may follow)

    def done(self) -> np.ndarray:
        """The value as its consumers read it (saturated)."""
        return arith.saturate(self.v) if self.raw else self.v


@dataclass
class _Affine:
    acc: np.ndarray                 # integer accumulators [N, O, ...]
    scale: np.ndarray               # real value of one acc unit, per channel [O] (without the ASQ factor)
    offset: np.ndarray              # real offset per channel [O]
    bound: int = 0                  # largest |acc| over every input (golden.intgraph.acc_bound)
    beta: np.ndarray | None = None  # per-sample ASQ factor of the input codes (fixed point), or None
    factor: str | None = None       # the name of that factor's function
    name: str = ""                  # the quantized layer (a stage of the exported graph)
    value: _Value | None = None


@dataclass
class DagRun:
    codes: dict                     # quantized layer name -> its input codes
    betas: dict                     # name -> fixed-point beta (ASQ) or None
    logits: np.ndarray              # integer logits (value of the output node)
    logit_unit: float
    predictions: np.ndarray


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (QConv2d, QLinear, nn.BatchNorm2d, nn.BatchNorm1d, nn.ReLU, nn.ReLU6,
                              nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity)) \
            or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> torch.fx.Graph:
    """The model's dataflow graph (torch.fx), quantized layers and BN/ReLU/pooling as leaves."""
    try:
        return _Tracer().trace(model)
    except Exception as exc:                      # noqa: BLE001 - reported as an export error
        raise ExportError(f"cannot trace {type(model).__name__} into a dataflow graph: {exc}") from None


def _materialize(a: _Affine, units: dict) -> _Value:
    """Affine accumulator output -> the stage's (not yet saturated) value (:func:`value_params`, with the
    exported graph's unit of that stage where there is one)."""
    if a.value is not None:
        return a.value
    mult, shift, bias, acc_shift, unit = value_params(a.scale, a.offset, a.bound, a.factor, a.name,
                                                      units.get(a.name))
    a.value = _Value(arith.stage_value(a.acc, mult, shift, bias, acc_shift, a.beta), unit, raw=True)
    return a.value


def _align(x: _Value, unit: float) -> np.ndarray:
    """``x`` re-expressed in ``unit`` (round half up through a 16-bit multiplier)."""
    if x.unit == unit:
        return x.done()
    (m,), (s,), _ = rescale_params([x.unit / unit], [0.0], "residual alignment")
    return arith.align_value(x.done(), int(m), int(s))


def _codes_from_value(layer, x: _Value, where: str):
    """The layer's activation quantizer in integers: value -> codes (and the ASQ beta)."""
    q = _act_quant_any(layer.act_quant, where)
    if q.kind == "asq":
        w, s = arith.signed_multiplier(x.unit / q.value_step * 2.0 ** q.value_frac)
        vq = arith.prescale(x.done(), w, arith.rescale_offset(0.0, s), s)     # units step / 2**V
        positions = int(np.prod(vq.shape[2:])) if vq.ndim > 2 else 1
        q.adapter = _adapter(layer.act_quant, q, positions, where)
        codes, beta = _asq_codes(vq, q)
        return codes, beta, q
    (m,), (s,), (off,) = rescale_params([x.unit * q.scale], [q.zero], where)
    codes = arith.quantize_value(arith.rescale(x.done(), int(m), int(off), int(s)), 0, q.lo, q.hi)
    return codes, None, q


def _act_quant_any(q, where: str) -> ActQuant:
    """:func:`_act_quant` plus signed LSQ (MobileNetV2's linear-bottleneck inputs)."""
    from .quant.lsq import LSQQuantizer
    if isinstance(q, LSQQuantizer) and not isinstance(q, LSQActQuantizer) and q.signed:
        if not bool(q.initialized):
            raise ExportError(f"{where}: activation quantizer never saw data; run the model first")
        if q.per_channel:
            raise ExportError(f"{where}: per-channel activation steps are not supported by the integer graph")
        s = _positive_step(q, where)
        return ActQuant("lsq", q.bits, int(q.qmin), int(q.qmax), 1.0 / s, 0.0, s, 0)
    return _act_quant(q, where)


def _signed_dot(st: Stage, x: np.ndarray, abits: int) -> np.ndarray:
    """:func:`_dot` for codes that may be negative: POST products are sign-symmetric in ``x``."""
    if st.weight_format == "table" or not np.any(x < 0):
        return _dot(st, x, abits)
    pos, neg = np.where(x > 0, x, 0), np.where(x < 0, -x, 0)
    return _dot(st, pos, abits) - _dot(st, neg, abits)


def _layer_acc(layer, codes, bits, fmt, w, frac):
    st = Stage(name="", kind="conv" if isinstance(layer, QConv2d) else "linear", weight_format=fmt,
               weights=w, wbits=int(layer.weight_quant.bits), frac_bits=frac)
    if isinstance(layer, QConv2d):
        if layer.stride[0] != layer.stride[1] or layer.padding[0] != layer.padding[1] \
                or layer.kernel_size[0] != layer.kernel_size[1] or layer.dilation != (1, 1):
            raise ExportError("only square kernels, equal strides/paddings, no dilation")
        st.stride, st.padding, st.groups = layer.stride[0], layer.padding[0], layer.groups
    return stage_acc(st, codes, bits)


def stage_acc(st: Stage, codes: np.ndarray, bits: int) -> np.ndarray:
    """Accumulators of a stage for input codes of ``bits`` bits that may be negative (conv:
    ``[N, O, H, W]`` from ``[N, C, H, W]``; linear: ``[N, O]`` from any ``[N, ...]``)."""
    if st.kind == "conv":
        if np.any(codes < 0):                     # |x| <= 2**(bits-1) fits the table
            pos, neg = np.where(codes > 0, codes, 0), np.where(codes < 0, -codes, 0)
            return _accumulate(st, pos, bits) - _accumulate(st, neg, bits)
        return _accumulate(st, codes, bits)
    return _signed_dot(st, codes.reshape(codes.shape[0], -1), bits)


@torch.no_grad()
def run_dag(model: nn.Module, X, frac_bits: int = arith.DEFAULT_FRAC_BITS, force: "FloatRun | None" = None,
            units: dict | None = None) -> DagRun:
    """Run ``X`` through ``model`` in integer arithmetic, node by node of its dataflow graph: the
    PyTorch-side reference the tests compare with the float model and with the exported file's executor
    (:func:`golden.intdag.run_graph`, the golden model).

    Works for every zoo model (chains, ResNets, MobileNetV2). ``force`` (a :func:`float_codes_by_name`
    result) replaces each quantized layer's input codes and ASQ factor by the float model's, so
    that each layer's own arithmetic is compared in isolation (teacher forcing). ``units`` maps quantized
    layer names to value units (``golden.intdag.export_dag``'s ``value_unit`` per stage; the tests pass
    them so both walks choose the same units); layers not in it use :func:`value_params`' worst-case unit.
    """
    units = dict(units or {})
    model.eval()
    graph = trace(model)
    mods = dict(model.named_modules())
    env: dict = {}
    codes_out, betas_out = {}, {}
    x_in = np.asarray(X, dtype=np.float64)
    if not np.all(np.isfinite(x_in)):
        raise ValueError("input contains NaN or inf")
    shape = tuple(getattr(model, "input_shape", ()) or ())
    if shape:
        x_in = x_in.reshape((-1,) + shape)

    def val(a):
        return _materialize(a, units) if isinstance(a, _Affine) else a

    for node in graph.nodes:
        if node.op == "placeholder":
            env[node.name] = ("real", x_in)
            continue
        if node.op == "output":
            out = val(env[node.args[0].name])
            logits = out.done().reshape(out.v.shape[0], -1)
            return DagRun(codes_out, betas_out, logits, out.unit, np.argmax(logits, axis=1))
        args = [env[a.name] if isinstance(a, torch.fx.Node) else a for a in node.args]
        if node.op == "call_module":
            m = mods[node.target]
            where = node.target
            if isinstance(m, (QConv2d, QLinear)):
                src = args[0]
                if isinstance(src, tuple):                               # the network input
                    q = _act_quant_any(m.act_quant, where)
                    codes, beta = _real_codes(q, m.act_quant, src[1])
                else:
                    codes, beta, q = _codes_from_value(m, val(src), where)
                codes_out[where], betas_out[where] = codes, beta
                if force is not None:
                    codes, beta = force.codes[where], force.betas[where]
                fmt, w, unit, frac = _weights(m, where, frac_bits)
                acc = _layer_acc(m, codes, q.bits, fmt, w, frac)
                scale = q.value_step * unit
                bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(len(scale))
                bound = acc_bound("conv" if isinstance(m, QConv2d) else "linear", fmt, w, int(m.weight_quant.bits),
                                  frac, max(abs(q.lo), abs(q.hi)), q.bits)
                env[node.name] = _Affine(acc, np.asarray(scale, dtype=np.float64), bias, bound,
                                         None if beta is None else np.asarray(beta, dtype=np.int64),
                                         None if beta is None else m.act_quant.adapter.factor, where)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                a = args[0]
                if not isinstance(a, _Affine) or a.value is not None:
                    raise ExportError(f"{where}: batch norm must directly follow a conv/linear layer")
                g, h = _bn(m)
                env[node.name] = _Affine(a.acc, a.scale * g, a.offset * g + h, a.bound, a.beta, a.factor, a.name)
            elif isinstance(m, nn.ReLU6):
                x = val(args[0])
                env[node.name] = _Value(np.clip(x.done(), 0, int(math.floor(6.0 / x.unit + 0.5))), x.unit)
            elif isinstance(m, nn.ReLU):
                x = val(args[0])
                env[node.name] = _Value(np.maximum(x.done(), 0), x.unit)
            elif isinstance(m, nn.MaxPool2d):
                x = val(args[0])
                k, s, p = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding))
                env[node.name] = _Value(arith.pool2d(x.done(), int(k), int(s), int(p)), x.unit)
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                if m.output_size not in (1, (1, 1)):
                    raise ExportError(f"{where}: only global average pooling is supported")
                x = val(args[0])
                positions = int(np.prod(x.v.shape[2:]))
                env[node.name] = _Value(arith.sum_pool(x.done()), x.unit * 2.0 ** arith.sum_pool_shift(positions) / positions)
            elif isinstance(m, (nn.Dropout, nn.Identity)):
                env[node.name] = args[0]
            else:
                raise ExportError(f"{where}: module {type(m).__name__} has no integer form")
        elif node.op == "call_function":
            fn = node.target
            if fn in (torch.nn.functional.relu, torch.relu):
                x = val(args[0])
                env[node.name] = _Value(np.maximum(x.done(), 0), x.unit)
            elif fn in (torch.flatten,):
                if isinstance(args[0], tuple):
                    env[node.name] = ("real", args[0][1].reshape(args[0][1].shape[0], -1))
                else:
                    x = val(args[0])
                    env[node.name] = _Value(x.v.reshape(x.v.shape[0], -1), x.unit, x.raw)
            elif fn in (operator.add, torch.add):
                a, b = val(args[0]), val(args[1])
                env[node.name] = _Value(arith.saturate(a.v + _align(b, a.unit)), a.unit)
            else:
                raise ExportError(f"function {getattr(fn, '__name__', fn)} has no integer form")
        elif node.op == "call_method" and node.target in ("view", "reshape", "flatten"):
            new_shape = args[1:] if node.target != "flatten" else None
            if len(new_shape or ()) == 1 and isinstance(new_shape[0], (tuple, list)):
                new_shape = tuple(new_shape[0])
            if isinstance(args[0], tuple):
                arr = args[0][1]
                env[node.name] = ("real", arr.reshape(arr.shape[0], -1) if new_shape is None else arr.reshape(new_shape))
            else:
                x = val(args[0])
                env[node.name] = _Value(x.v.reshape(x.v.shape[0], -1) if new_shape is None
                                        else x.v.reshape(new_shape), x.unit, x.raw)
        elif node.op == "call_method" and node.target == "size":
            raise ExportError("shape-dependent control flow cannot be traced; use the chain exporter")
        else:
            raise ExportError(f"graph node {node.op} {node.target} has no integer form")
    raise ExportError("graph has no output")


@torch.no_grad()
def float_codes_by_name(model: nn.Module, X) -> FloatRun:
    """The codes each quantized layer's activation quantizer produces in the float model, keyed by the
    layer's module name (any zoo model), the per-sample ASQ factors (fixed point, ``2**-ASQ_BETA_FRAC``;
    None for other quantizers) and the logits: the float side of the integer-vs-float tests."""
    got, betas = {}, {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, (QConv2d, QLinear)):
            def f(module, inp, name=name):
                q = module.act_quant
                got[name] = q.codes(inp[0]).numpy()
                betas[name] = None
                if isinstance(q, ASQActQuantizer):
                    b = q.adapter(inp[0]).double().numpy()
                    betas[name] = np.floor(b * 2.0 ** arith.ASQ_BETA_FRAC + 0.5).astype(np.int64)
            hooks.append(mod.register_forward_pre_hook(f))
    model.eval()
    try:
        x = torch.as_tensor(np.asarray(X, dtype=np.float32))
        shape = tuple(getattr(model, "input_shape", ()) or ())
        if shape:
            x = x.reshape((-1,) + shape)
        logits = model(x).numpy()
    finally:
        for h in hooks:
            h.remove()
    return FloatRun(got, betas, logits)

"""Per-channel rescale and activation quantizer: the engine's post-MAC arithmetic
(``docs/arithmetic.md``, "Hardware-sized stage arithmetic"; :mod:`golden.arith`).

* :class:`ChannelRescale` -- ``v = relu(saturate(round_half_up((acc >> ACC_SHIFT) * m / 2**sh) + bias
  + aligned residual))``: :func:`golden.arith.stage_value` and :func:`golden.arith.finish_value`, the
  channel's ``{mult, shift, bias}`` read from the engine's CHAN memory and, for ASQ input codes,
  scaled by the input factor (:func:`golden.arith.beta_multiplier`).
* :class:`ActQuantizer` -- ``code = clip(round_half_up(v * M / 2**S), lo, hi)``: with ``M``/``S``
  the ASQ unit's ``inv_mant`` / ``Q_SHIFT + inv_shift`` this is :func:`golden.arith.asq_quantize`;
  with ``Q_MULT_LO`` / ``Q_SHIFT`` it is the plain (LSQ, QIL) quantizer.

Both are stall-all pipelines (``i.ready = ~o.valid | o.ready``); the engine always takes their
output, so they never stall there and their latency is exact.

The module also holds the small combinational helpers the other post-MAC blocks share
(:func:`round_shift`, :func:`saturate`, :func:`clamp_shift`) and the layouts of the factor words
(:func:`factor_layout`, :func:`quant_layout`).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.lut import checked
from hw.program import CHAN_MULT_BITS, CHAN_SHIFT_BITS, DESC_BITS

__all__ = ["ChannelRescale", "ActQuantizer", "chan_layout", "factor_layout", "quant_layout", "round_shift",
           "saturate", "clamp_shift", "RESCALE_LATENCY", "QUANT_LATENCY", "RES_MULT_BITS", "QUANT_SHIFT_BITS"]

#: Cycles from an accepted input to its output being valid (clock edges), :class:`ChannelRescale`.
RESCALE_LATENCY = 4
#: The same for :class:`ActQuantizer`.
QUANT_LATENCY = 2
#: Unsigned width of the residual's alignment multiplier ``RES_MULT`` (``< 2**MULT_BITS``).
RES_MULT_BITS = arith.MULT_BITS
#: Width of the quantizer's shift (``Q_SHIFT + inv_shift`` before the clamp at ``MAX_SHIFT``).
QUANT_SHIFT_BITS = 7


def chan_layout() -> data.StructLayout:
    """A CHAN entry: ``{mult: signed 16, shift: 6, bias: signed 18}``, LSB first, 40 bits
    (``hw.program.CHAN_BITS``)."""
    return data.StructLayout({"mult": signed(CHAN_MULT_BITS), "shift": unsigned(CHAN_SHIFT_BITS),
                              "bias": signed(arith.BIAS_BITS)})


def factor_layout() -> data.StructLayout:
    """An ASQ factor ``mant / 2**shift``: ``{mant: 15, shift: 6}``, LSB first, ``golden.arith.FACTOR_BITS``
    (21) bits; the low half of a TABLE word, the per-layer factor memory and the host's ``Ctrl.BETA``."""
    return data.StructLayout({"mant": unsigned(arith.FACTOR_MANT_BITS), "shift": unsigned(arith.FACTOR_SHIFT_BITS)})


def quant_layout() -> data.StructLayout:
    """A quantizer scale ``M / 2**S``: ``{mant: 15, shift: 7}``, LSB first, 22 bits."""
    return data.StructLayout({"mant": unsigned(arith.MULT_BITS), "shift": unsigned(QUANT_SHIFT_BITS)})


def clamp_shift(amount, limit: int = arith.MAX_SHIFT):
    """``min(amount, limit)`` of an unsigned shift amount, as an unsigned value ``limit.bit_length()`` wide."""
    width = max(1, limit.bit_length())
    if len(amount) <= width and (1 << len(amount)) - 1 <= limit:
        return amount
    return Mux(amount > limit, limit, amount[:width])


def round_shift(value, amount):
    """``round_half_up(value / 2**amount)`` for an unsigned ``amount >= 1`` (arithmetic): the rounding
    add folded into the shift, ``((value >> (amount - 1)) + 1) >> 1``; same width as ``value`` plus one."""
    return ((value >> (amount - 1)[:len(amount)]) + 1) >> 1


def saturate(value, bits: int = arith.VALUE_BITS):
    """Two's-complement saturation of a signed ``value`` to ``bits`` bits (``golden.arith.saturate``):
    in range when the bits from ``bits - 1`` up all equal the sign."""
    if len(value) <= bits:
        return value.as_signed()
    top = value[bits - 1:]
    fits = (top == 0) | (top == (1 << len(top)) - 1)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(fits, value[:bits].as_signed(), Mux(value[-1], lo, hi))


class ChannelRescale(wiring.Component):
    """Accumulator of output channel ``ch`` -> pre-quantization value ``v`` (``VALUE_BITS`` = 16, signed).

    Per value (``golden.arith.stage_value`` / ``finish_value``, V4SPEC steps 1-5):

    1. ``a = acc >> acc_shift`` (floor), kept as ``RESCALE_ACC_BITS`` = 24 bits signed (the compiler
       proves ``|a| < 2**23``; outside that the high bits are dropped).
    2. ``m, sh = mult, shift`` of the channel's CHAN entry, or with ``use_beta``
       ``m = (mult * beta.mant) >> 15`` (arithmetic, 16 x 15 bits), ``sh = shift + beta.shift - 15``
       (the compiler proves ``sh >= 1``); ``sh = min(sh, MAX_SHIFT)`` (62).
    3. ``v = round_half_up(a * m / 2**sh) + bias`` (24 x 16-bit product, 40 bits; the rounding add
       folded into the shift: ``((a*m >> (sh-1)) + 1) >> 1``).
    4. with ``use_res``: ``v += round_half_up(res * res_mult / 2**res_shift)`` (16 x 15 bits,
       ``res_shift`` 1..63: ``golden.arith.align_value``).
    5. ``v = saturate(v, 16)`` (exact: every term above is kept at full width); with ``relu``
       ``v = max(v, relu_floor)``.

    The channel's ``{mult, shift, bias}`` come from a synchronous memory read port the engine
    connects: ``param_addr = c_base + ch`` (with ``param_en``) in the cycle an input is accepted,
    ``param`` the cycle after; the residual of element ``idx`` likewise (``res_addr = idx``,
    ``res_en``, ``res``). ``beta``, ``use_beta``, ``acc_shift``, ``relu``, ``relu_floor``, ``c_base``
    and the ``res_*`` settings must stay constant while inputs are in flight.

    Pipeline: stage 1 ``a`` (the accumulator pre-shift before the register); stage 2 the beta-scaled
    multiplier, the clamped shift, the bias and the aligned residual (the CHAN and residual reads
    arrive in stage 1); stage 3 the product ``a * m``; the output register the rounding shift, the
    sums, the saturation and the ReLU floor. Latency :data:`RESCALE_LATENCY` (4).

    Parameters
    ----------
    acc_bits : int
        Signed accumulator width, 2..48.

    Attributes
    ----------
    i : In(stream.Signature({acc: signed(acc_bits), ch: 16, idx: 16}))
    o : Out(stream.Signature(signed(16)))
    acc_shift : In(6)
        ``ACC_SHIFT`` (0..63; amounts >= ``acc_bits`` give the sign).
    beta : In(factor_layout())
        Factor of the layer's input codes ``{mant: 15, shift: 6}`` (used with ``use_beta``).
    use_beta, relu : In(1)
    relu_floor : In(signed(16))
    c_base : In(16)
    param_addr : Out(16), param_en : Out(1), param : In(chan_layout())
    use_res : In(1), res_mult : In(15), res_shift : In(6)
    res_addr : Out(16), res_en : Out(1), res : In(signed(16))
    """

    def __init__(self, acc_bits: int):
        def check():
            if not isinstance(acc_bits, int) or isinstance(acc_bits, bool) or not 2 <= acc_bits <= 48:
                raise ValueError(f"acc_bits must be an integer in 2..48, got {acc_bits!r}")
        checked(self, check)
        self.acc_bits = acc_bits
        VB = arith.VALUE_BITS
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"acc": signed(acc_bits), "ch": unsigned(DESC_BITS),
                                                        "idx": unsigned(DESC_BITS)}))),
            "o": Out(stream.Signature(signed(VB))),
            "acc_shift": In(6),
            "beta": In(factor_layout()),
            "use_beta": In(1),
            "relu": In(1),
            "relu_floor": In(signed(DESC_BITS)),
            "c_base": In(DESC_BITS),
            "param_addr": Out(DESC_BITS),
            "param_en": Out(1),
            "param": In(chan_layout()),
            "use_res": In(1),
            "res_mult": In(RES_MULT_BITS),
            "res_shift": In(CHAN_SHIFT_BITS),
            "res_addr": Out(DESC_BITS),
            "res_en": Out(1),
            "res": In(signed(VB)),
        })

    def elaborate(self, platform):
        m = Module()
        VB, AB, B = arith.VALUE_BITS, arith.RESCALE_ACC_BITS, arith.FACTOR_MANT_BITS
        advance = ~self.o.valid | self.o.ready
        m.d.comb += [self.i.ready.eq(advance), self.param_addr.eq(self.c_base + self.i.payload.ch),
                     self.param_en.eq(advance), self.res_addr.eq(self.i.payload.idx), self.res_en.eq(advance)]

        # stage 1: a = acc >> acc_shift, 24 bits
        s1_v, s1_a = Signal(), Signal(signed(AB))
        # stage 2 (the CHAN entry and the residual arrive in stage 1): m, sh, bias, aligned residual
        p = self.param
        beta_m = Signal(signed(CHAN_MULT_BITS))
        m.d.comb += beta_m.eq((p.mult * self.beta.mant) >> B)
        beta_sh = Signal(signed(CHAN_SHIFT_BITS + 2))
        m.d.comb += beta_sh.eq(p.shift + self.beta.shift - B)
        sh_raw = Signal(unsigned(CHAN_SHIFT_BITS + 1))
        m.d.comb += sh_raw.eq(Mux(self.use_beta, beta_sh, p.shift))
        res_al = Signal(signed(VB + RES_MULT_BITS))
        m.d.comb += res_al.eq(round_shift(self.res * self.res_mult, self.res_shift))
        s2_v, s2_a = Signal(), Signal(signed(AB))
        s2_m, s2_sh = Signal(signed(CHAN_MULT_BITS)), Signal(range(arith.MAX_SHIFT + 1))
        s2_bias, s2_r = Signal(signed(arith.BIAS_BITS)), Signal(signed(VB + RES_MULT_BITS))
        # stage 3: the product a * m
        s3_v, s3_p = Signal(), Signal(signed(AB + CHAN_MULT_BITS))
        s3_sh, s3_bias, s3_r = Signal.like(s2_sh), Signal.like(s2_bias), Signal.like(s2_r)
        # output: round, add bias and residual, saturate, ReLU floor
        total = Signal(signed(AB + CHAN_MULT_BITS + 2))
        m.d.comb += total.eq(round_shift(s3_p, s3_sh) + s3_bias + Mux(self.use_res, s3_r, 0))
        value = Signal(signed(VB))
        m.d.comb += value.eq(saturate(total, VB))
        with m.If(advance):
            m.d.sync += [s1_v.eq(self.i.valid), s1_a.eq(self.i.payload.acc >> self.acc_shift),
                         s2_v.eq(s1_v), s2_a.eq(s1_a), s2_m.eq(Mux(self.use_beta, beta_m, p.mult)),
                         s2_sh.eq(clamp_shift(sh_raw)), s2_bias.eq(p.bias), s2_r.eq(res_al),
                         s3_v.eq(s2_v), s3_p.eq(s2_a * s2_m), s3_sh.eq(s2_sh), s3_bias.eq(s2_bias), s3_r.eq(s2_r),
                         self.o.valid.eq(s3_v),
                         self.o.payload.eq(Mux(self.relu & (value < self.relu_floor), self.relu_floor, value))]
        return m


class ActQuantizer(wiring.Component):
    """``code = clip(round_half_up(v * inv.mant / 2**min(inv.shift, 62)), lo, hi)``, the value's
    ``tag`` carried along.

    ``v`` is a 16-bit signed value, ``inv.mant`` an unsigned 15-bit multiplier (16 x 15-bit product,
    31 bits), ``inv.shift`` 1..127 (7 bits; amounts above ``MAX_SHIFT`` = 62 act as 62, as in
    ``golden.arith.shift_round``); ``lo <= hi`` codes. The rounding add is folded into the shift:
    ``(t + 1) >> 1`` with ``t = (v * mant) >> (shift - 1)``. Stage 1 registers the product, the
    output register the rounded, clipped code. Latency :data:`QUANT_LATENCY` (2);
    ``inv``/``lo``/``hi`` constant while inputs are in flight.

    Parameters
    ----------
    tag_bits : int
        Width of the tag carried with each value (>= 1).

    Attributes
    ----------
    i : In(stream.Signature({v: signed(16), tag: tag_bits}))
    o : Out(stream.Signature({code: 8, tag: tag_bits}))
    inv : In(quant_layout())
        The scale ``{mant: 15, shift: 7}``.
    lo, hi : In(8)
        Clip limits of the codes.
    """

    def __init__(self, tag_bits: int):
        def check():
            if not isinstance(tag_bits, int) or isinstance(tag_bits, bool) or tag_bits < 1:
                raise ValueError(f"tag_bits must be an integer >= 1, got {tag_bits!r}")
        checked(self, check)
        self.tag_bits = tag_bits
        cb = arith.ABITS_RANGE.stop - 1
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"v": signed(arith.VALUE_BITS),
                                                        "tag": unsigned(tag_bits)}))),
            "o": Out(stream.Signature(data.StructLayout({"code": unsigned(cb), "tag": unsigned(tag_bits)}))),
            "inv": In(quant_layout()),
            "lo": In(cb),
            "hi": In(cb),
        })

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        s1_v, s1_tag = Signal(), Signal(self.tag_bits)
        s1_p = Signal(signed(arith.VALUE_BITS + arith.MULT_BITS))
        r = Signal(signed(arith.VALUE_BITS + arith.MULT_BITS))
        m.d.comb += r.eq(round_shift(s1_p, clamp_shift(self.inv.shift)))
        code = Signal(self.o.payload.code.shape())
        with m.If(r < self.lo):
            m.d.comb += code.eq(self.lo)
        with m.Elif(r > self.hi):
            m.d.comb += code.eq(self.hi)
        with m.Else():
            m.d.comb += code.eq(r)
        with m.If(advance):
            m.d.sync += [s1_v.eq(self.i.valid), s1_tag.eq(self.i.payload.tag),
                         s1_p.eq(self.i.payload.v * self.inv.mant),
                         self.o.valid.eq(s1_v), self.o.payload.code.eq(code), self.o.payload.tag.eq(s1_tag)]
        return m

"""Per-channel rescale and activation quantizer: the engine's post-MAC arithmetic (``docs/arithmetic.md``).

* :class:`ChannelRescale` -- ``v = relu((apply_beta?(acc) * mult[o] + offset[o]) >> shift[o])``:
  :func:`golden.arith.apply_beta`, :func:`golden.arith.rescale` and the ReLU floor, with the
  channel's parameters read from the engine's CHAN memory.
* :class:`ActQuantizer` -- ``code = clip(round_half_up(v * inv / 2**shift), lo, hi)``: with
  ``inv = inv_beta`` and ``shift = value_frac + 16`` this is :func:`golden.arith.asq_quantize`;
  with ``inv = 2**16`` it is :func:`golden.arith.quantize_value` (LSQ, QIL and the v1 requantiser).

Both are stall-all pipelines (``i.ready = ~o.valid | o.ready``); the engine always takes their
output, so they never stall there and their latency is exact.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.lut import checked
from hw.program import CHAN_MULT_BITS, CHAN_SHIFT_BITS, DESC_BITS

__all__ = ["ChannelRescale", "ActQuantizer", "chan_layout", "RESCALE_LATENCY", "QUANT_LATENCY"]

#: Cycles from an accepted input to its output being valid (clock edges), :class:`ChannelRescale`.
RESCALE_LATENCY = 4
#: The same for :class:`ActQuantizer`.
QUANT_LATENCY = 2


def chan_layout() -> data.StructLayout:
    """A CHAN entry: ``{mult: signed 17, shift: 6, offset: signed 48}``, LSB first
    (:func:`hw.program.chan_word` packs it)."""
    return data.StructLayout({"mult": signed(CHAN_MULT_BITS), "shift": unsigned(CHAN_SHIFT_BITS),
                              "offset": signed(arith.OFFSET_BITS)})


class ChannelRescale(wiring.Component):
    """Accumulator of output channel ``ch`` -> pre-quantization value ``v`` (``value_bits`` signed).

    ``a = (acc * beta) >> 8`` if ``use_beta`` else ``acc``; ``t = a * mult + offset`` (64-bit);
    ``v = t >> shift`` (floor); with ``use_res`` the residual is added,
    ``v += golden.arith.align_value(res, res_mult, res_shift)``; ``v = max(v, relu_floor)`` if
    ``relu``. The compiler (:func:`hw.program.build_program`) proves ``t`` fits 63 bits and ``v``
    fits ``value_bits`` (default ``golden.arith.VALUE_BITS``).

    The channel's ``{mult, shift, offset}`` come from a synchronous memory read port the engine
    connects: ``param_addr = c_base + ch`` (with ``param_en``) in the cycle an input is accepted,
    ``param`` the cycle after; the residual of element ``idx`` likewise (``res_addr = idx``,
    ``res_en``, ``res``). ``beta``, ``use_beta``, ``relu``, ``relu_floor``, ``c_base`` and the
    ``res_*`` settings must stay constant while inputs are in flight. Latency :data:`RESCALE_LATENCY`.
    """

    def __init__(self, acc_bits: int, value_bits: int = arith.VALUE_BITS):
        def check():
            if not isinstance(acc_bits, int) or not 2 <= acc_bits <= 48:
                raise ValueError(f"acc_bits must be an integer in 2..48, got {acc_bits!r}")
            if not isinstance(value_bits, int) or not 16 <= value_bits <= 48:
                raise ValueError(f"value_bits must be an integer in 16..48, got {value_bits!r}")
        checked(self, check)
        self.acc_bits, self.value_bits = acc_bits, value_bits
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"acc": signed(acc_bits), "ch": unsigned(DESC_BITS),
                                                        "idx": unsigned(DESC_BITS)}))),
            "o": Out(stream.Signature(signed(value_bits))),
            "beta": In(arith.ASQ_TABLE_BITS),
            "use_beta": In(1),
            "relu": In(1),
            "relu_floor": In(signed(DESC_BITS)),
            "c_base": In(DESC_BITS),
            "param_addr": Out(DESC_BITS),
            "param_en": Out(1),
            "param": In(chan_layout()),
            "use_res": In(1),
            "res_mult": In(16),
            "res_shift": In(CHAN_SHIFT_BITS),
            "res_addr": Out(DESC_BITS),
            "res_en": Out(1),
            "res": In(signed(value_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += [self.i.ready.eq(advance), self.param_addr.eq(self.c_base + self.i.payload.ch),
                     self.param_en.eq(advance), self.res_addr.eq(self.i.payload.idx), self.res_en.eq(advance)]
        # the residual, read like the parameters, aligned in stage 1: (res*mult + 2**(shift-1)) >> shift
        res_p = Signal(signed(self.value_bits + 17))
        res_al = Signal(signed(self.value_bits + 17))
        m.d.comb += [res_p.eq(self.res * self.res_mult),
                     res_al.eq(((res_p >> (self.res_shift - 1)[:CHAN_SHIFT_BITS]) + 1) >> 1)]
        s2_r = Signal(signed(self.value_bits + 1))
        s3_r = Signal(signed(self.value_bits + 1))
        drop = arith.ASQ_BETA_FRAC - arith.ASQ_ACC_FRAC
        s1_v, s1_acc = Signal(), Signal(signed(self.acc_bits))
        s2_v = Signal()
        s2_a = Signal(signed(self.acc_bits + arith.ASQ_TABLE_BITS + 1 - drop))
        s2_p = Signal(chan_layout())
        s3_v, s3_t, s3_shift = Signal(), Signal(signed(64)), Signal(CHAN_SHIFT_BITS)
        scaled = Signal.like(s2_a)
        m.d.comb += scaled.eq(Mux(self.use_beta, (s1_acc * self.beta) >> drop, s1_acc))
        value = Signal(signed(self.value_bits))
        m.d.comb += value.eq((s3_t >> s3_shift) + Mux(self.use_res, s3_r, 0))
        with m.If(advance):
            m.d.sync += [s1_v.eq(self.i.valid), s1_acc.eq(self.i.payload.acc),
                         s2_v.eq(s1_v), s2_a.eq(scaled), s2_p.eq(self.param), s2_r.eq(res_al),
                         s3_v.eq(s2_v), s3_r.eq(s2_r), s3_t.eq(s2_a * s2_p.mult + s2_p.offset), s3_shift.eq(s2_p.shift),
                         self.o.valid.eq(s3_v),
                         self.o.payload.eq(Mux(self.relu & (value < self.relu_floor), self.relu_floor, value))]
        return m


class ActQuantizer(wiring.Component):
    """``code = clip(round_half_up(v * inv / 2**shift), lo, hi)``, the value's ``tag`` carried along.

    ``shift`` in 1..63 (the engine uses ``value_frac + 16``); ``inv`` unsigned
    ``ASQ_TABLE_BITS``; ``lo <= hi`` codes. The rounding add is folded into the shift:
    ``(t + 1) >> 1`` with ``t = (v * inv) >> (shift - 1)``. Latency :data:`QUANT_LATENCY`;
    ``inv``/``shift``/``lo``/``hi`` constant while inputs are in flight.
    """

    def __init__(self, tag_bits: int, value_bits: int = arith.VALUE_BITS):
        def check():
            if not isinstance(tag_bits, int) or tag_bits < 1:
                raise ValueError(f"tag_bits must be an integer >= 1, got {tag_bits!r}")
            if not isinstance(value_bits, int) or not 16 <= value_bits <= 48:
                raise ValueError(f"value_bits must be an integer in 16..48, got {value_bits!r}")
        checked(self, check)
        self.tag_bits, self.value_bits = tag_bits, value_bits
        cb = arith.ABITS_RANGE.stop - 1
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"v": signed(value_bits), "tag": unsigned(tag_bits)}))),
            "o": Out(stream.Signature(data.StructLayout({"code": unsigned(cb), "tag": unsigned(tag_bits)}))),
            "inv": In(arith.ASQ_TABLE_BITS),
            "shift": In(6),
            "lo": In(cb),
            "hi": In(cb),
        })

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        s1_v, s1_tag = Signal(), Signal(self.tag_bits)
        s1_p = Signal(signed(self.value_bits + arith.ASQ_TABLE_BITS + 1))
        t = Signal(signed(self.value_bits + arith.ASQ_TABLE_BITS + 1))
        r = Signal(signed(self.value_bits + arith.ASQ_TABLE_BITS + 1))
        m.d.comb += [t.eq(s1_p >> (self.shift - 1)[:6]), r.eq((t + 1) >> 1)]
        code = Signal(self.o.payload.code.shape())
        with m.If(r < self.lo):
            m.d.comb += code.eq(self.lo)
        with m.Elif(r > self.hi):
            m.d.comb += code.eq(self.hi)
        with m.Else():
            m.d.comb += code.eq(r)
        with m.If(advance):
            m.d.sync += [s1_v.eq(self.i.valid), s1_tag.eq(self.i.payload.tag),
                         s1_p.eq(self.i.payload.v * self.inv),
                         self.o.valid.eq(s1_v), self.o.payload.code.eq(code), self.o.payload.tag.eq(s1_tag)]
        return m

"""Requantiser: accumulator -> next layer's activation code, exactly :func:`golden.arith.requantize`."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.lut import checked

__all__ = ["Requantizer", "requant_layout", "SHIFT_BITS", "QMAX_BITS"]

#: Width of the requantisation shift input (the hardware shifter): covers ``arith.SHIFT_RANGE``.
SHIFT_BITS = (arith.SHIFT_RANGE.stop - 1).bit_length()
#: Width of ``qmax = 2**out_bits - 1`` for every supported activation width.
QMAX_BITS = arith.ABITS_RANGE.stop - 1


def requant_layout(acc_bits: int) -> data.StructLayout:
    """Input payload: ``acc`` (signed, bias included), ``mult``, ``shift``, ``qmax``, ``final``."""
    return data.StructLayout({
        "acc": signed(acc_bits),
        "mult": unsigned(arith.MULT_BITS),
        "shift": unsigned(SHIFT_BITS),
        "qmax": unsigned(QMAX_BITS),
        "final": unsigned(1),
    })


class Requantizer(wiring.Component):
    """``value = clip(((acc * mult) + 2**(shift-1)) >> shift, 0, qmax)``, or ``acc`` if ``final``.

    The rounding add is folded into the shift: with ``t = (acc * mult) >> (shift - 1)``
    (arithmetic), ``((acc * mult) + 2**(shift-1)) >> shift == (t + 1) >> 1``, so no
    ``2**62``-wide constant is needed. ``shift`` must lie in ``arith.SHIFT_RANGE`` and
    ``mult`` in ``1 .. 2**MULT_BITS - 1`` (the program checks both).

    Pipeline (stall-all, 3 stages): 1) ``acc * mult`` (``arith.requant_product_bits(acc_bits)``
    wide), 2) arithmetic right shift by ``shift - 1``, 3) round, clip (or pass ``acc``).
    Latency 3: an input accepted at clock edge ``t`` is valid on ``o`` after edge ``t + 2``
    (in the third cycle after acceptance). ``i.ready = ~o.valid | o.ready``.

    Parameters
    ----------
    acc_bits : int
        Signed accumulator width.

    Attributes
    ----------
    i : In(stream.Signature(requant_layout(acc_bits)))
    o : Out(stream.Signature(signed(acc_bits)))
        The output code (``0 .. qmax``) or, for ``final``, ``acc`` itself.
    """

    def __init__(self, acc_bits: int):
        def check():
            if not isinstance(acc_bits, int) or acc_bits <= QMAX_BITS:
                raise ValueError(f"acc_bits must be an integer > {QMAX_BITS} (it must hold a {QMAX_BITS}-bit "
                                 f"output code), got {acc_bits!r}")
        checked(self, check)
        self.acc_bits = acc_bits
        self.prod_bits = arith.requant_product_bits(acc_bits)
        super().__init__({
            "i": In(stream.Signature(requant_layout(acc_bits))),
            "o": Out(stream.Signature(signed(acc_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        inp = self.i.payload

        # stage 1: the product
        s1 = Signal(requant_layout(self.acc_bits))
        s1_valid = Signal()
        s1_prod = Signal(signed(self.prod_bits))
        # stage 2: the shifted product
        s2 = Signal(requant_layout(self.acc_bits))
        s2_valid = Signal()
        s2_t = Signal(signed(self.prod_bits))

        with m.If(advance):
            m.d.sync += [s1_valid.eq(self.i.valid), s1.eq(inp), s1_prod.eq(inp.acc * inp.mult)]
            m.d.sync += [s2_valid.eq(s1_valid), s2.eq(s1),
                         s2_t.eq(s1_prod >> (s1.shift - 1)[:SHIFT_BITS])]

        rounded = Signal(signed(self.prod_bits))
        m.d.comb += rounded.eq((s2_t + 1) >> 1)
        value = Signal(signed(self.acc_bits))
        with m.If(s2.final):
            m.d.comb += value.eq(s2.acc)
        with m.Elif(rounded < 0):
            m.d.comb += value.eq(0)
        with m.Elif(rounded > s2.qmax):
            m.d.comb += value.eq(s2.qmax)
        with m.Else():
            m.d.comb += value.eq(rounded)

        with m.If(advance):
            m.d.sync += [self.o.valid.eq(s2_valid), self.o.payload.eq(value)]
        return m

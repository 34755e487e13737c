"""The POST processing element: activation times POST weight code with a barrel shifter, no multiplier."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.lut import checked

__all__ = ["PostPE"]


class PostPE(wiring.Component):
    """Signed product of an activation code and a POST weight code, exactly :func:`golden.arith.post_product`.

    With the code split as ``sign << (wbits-1) | m``, ``k = m - 1`` and ``j = k >> 1``:

    * even ``k`` (``m`` odd): ``|p| = (x << frac_bits) >> j``
    * odd ``k`` (``m`` even): ``|p| = lut >> j`` (``lut`` is the row's :class:`hw.lut.Sqrt2Lut` entry of ``x``)
    * ``m == 0``: ``|p| = 0``; then ``p = sign ? -|p| : |p|``.

    Hardware: a 2:1 mux selecting the base, one right barrel shifter (``j`` in
    ``0 .. kmax >> 1``), and one adder that applies the sign as ``(|p| ^ -sign) + sign``.
    There is no multiplier.

    Combinational: latency 0 (the array registers around it).

    Parameters
    ----------
    wbits, abits, frac_bits : int
        Weight code, activation code and product fraction widths (checked by :mod:`golden.arith`).

    Attributes
    ----------
    x : In(unsigned(abits))
        Activation code.
    lut : In(unsigned(lut_bits))
        ``arith.sqrt2_lut(abits, frac_bits)[x]`` from the row's LUT.
    code : In(unsigned(wbits))
        POST weight code.
    product : Out(signed(abits + frac_bits + 1))
        The signed product, in units of ``alpha * step * 2**-frac_bits``.
    """

    def __init__(self, wbits: int, abits: int, frac_bits: int = arith.DEFAULT_FRAC_BITS):
        self.fmt = checked(self, lambda: arith.PostFormat(wbits, abits, frac_bits))
        self.wbits, self.abits, self.frac_bits = self.fmt.wbits, self.fmt.abits, self.fmt.frac_bits
        self.mag_bits = arith.product_magnitude_bits(self.abits, self.frac_bits)
        super().__init__({
            "x": In(unsigned(self.abits)),
            "lut": In(unsigned(self.fmt.lut_bits)),
            "code": In(unsigned(self.wbits)),
            "product": Out(signed(self.fmt.product_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.wbits
        mag_code = self.code[:w - 1]
        sign = self.code[w - 1]
        k = mag_code - 1
        j = k[1:w - 1]                     # barrel-shift amount, 0 .. kmax >> 1
        odd = k[0]
        even_base = self.x << self.frac_bits            # abits + frac_bits wide
        base = Mux(mag_code == 0, 0, Mux(odd, self.lut, even_base))
        mag = (base >> j)[:self.mag_bits]
        # one adder applies the sign: -v == ~v + 1 in (mag_bits + 1)-bit two's complement
        negate = sign.replicate(self.mag_bits + 1)
        m.d.comb += self.product.eq((Cat(mag, 0) ^ negate) + sign)
        return m

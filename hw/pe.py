"""Processing elements: activation code times weight code, combinational.

:class:`PostPE` is the accelerator's PE (POST weights: barrel shifter and a row-shared sqrt(2)
LUT, no multiplier). :class:`PotPE` (power-of-two weights, shifter only) and :class:`IntPE`
(uniform two's-complement weights, a real multiplier) exist for the area comparison in
``bench/pe_compare.py``; their arithmetic is :mod:`golden.arith_variants`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden import arith, arith_variants
from hw.lut import checked

__all__ = ["PostPE", "PotPE", "IntPE"]


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


class PotPE(wiring.Component):
    """Signed product of an activation code and a POT weight code, exactly
    :func:`golden.arith_variants.pot_product`.

    The code is laid out like a POST code, ``sign << (wbits-1) | m``; ``k = m - 1`` and
    ``|p| = (x << frac_bits) >> k`` (0 for ``m == 0``), then ``p = sign ? -|p| : |p|``.

    Hardware: one right barrel shifter (``k`` in ``0 .. 2**(wbits-1) - 2``; shifts past the
    product width give 0) and one adder applying the sign as ``(|p| ^ -sign) + sign``. No LUT
    and no multiplier. The product has the same units and width as :class:`PostPE`'s, so a POT
    MAC uses the same accumulator.

    Combinational: latency 0.

    Parameters
    ----------
    wbits, abits, frac_bits : int
        Weight code, activation code and product fraction widths (checked by :mod:`golden.arith`).

    Attributes
    ----------
    x : In(unsigned(abits))
        Activation code.
    code : In(unsigned(wbits))
        POT weight code.
    product : Out(signed(abits + frac_bits + 1))
        The signed product, in units of ``alpha * step * 2**-frac_bits``.
    """

    def __init__(self, wbits: int, abits: int, frac_bits: int = arith.DEFAULT_FRAC_BITS):
        self.fmt = checked(self, lambda: arith.PostFormat(wbits, abits, frac_bits))
        self.wbits, self.abits, self.frac_bits = self.fmt.wbits, self.fmt.abits, self.fmt.frac_bits
        self.mag_bits = arith.product_magnitude_bits(self.abits, self.frac_bits)
        self.product_bits = self.mag_bits + 1
        super().__init__({
            "x": In(unsigned(self.abits)),
            "code": In(unsigned(self.wbits)),
            "product": Out(signed(self.product_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.wbits
        mag_code = self.code[:w - 1]
        sign = self.code[w - 1]
        k = (mag_code - 1)[:w - 1]                       # shift amount, 0 .. 2**(w-1) - 2
        base = Mux(mag_code == 0, 0, self.x << self.frac_bits)
        mag = (base >> k)[:self.mag_bits]
        negate = sign.replicate(self.mag_bits + 1)
        m.d.comb += self.product.eq((Cat(mag, 0) ^ negate) + sign)
        return m


class IntPE(wiring.Component):
    """Signed product ``w * x`` of a two's-complement weight code and an activation code, exactly
    :func:`golden.arith_variants.int_product`.

    Hardware: one ``wbits x abits`` multiplier (Amaranth ``*``, signed times unsigned); the
    synthesis tool maps it to LUTs and carry chains, or to a DSP block where allowed.

    Combinational: latency 0.

    Parameters
    ----------
    wbits, abits : int
        Weight code and activation code widths (``wbits`` in 2..8, ``abits`` in 2..8).

    Attributes
    ----------
    x : In(unsigned(abits))
        Activation code.
    code : In(unsigned(wbits))
        Weight code: the ``wbits``-bit two's-complement pattern of ``w``.
    product : Out(signed(wbits + abits))
        ``w * x`` (``arith_variants.int_product_bits(wbits, abits)`` bits).
    """

    def __init__(self, wbits: int, abits: int):
        self.wbits = checked(self, lambda: arith.check_wbits(wbits))
        self.abits = checked(self, lambda: arith.check_abits(abits))
        self.product_bits = arith_variants.int_product_bits(self.wbits, self.abits)
        super().__init__({
            "x": In(unsigned(self.abits)),
            "code": In(unsigned(self.wbits)),
            "product": Out(signed(self.product_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.product.eq(self.code.as_signed() * self.x)
        return m

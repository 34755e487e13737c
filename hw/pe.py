"""Processing elements: activation code times weight code, combinational.

:class:`PostPE` is the accelerator's PE (POST weights: barrel shifter and a row-shared sqrt(2)
LUT, no multiplier). :class:`PotPE` (power-of-two weights, shifter only) and :class:`IntPE`
(uniform two's-complement weights, a real multiplier) exist for the area comparison in
``bench/pe_compare.py``; their arithmetic is :mod:`golden.arith_variants`.

:class:`PostOnesPE` is :class:`PostPE` without its sign adder: it hands the consumer the ones'
complement ``|p| ^ -s`` and the sign ``s`` separately (``product = ones + sign``), so the ``+ s``
rides on the carry-in of an adder the consumer has anyway (an accumulator or an adder tree).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden import arith, arith_variants
from hw.lut import checked

__all__ = ["PostPE", "PostOnesPE", "PotPE", "IntPE", "post_magnitude", "add_with_carry"]


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
        sign = self.code[self.wbits - 1]
        mag = post_magnitude(self.code, self.x, self.lut, self.wbits, self.frac_bits, self.mag_bits)
        # one adder applies the sign: -v == ~v + 1 in (mag_bits + 1)-bit two's complement
        negate = sign.replicate(self.mag_bits + 1)
        m.d.comb += self.product.eq((Cat(mag, 0) ^ negate) + sign)
        return m


def post_magnitude(code, x, lut, wbits: int, frac_bits: int, mag_bits: int):
    """``|p|`` of :func:`golden.arith.post_product` as an Amaranth expression.

    With ``m = code[:wbits-1]`` and ``k = m - 1``: the base is ``lut`` for odd ``k``, ``x <<
    frac_bits`` for even ``k`` and 0 for ``m == 0``; a right barrel shifter by ``j = k >> 1``
    (``0 .. kmax >> 1``) truncates it to ``|p|``.
    """
    mag_code = code[:wbits - 1]
    k = mag_code - 1
    base = Mux(mag_code == 0, 0, Mux(k[0], lut, x << frac_bits))     # abits + frac_bits wide
    return (base >> k[1:wbits - 1])[:mag_bits]


class PostOnesPE(wiring.Component):
    """:class:`PostPE` with the sign left to the consumer's adder: ``product = ones + sign``.

    ``ones = |p| ^ -sign`` (``|p|`` as in :class:`PostPE`, complemented when the weight is
    negative) and ``sign`` is the code's sign bit, so ``ones + sign`` is exactly
    :func:`golden.arith.post_product`. Whoever sums products adds ``sign`` as the carry-in of its
    adder (:func:`add_with_carry`), which removes the PE's own ``mag_bits + 1``-bit adder:
    one adder per product instead of two.

    Combinational: latency 0.

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
    ones : Out(signed(abits + frac_bits + 1))
        ``|p|`` with every bit inverted when ``sign`` is set.
    sign : Out(1)
        The code's sign bit (``product = ones + sign``).
    """

    def __init__(self, wbits: int, abits: int, frac_bits: int = arith.DEFAULT_FRAC_BITS):
        self.fmt = checked(self, lambda: arith.PostFormat(wbits, abits, frac_bits))
        self.wbits, self.abits, self.frac_bits = self.fmt.wbits, self.fmt.abits, self.fmt.frac_bits
        self.mag_bits = arith.product_magnitude_bits(self.abits, self.frac_bits)
        super().__init__({
            "x": In(unsigned(self.abits)),
            "lut": In(unsigned(self.fmt.lut_bits)),
            "code": In(unsigned(self.wbits)),
            "ones": Out(signed(self.fmt.product_bits)),
            "sign": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        sign = self.code[self.wbits - 1]
        mag = post_magnitude(self.code, self.x, self.lut, self.wbits, self.frac_bits, self.mag_bits)
        m.d.comb += [self.ones.eq(Cat(mag, 0) ^ sign.replicate(self.mag_bits + 1)), self.sign.eq(sign)]
        return m


def add_with_carry(a, b, carry):
    """``a + b + carry`` (signed ``a``, ``b``; one-bit ``carry``) as one adder: the carry enters
    below the LSB, ``(2a + c) + (2b + c) = 2(a + b + c)``, so synthesis maps it to a single carry
    chain whose carry-in is ``carry``."""
    total = Cat(carry, a).as_signed() + Cat(carry, b).as_signed()
    return total[1:].as_signed()


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

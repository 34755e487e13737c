"""Synthesis units for the PE comparison: a row of MAC cells and an R x C array, for any PE kind.

What "one MAC" costs
--------------------
A MAC cell is a PE plus its own registered accumulator. A POST PE also needs the sqrt(2) LUT
entry of its activation, and the engine shares one :class:`hw.lut.Sqrt2Lut` between the C PEs of
an array row (they all see the same activation). So the unit that is synthesised is a **row**:
one registered activation, one LUT (POST only), ``share`` PEs with registered weight codes and
``share`` accumulators. The cost of one MAC cell is the row's cost divided by ``share``: its PE,
its accumulator, its code register and ``1/share`` of the LUT and of the activation register.
POT and INT rows are built the same way (they simply have no LUT), so the three kinds differ in
the PE only. ``share=1`` is a lone MAC that pays for a whole LUT.

The accumulator is ``golden.arith.accumulator_bits(fan_in, abits, frac_bits)`` wide for every
kind unless ``acc_bits`` is given: the comparison is "the same accumulator, a different PE".

How the accumulator starts a sum (``clear``)
    ``"select"`` (default): ``acc <= first ? p : acc + p``. The select sits after the adder, and
    on the iCE40 abc folds it into the spare input of each carry-chain LUT: the clear is free.
    ``"mask"``: ``acc <= (first ? 0 : acc) + p``, the textbook form; the mask is one more LUT per
    accumulator bit. Both are offered so the bench can show the difference; every kind gets the
    same choice.

How a POST product's sign is applied (``sign``, POST only)
    ``"pe"`` (default): :class:`hw.pe.PostPE`, whose own adder forms the two's complement product.
    ``"carry"``: :class:`hw.pe.PostOnesPE` hands over ``ones = |p| ^ -s`` and ``s``; the
    accumulator adds ``ones`` with ``s`` as its carry-in (one adder per MAC instead of two). Its
    first step needs ``ones + s`` alone, so it uses the masked clear whatever ``clear`` says
    (a select would need a second adder for the first product).
(An INT MAC could use the narrower :func:`golden.arith_variants.int_accumulator_bits`; the bench
reports that point too.)

:class:`PeArray` is the engine's :class:`hw.array.PostArray` datapath without the stream
handshake, for any PE kind: R row activations, R*C weight codes, row LUTs, products registered,
C column adder trees into C accumulators.

All inputs and outputs are registered, so a place-and-route Fmax is the speed of the unit's own
logic (register -> LUT/shifter/multiplier -> adder -> register).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden import arith, arith_variants
from hw.array import _tree_sum, _tree_sum_carry
from hw.lut import Sqrt2Lut, checked
from hw.pe import IntPE, PostOnesPE, PostPE, PotPE, add_with_carry

__all__ = ["PE_KINDS", "CLEAR_STYLES", "SIGN_STYLES", "DEFAULT_FAN_IN", "make_pe", "product_bits",
           "MacRow", "PeArray"]

#: PE kinds: POST (shift + row LUT), POT (shift only), INT (two's-complement multiplier).
PE_KINDS = ("post", "pot", "int")
#: How an accumulator starts a new sum: select after the adder, or mask the old value before it.
CLEAR_STYLES = ("select", "mask")
#: Where a POST product's sign is applied: the PE's own adder, or the accumulator's carry-in.
SIGN_STYLES = ("pe", "carry")
#: Fan-in the accumulator is sized for unless told otherwise.
DEFAULT_FAN_IN = 64


def _check_kind(kind):
    if kind not in PE_KINDS:
        raise ValueError(f"PE kind must be one of {', '.join(PE_KINDS)}, got {kind!r}")
    return kind


def make_pe(kind: str, wbits: int, abits: int, frac_bits: int = arith.DEFAULT_FRAC_BITS) -> wiring.Component:
    """A :class:`PostPE`, :class:`PotPE` or :class:`IntPE` (``frac_bits`` is unused by INT)."""
    _check_kind(kind)
    if kind == "post":
        return PostPE(wbits, abits, frac_bits)
    if kind == "pot":
        return PotPE(wbits, abits, frac_bits)
    return IntPE(wbits, abits)


def product_bits(kind: str, wbits: int, abits: int, frac_bits: int = arith.DEFAULT_FRAC_BITS) -> int:
    """Signed product width of a PE kind."""
    _check_kind(kind)
    if kind == "int":
        return arith_variants.int_product_bits(wbits, abits)
    return arith.product_magnitude_bits(abits, frac_bits) + 1


def _check_styles(kind, clear, sign):
    if clear not in CLEAR_STYLES:
        raise ValueError(f"clear must be one of {', '.join(CLEAR_STYLES)}, got {clear!r}")
    if sign not in SIGN_STYLES:
        raise ValueError(f"sign must be one of {', '.join(SIGN_STYLES)}, got {sign!r}")
    if sign == "carry" and kind != "post":
        raise ValueError(f"sign='carry' is for POST PEs only (a {kind.upper()} product is already signed)")


def _accumulate(m, acc, first, product, clear):
    """``acc <= (first ? 0 : acc) + product`` in the chosen form (see the module docstring).
    ``product`` is a signed value, or ``(ones, sign)`` meaning ``ones + sign``."""
    if isinstance(product, tuple):
        ones, sign = product
        m.d.sync += acc.eq(add_with_carry(Mux(first, 0, acc), ones, sign))
    elif clear == "select":
        m.d.sync += acc.eq(Mux(first, product, acc + product))
    else:
        m.d.sync += acc.eq(Mux(first, 0, acc) + product)


def _product(m, name, kind, wbits, abits, frac_bits, sign, x, lut_entry, code):
    """Instantiate one PE; its product as a signed value or an ``(ones, sign)`` pair."""
    pe = PostOnesPE(wbits, abits, frac_bits) if sign == "carry" else make_pe(kind, wbits, abits, frac_bits)
    m.submodules[name] = pe
    m.d.comb += [pe.x.eq(x), pe.code.eq(code)]
    if kind == "post":
        m.d.comb += pe.lut.eq(lut_entry)
    return (pe.ones, pe.sign) if sign == "carry" else pe.product


def _check_common(kind, wbits, abits, frac_bits, fan_in, acc_bits):
    _check_kind(kind)
    arith.PostFormat(wbits, abits, frac_bits)
    acc = arith.accumulator_bits(fan_in, abits, frac_bits) if acc_bits is None else acc_bits
    pbits = product_bits(kind, wbits, abits, frac_bits)
    if not isinstance(acc, int) or isinstance(acc, bool) or acc < pbits:
        raise ValueError(f"acc_bits must be an integer >= the product width {pbits}, got {acc!r}")
    return acc


class MacRow(wiring.Component):
    """``share`` MAC cells of one array row: one activation (and, for POST, one LUT), many weights.

    Each cycle: ``acc[c] <= (first ? 0 : acc[c]) + product(x, codes[c])`` with the inputs taken
    from the input registers. Latency: inputs sampled at clock edge ``t`` are in ``acc`` after
    edge ``t + 1``. Sums wrap modulo ``2**acc_bits`` (``fan_in`` products never overflow).

    Parameters
    ----------
    kind : str
        ``"post"``, ``"pot"`` or ``"int"``.
    wbits, abits, frac_bits : int
        Weight code, activation code and product fraction widths.
    share : int
        PEs in the row (they share the activation register and, for POST, the LUT). Per-MAC
        cost = row cost / ``share``.
    fan_in : int
        Fan-in the accumulator is sized for (``arith.accumulator_bits``).
    acc_bits : int or None
        Override the accumulator width (e.g. INT's own, narrower width).
    clear : str
        ``"select"`` (default) or ``"mask"``: how a sum starts (module docstring).
    sign : str
        ``"pe"`` (default) or ``"carry"`` (POST only): where the product's sign is applied.

    Attributes
    ----------
    x : In(unsigned(abits))
        Activation code of the row.
    codes : In(data.ArrayLayout(unsigned(wbits), share))
        One weight code per PE.
    first : In(1)
        Start a new sum (the accumulator takes the product alone).
    acc : Out(data.ArrayLayout(signed(acc_bits), share))
        The accumulators (registers).
    """

    def __init__(self, kind: str, wbits: int, abits: int, frac_bits: int = arith.DEFAULT_FRAC_BITS, *,
                 share: int = 1, fan_in: int = DEFAULT_FAN_IN, acc_bits: int | None = None,
                 clear: str = "select", sign: str = "pe"):
        def check():
            if not isinstance(share, int) or isinstance(share, bool) or share < 1:
                raise ValueError(f"share must be an integer >= 1, got {share!r}")
            _check_styles(kind, clear, sign)
            return _check_common(kind, wbits, abits, frac_bits, fan_in, acc_bits)
        self.acc_bits = checked(self, check)
        self.kind, self.wbits, self.abits, self.frac_bits = kind, wbits, abits, frac_bits
        self.share, self.fan_in, self.clear, self.sign = share, fan_in, clear, sign
        super().__init__({
            "x": In(unsigned(abits)),
            "codes": In(data.ArrayLayout(unsigned(wbits), share)),
            "first": In(1),
            "acc": Out(data.ArrayLayout(signed(self.acc_bits), share)),
        })

    def elaborate(self, platform):
        m = Module()
        x_r = Signal(unsigned(self.abits))
        codes_r = Signal(data.ArrayLayout(unsigned(self.wbits), self.share))
        first_r = Signal()
        m.d.sync += [x_r.eq(self.x), codes_r.eq(self.codes), first_r.eq(self.first)]

        entry = None
        if self.kind == "post":
            m.submodules.lut = lut = Sqrt2Lut(self.abits, self.frac_bits)
            m.d.comb += lut.x.eq(x_r)
            entry = lut.entry
        for c in range(self.share):
            p = _product(m, f"pe{c}", self.kind, self.wbits, self.abits, self.frac_bits, self.sign,
                         x_r, entry, codes_r[c])
            _accumulate(m, self.acc[c], first_r, p, self.clear)
        return m


class PeArray(wiring.Component):
    """R x C MAC array of one PE kind: the datapath of :class:`hw.array.PostArray`, registered I/O.

    Pipeline: input registers (``x``, ``w``, ``first``) -> row LUTs (POST) and PEs -> product
    registers -> column adder trees -> accumulators ``acc[c] <= (first ? 0 : acc[c]) +
    sum_r product(x[r], w[r*C + c])`` (forms: ``clear`` and ``sign``). Latency: inputs sampled at edge ``t`` are in ``acc`` after
    edge ``t + 2``.

    Parameters
    ----------
    kind : str
        ``"post"``, ``"pot"`` or ``"int"``.
    rows, cols : int
        R input lanes (one LUT each for POST), C output lanes (one accumulator each).
    wbits, abits, frac_bits, fan_in, acc_bits, clear
        As for :class:`MacRow` (``clear`` acts on the column accumulators).
    sign : str or None
        POST only: ``"carry"`` (the default for POST, as in :class:`hw.array.PostArray`) registers
        ``ones`` and ``sign`` and adds the signs as the carry-ins of the column trees and the
        accumulators; ``"pe"`` registers two's complement products from :class:`hw.pe.PostPE`.

    Attributes
    ----------
    x : In(data.ArrayLayout(unsigned(abits), rows))
        Row activations.
    w : In(data.ArrayLayout(unsigned(wbits), rows * cols))
        Weight codes, row ``r`` column ``c`` at ``r*C + c``.
    first : In(1)
        Start new sums.
    acc : Out(data.ArrayLayout(signed(acc_bits), cols))
        Column accumulators (registers).
    """

    def __init__(self, kind: str, rows: int, cols: int, wbits: int, abits: int,
                 frac_bits: int = arith.DEFAULT_FRAC_BITS, *, fan_in: int = DEFAULT_FAN_IN,
                 acc_bits: int | None = None, clear: str = "select", sign: str | None = None):
        if sign is None:
            sign = "carry" if kind == "post" else "pe"

        def check():
            for name, v in (("rows", rows), ("cols", cols)):
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
            _check_styles(kind, clear, sign)
            return _check_common(kind, wbits, abits, frac_bits, fan_in, acc_bits)
        self.acc_bits = checked(self, check)
        self.clear, self.sign = clear, sign
        self.kind, self.rows, self.cols = kind, rows, cols
        self.wbits, self.abits, self.frac_bits, self.fan_in = wbits, abits, frac_bits, fan_in
        super().__init__({
            "x": In(data.ArrayLayout(unsigned(abits), rows)),
            "w": In(data.ArrayLayout(unsigned(wbits), rows * cols)),
            "first": In(1),
            "acc": Out(data.ArrayLayout(signed(self.acc_bits), cols)),
        })

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        x_r = Signal(data.ArrayLayout(unsigned(self.abits), R))
        w_r = Signal(data.ArrayLayout(unsigned(self.wbits), R * C))
        first_r, first_p = Signal(), Signal()
        m.d.sync += [x_r.eq(self.x), w_r.eq(self.w), first_r.eq(self.first), first_p.eq(first_r)]

        pbits = product_bits(self.kind, self.wbits, self.abits, self.frac_bits)
        prod = [[Signal(signed(pbits), name=f"prod{r}_{c}") for c in range(C)] for r in range(R)]
        sign = [[Signal(name=f"sign{r}_{c}") for c in range(C)] for r in range(R)]
        for r in range(R):
            entry = None
            if self.kind == "post":
                lut = Sqrt2Lut(self.abits, self.frac_bits)
                m.submodules[f"lut{r}"] = lut
                m.d.comb += lut.x.eq(x_r[r])
                entry = lut.entry
            for c in range(C):
                p = _product(m, f"pe{r}_{c}", self.kind, self.wbits, self.abits, self.frac_bits, self.sign,
                             x_r[r], entry, w_r[r * C + c])
                if isinstance(p, tuple):
                    m.d.sync += [prod[r][c].eq(p[0]), sign[r][c].eq(p[1])]
                else:
                    m.d.sync += prod[r][c].eq(p)

        for c in range(C):
            if self.sign == "carry":
                column = _tree_sum_carry((prod[r][c], sign[r][c]) for r in range(R))
            else:
                column = _tree_sum(prod[r][c] for r in range(R))
            _accumulate(m, self.acc[c], first_p, column, self.clear)
        return m

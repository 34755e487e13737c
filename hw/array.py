"""The R x C POST MAC array: row-shared sqrt(2) LUTs, POST PEs, column adder trees, accumulators."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.lut import Sqrt2Lut, checked
from hw.pe import PostOnesPE, add_with_carry

__all__ = ["PostArray", "array_step_layout"]


def array_step_layout(rows: int, cols: int, wbits: int, abits: int, acc_bits: int) -> data.StructLayout:
    """Payload of one array step: ``x`` (R codes), ``w`` (R*C codes, row ``r`` column ``c`` at
    index ``r*C + c``), ``first``, ``last``, ``init`` (C signed accumulator start values)."""
    return data.StructLayout({
        "x": data.ArrayLayout(unsigned(abits), rows),
        "w": data.ArrayLayout(unsigned(wbits), rows * cols),
        "first": unsigned(1),
        "last": unsigned(1),
        "init": data.ArrayLayout(signed(acc_bits), cols),
    })


def _tree_sum(values):
    """Balanced adder tree (widths grow by one bit a level; Amaranth sizes them)."""
    values = list(values)
    while len(values) > 1:
        nxt = [values[i] + values[i + 1] for i in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values[0]


def _tree_sum_carry(terms):
    """Balanced adder tree over ``(value, carry)`` terms meaning ``value + carry``.

    Each adder takes one term's carry as its carry-in (:func:`hw.pe.add_with_carry`) and passes
    the other's up, so ``R`` terms need ``R - 1`` adders and leave one carry for the consumer's
    adder: ``sum + carry == sum of (value + carry)``. Returns ``(sum, carry)``.
    """
    terms = list(terms)
    while len(terms) > 1:
        nxt = [(add_with_carry(terms[i][0], terms[i + 1][0], terms[i][1]), terms[i + 1][1])
               for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms[0]


class PostArray(wiring.Component):
    """R x C array of POST PEs (:class:`hw.pe.PostOnesPE`) with one :class:`hw.lut.Sqrt2Lut` per row.

    Row ``r`` takes activation ``x[r]``; its LUT entry feeds the row's C PEs. Column ``c``
    accumulates ``sum_r product(x[r], w[r*C + c])`` over the steps of a tile:
    ``acc[c] = (first ? init[c] : acc[c]) + column_sum[c]``. After a step with ``last`` set,
    the C accumulators are offered on ``o``.

    Pipeline (stall-all): stage 1 registers the R*C products (LUT -> shift -> ones' complement),
    stage 2 adds each column's products in an adder tree into the accumulator register, which
    is also the output register. A product is registered as ``|p| ^ -s`` and its sign ``s``
    (``product = ones + s``, as many flip-flops as the two's complement product): the ``+ s`` of
    the R products of a column are the carry-ins of the column's R - 1 tree adders and of the
    accumulator's adder, so no PE has a sign adder of its own (:func:`_tree_sum_carry`). Latency: a step accepted on ``i`` at clock edge ``t`` is in the
    accumulators after edge ``t + 1``; the ``last`` step's results are valid on ``o`` the cycle
    after that (2 cycles after acceptance). Steps are accepted every cycle while ``o`` is not
    blocked: ``i.ready = ~o.valid | o.ready`` (back-pressure stalls the whole pipeline).
    The step after a ``last`` step must have ``first`` set.

    Parameters
    ----------
    rows, cols : int
        R input lanes, C output lanes.
    wbits, abits, frac_bits : int
        Weight code, activation code and product fraction widths.
    acc_bits : int
        Signed accumulator width (``arith.accumulator_bits`` of the largest fan-in); sums wrap
        modulo ``2**acc_bits`` (the program guarantees the true value fits).

    Attributes
    ----------
    i : In(stream.Signature(array_step_layout(...)))
        One step: R activations, R*C weight codes, ``first``, ``last``, C ``init`` values.
    o : Out(stream.Signature(data.ArrayLayout(signed(acc_bits), cols)))
        The C accumulators of a finished tile.
    """

    def __init__(self, rows: int, cols: int, wbits: int, abits: int,
                 frac_bits: int = arith.DEFAULT_FRAC_BITS, acc_bits: int | None = None):
        def check():
            for name, v in (("rows", rows), ("cols", cols)):
                if not isinstance(v, int) or v < 1:
                    raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
            fmt = arith.PostFormat(wbits, abits, frac_bits)
            acc = arith.accumulator_bits(rows, abits, frac_bits) if acc_bits is None else acc_bits
            if not isinstance(acc, int) or acc < fmt.product_bits:
                raise ValueError(f"acc_bits must be an integer >= the product width {fmt.product_bits}, "
                                 f"got {acc!r}")
            return fmt, acc
        self.fmt, acc_bits = checked(self, check)
        self.rows, self.cols, self.acc_bits = rows, cols, acc_bits
        self.wbits, self.abits, self.frac_bits = self.fmt.wbits, self.fmt.abits, self.fmt.frac_bits
        super().__init__({
            "i": In(stream.Signature(array_step_layout(rows, cols, wbits, abits, acc_bits))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(acc_bits), cols))),
        })

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        step = self.i.payload

        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)

        # stage 0 (combinational): row LUTs and PEs
        products = []
        for r in range(R):
            lut = Sqrt2Lut(self.abits, self.frac_bits)
            m.submodules[f"lut{r}"] = lut
            m.d.comb += lut.x.eq(step.x[r])
            row = []
            for c in range(C):
                pe = PostOnesPE(self.wbits, self.abits, self.frac_bits)
                m.submodules[f"pe{r}_{c}"] = pe
                m.d.comb += [pe.x.eq(step.x[r]), pe.lut.eq(lut.entry), pe.code.eq(step.w[r * C + c])]
                row.append(pe)
            products.append(row)

        # stage 1: registered products, flags and init
        s1_valid = Signal()
        s1_first = Signal()
        s1_last = Signal()
        s1_init = Signal(data.ArrayLayout(signed(self.acc_bits), C))
        # ones' MSB is the sign: register the magnitude bits (complemented) and the sign
        mag_bits = self.fmt.product_bits - 1
        s1_low = [[Signal(mag_bits, name=f"s1_ones{r}_{c}") for c in range(C)] for r in range(R)]
        s1_sign = [[Signal(name=f"s1_sign{r}_{c}") for c in range(C)] for r in range(R)]
        with m.If(advance):
            m.d.sync += [s1_valid.eq(self.i.valid), s1_first.eq(step.first), s1_last.eq(step.last),
                         s1_init.eq(step.init)]
            for r in range(R):
                for c in range(C):
                    m.d.sync += [s1_low[r][c].eq(products[r][c].ones[:mag_bits]),
                                 s1_sign[r][c].eq(products[r][c].sign)]
        s1_terms = [[(Cat(s1_low[r][c], s1_sign[r][c]).as_signed(), s1_sign[r][c]) for c in range(C)]
                    for r in range(R)]

        # stage 2: column adder trees into the accumulators (= the output register)
        acc = self.o.payload
        with m.If(advance & s1_valid):
            for c in range(C):
                column, carry = _tree_sum_carry(s1_terms[r][c] for r in range(R))
                m.d.sync += acc[c].eq(add_with_carry(Mux(s1_first, s1_init[c], acc[c]), column, carry))
        with m.If(advance & s1_valid & s1_last):
            m.d.sync += self.o.valid.eq(1)
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m

"""PostPE and Sqrt2Lut in the Amaranth simulator against golden.arith, exhaustively.

Every (activation, code) pair of a format goes through a row LUT and a PE in one simulation
and is compared with ``arith.post_product``. The last tests prove the comparison can fail: a
reference built from a LUT with one entry off by one, or with one product flipped, is reported.
"""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from golden import arith
from hw.build import pe_verilog
from hw.lut import Sqrt2Lut, split_tables
from hw.pe import PostOnesPE, PostPE, add_with_carry


def rtl_products(wbits, abits, pairs, frac_bits=arith.DEFAULT_FRAC_BITS):
    """Products the RTL (Sqrt2Lut -> PostPE) gives for ``pairs`` of (x, code), in one simulation."""
    lut = Sqrt2Lut(abits, frac_bits)
    pe = PostPE(wbits, abits, frac_bits)
    m = Module()
    m.submodules.lut, m.submodules.pe = lut, pe
    m.d.comb += [pe.x.eq(lut.x), pe.lut.eq(lut.entry)]
    out = []

    async def tb(ctx):
        for x, code in pairs:
            ctx.set(lut.x, int(x))
            ctx.set(pe.code, int(code))
            await ctx.delay(1e-9)                   # combinational: settle, then sample
            out.append(ctx.get(pe.product))

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    return np.array(out, dtype=np.int64)


def reference_products(pairs, wbits, abits, frac_bits=arith.DEFAULT_FRAC_BITS, lut=None):
    """Products from the shift/LUT rule of golden.arith, optionally with a different ``lut``."""
    pairs = np.asarray(pairs, dtype=np.int64)
    x, code = pairs[:, 0], pairs[:, 1]
    if lut is None:
        return arith.post_product(x, code, wbits, abits, frac_bits)
    sign, m = arith.post_decode(code, wbits)
    k = np.maximum(m - 1, 0)
    base = np.where(k & 1, np.asarray(lut, dtype=np.int64)[x], x << frac_bits)
    mag = np.where(m > 0, base >> (k >> 1), 0)
    return np.where(sign == 1, -mag, mag)


def mismatches(pairs, got, expected):
    """List of ``(x, code, got, expected)`` wherever the two differ."""
    return [(int(p[0]), int(p[1]), int(g), int(e)) for p, g, e in zip(pairs, got, expected) if g != e]


def all_pairs(wbits, abits):
    return [(x, c) for x in range(2 ** abits) for c in range(2 ** wbits)]


@pytest.mark.parametrize("wbits,abits", [(4, 4), (2, 2), (3, 8), (8, 4)])
def test_pe_exhaustive(wbits, abits):
    pairs = all_pairs(wbits, abits)
    got = rtl_products(wbits, abits, pairs)
    expected = reference_products(pairs, wbits, abits)
    assert len(got) == 2 ** (wbits + abits)
    assert mismatches(pairs, got, expected) == []
    # the whole signed range is exercised: the largest magnitude with both signs
    top = arith.max_product_magnitude(abits, arith.DEFAULT_FRAC_BITS)
    assert got.max() == top and got.min() == -top


def test_pe_w8a8_random_sample():
    rng = np.random.default_rng(1234)
    pairs = [(int(x), int(c)) for x, c in zip(rng.integers(0, 256, 500), rng.integers(0, 256, 500))]
    pairs += [(255, arith.post_code(s, k, 8)) for s in (0, 1) for k in (0, 1, 125, 126)] + [(255, 0), (255, 128)]
    got = rtl_products(8, 8, pairs)
    assert mismatches(pairs, got, reference_products(pairs, 8, 8)) == []


@pytest.mark.parametrize("frac_bits", [0, 3, 16])
def test_pe_other_frac_bits(frac_bits):
    pairs = all_pairs(4, 4)
    got = rtl_products(4, 4, pairs, frac_bits)
    assert mismatches(pairs, got, reference_products(pairs, 4, 4, frac_bits)) == []


def test_lut_contents_all_widths():
    for abits in arith.ABITS_RANGE:
        lut = Sqrt2Lut(abits)
        table = arith.sqrt2_lut(abits, arith.DEFAULT_FRAC_BITS)
        assert lut.lut_bits == arith.lut_entry_bits(abits, arith.DEFAULT_FRAC_BITS)
        got = []

        async def tb(ctx, lut=lut, got=got):
            for x in range(2 ** abits):
                ctx.set(lut.x, x)
                await ctx.delay(1e-9)
                got.append(ctx.get(lut.entry))

        sim = Simulator(lut)
        sim.add_testbench(tb)
        sim.run()
        assert got == table, f"abits={abits}"


def test_wrong_lut_reference_is_caught():
    """A reference whose LUT has one entry off by one must disagree with the RTL exactly there."""
    wbits, abits = 4, 4
    pairs = all_pairs(wbits, abits)
    got = rtl_products(wbits, abits, pairs)
    bad_lut = arith.sqrt2_lut(abits, arith.DEFAULT_FRAC_BITS)
    bad_lut[11] += 1
    found = mismatches(pairs, got, reference_products(pairs, wbits, abits, lut=bad_lut))
    assert found, "a corrupted LUT entry went unnoticed"
    assert {x for x, *_ in found} == {11}
    # k = 1 (m = 2), j = 0: the product is the LUT entry itself, both signs
    codes = {c for _, c, *_ in found}
    assert arith.post_code(0, 1, wbits) in codes and arith.post_code(1, 1, wbits) in codes


def test_wrong_expected_product_is_caught():
    pairs = all_pairs(4, 4)
    got = rtl_products(4, 4, pairs)
    expected = reference_products(pairs, 4, 4).copy()
    expected[37] = -expected[37] + 1
    assert mismatches(pairs, got, expected) == [(pairs[37][0], pairs[37][1], int(got[37]), int(expected[37]))]


def test_pe_verilog_has_no_multiplier():
    text = pe_verilog(4, 4)
    assert "module post_pe" in text
    assert " * " not in text          # shifts, muxes and one adder only
    with pytest.raises(arith.ArithError):
        PostPE(1, 4)


# --- PostOnesPE: the sign left to the consumer's carry-in ----------------------

def ones_products(wbits, abits, pairs, frac_bits=arith.DEFAULT_FRAC_BITS):
    """``(ones, sign)`` of Sqrt2Lut -> PostOnesPE for ``pairs`` of (x, code), in one simulation."""
    lut = Sqrt2Lut(abits, frac_bits)
    pe = PostOnesPE(wbits, abits, frac_bits)
    m = Module()
    m.submodules.lut, m.submodules.pe = lut, pe
    m.d.comb += [pe.x.eq(lut.x), pe.lut.eq(lut.entry)]
    out = []

    async def tb(ctx):
        for x, code in pairs:
            ctx.set(lut.x, int(x))
            ctx.set(pe.code, int(code))
            await ctx.delay(1e-9)
            out.append((ctx.get(pe.ones), ctx.get(pe.sign)))

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("wbits,abits,frac_bits", [(4, 4, 8), (4, 8, 8), (2, 2, 8), (3, 8, 8), (8, 4, 8),
                                                   (4, 4, 0), (4, 4, 16)])
def test_ones_pe_exhaustive(wbits, abits, frac_bits):
    """ones + sign == post_product for every (activation, code) pair; ones is |p| ^ -sign."""
    pairs = all_pairs(wbits, abits)
    got = ones_products(wbits, abits, pairs, frac_bits)
    expected = reference_products(pairs, wbits, abits, frac_bits)
    assert mismatches(pairs, got[:, 0] + got[:, 1], expected) == []
    codes = np.array(pairs)[:, 1]
    assert np.array_equal(got[:, 1], (codes >> (wbits - 1)) & 1)
    assert np.array_equal(np.where(got[:, 1] == 1, ~got[:, 0], got[:, 0]), np.abs(expected))
    top = arith.max_product_magnitude(abits, frac_bits)
    assert (got[:, 0] + got[:, 1]).min() == -top


def test_ones_pe_wrong_reference_is_caught():
    pairs = all_pairs(4, 4)
    got = ones_products(4, 4, pairs)
    expected = reference_products(pairs, 4, 4).copy()
    expected[100] += 1
    assert mismatches(pairs, got[:, 0] + got[:, 1], expected) == [
        (pairs[100][0], pairs[100][1], int(got[100].sum()), int(expected[100]))]


def test_add_with_carry_exhaustive():
    """add_with_carry(a, b, c) == a + b + c for every 4-bit signed a, b and c in {0, 1}."""
    from amaranth.hdl import Signal, signed
    a, b, c = Signal(signed(4)), Signal(signed(4)), Signal()
    y = Signal(signed(6))
    m = Module()
    m.d.comb += y.eq(add_with_carry(a, b, c))
    cases = [(i, j, k) for i in range(-8, 8) for j in range(-8, 8) for k in (0, 1)]
    got = []

    async def tb(ctx):
        for i, j, k in cases:
            ctx.set(a, i)
            ctx.set(b, j)
            ctx.set(c, k)
            await ctx.delay(1e-9)
            got.append(ctx.get(y))

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    assert got == [i + j + k for i, j, k in cases]


# --- the split sqrt(2) table (two small ROMs and an adder) ---------------------

@pytest.mark.parametrize("abits", [6, 7, 8])
def test_split_tables_every_frac_bits(abits):
    for frac_bits in arith.FRAC_BITS_RANGE:
        table = arith.sqrt2_lut(abits, frac_bits)
        q, e, hi, lo = split_tables(table, abits)
        assert q == abits // 2 and 0 <= e <= 16 and min(hi) >= 0 and min(lo) >= 0
        assert [(hi[x >> q] + lo[x & (2 ** q - 1)]) >> e for x in range(2 ** abits)] == table


def test_split_tables_reports_impossible():
    # a table no sum of two 2-entry tables can give (x = 0..3: 0, 0, 0, 5 is not additive)
    with pytest.raises(ValueError, match="no split"):
        split_tables([0, 0, 0, 5], 2, max_extra=2)


def test_split_lut_is_used_from_six_bits():
    from amaranth.back import rtlil
    luts = {a: Sqrt2Lut(a) for a in (4, 5, 6, 8)}
    for lut in luts.values():
        rtlil.convert(lut)                       # elaborates (and uses) each one
    assert luts[4].split is None and luts[5].split is None
    assert luts[6].split is not None and luts[8].split[:2] == (4, 3)


@pytest.mark.parametrize("abits,split", [(4, True), (5, True), (6, False), (8, False)])
def test_lut_forced_form_same_contents(abits, split):
    lut = Sqrt2Lut(abits, split=split)
    assert (lut.split is not None) == split
    got = []

    async def tb(ctx):
        for x in range(2 ** abits):
            ctx.set(lut.x, x)
            await ctx.delay(1e-9)
            got.append(ctx.get(lut.entry))

    sim = Simulator(lut)
    sim.add_testbench(tb)
    sim.run()
    assert got == arith.sqrt2_lut(abits, arith.DEFAULT_FRAC_BITS)

"""PotPE and IntPE in the Amaranth simulator against golden.arith_variants, exhaustively.

Every (activation, code) pair of a format goes through the PE in one simulation and is compared
with ``pot_product`` / ``int_product``. The reference functions are checked against a direct
float computation, and the last tests show that a corrupted expected value is reported.
"""

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from golden import arith
from golden import arith_variants as av
from hw.pe import IntPE, PotPE

FORMATS = [(4, 4), (2, 2), (3, 8), (8, 4), (5, 3)]


def all_pairs(wbits, abits):
    return [(x, c) for x in range(2 ** abits) for c in range(2 ** wbits)]


def rtl_products(pe, pairs):
    """Products the combinational ``pe`` gives for ``pairs`` of (x, code), in one simulation."""
    out = []

    async def tb(ctx):
        for x, code in pairs:
            ctx.set(pe.x, int(x))
            ctx.set(pe.code, int(code))
            await ctx.delay(1e-9)
            out.append(ctx.get(pe.product))

    sim = Simulator(pe)
    sim.add_testbench(tb)
    sim.run()
    return np.array(out, dtype=np.int64)


def mismatches(pairs, got, expected):
    return [(int(p[0]), int(p[1]), int(g), int(e)) for p, g, e in zip(pairs, got, expected) if g != e]


# --- the reference functions themselves ----------------------------------------

@pytest.mark.parametrize("wbits,abits", FORMATS)
def test_pot_reference_is_floor_of_exact_product(wbits, abits):
    fb = arith.DEFAULT_FRAC_BITS
    table = av.pot_product_table(wbits, abits, fb)
    for code in range(2 ** wbits):
        sign, m = (code >> (wbits - 1)) & 1, code & ((1 << (wbits - 1)) - 1)
        for x in range(2 ** abits):
            exact = 0 if m == 0 else np.floor(x * 2.0 ** fb * 2.0 ** -(m - 1))
            assert table[x, code] == (-exact if sign else exact), (x, code)


@pytest.mark.parametrize("wbits,abits", FORMATS)
def test_int_reference_is_signed_product(wbits, abits):
    table = av.int_product_table(wbits, abits)
    for code in range(2 ** wbits):
        w = code - 2 ** wbits if code >= 2 ** (wbits - 1) else code
        assert list(table[:, code]) == [w * x for x in range(2 ** abits)]
    top = av.int_max_product_magnitude(wbits, abits)
    assert -table.min() == top and table.min() >= -(2 ** (av.int_product_bits(wbits, abits) - 1))
    assert table.max() <= 2 ** (av.int_product_bits(wbits, abits) - 1) - 1


def test_int_accumulator_bits_never_overflow():
    for fan_in in (1, 7, 64, 1000):
        bits = av.int_accumulator_bits(fan_in, 4, 4)
        assert 2 * fan_in * av.int_max_product_magnitude(4, 4) <= 2 ** (bits - 1) - 1
    with pytest.raises(arith.ArithError):
        av.int_accumulator_bits(0, 4, 4)
    with pytest.raises(arith.ArithError):
        av.int_code_value(16, 4)
    with pytest.raises(arith.ArithError):
        av.pot_product(16, 0, 4, 4)


# --- RTL against the references ------------------------------------------------

@pytest.mark.parametrize("wbits,abits", FORMATS)
def test_pot_pe_exhaustive(wbits, abits):
    pairs = all_pairs(wbits, abits)
    got = rtl_products(PotPE(wbits, abits), pairs)
    x, c = np.array(pairs).T
    expected = av.pot_product(x, c, wbits, abits)
    assert len(got) == 2 ** (wbits + abits)
    assert mismatches(pairs, got, expected) == []
    top = arith.max_product_magnitude(abits, arith.DEFAULT_FRAC_BITS)
    assert got.max() == top and got.min() == -top


@pytest.mark.parametrize("frac_bits", [0, 3, 16])
def test_pot_pe_other_frac_bits(frac_bits):
    pairs = all_pairs(4, 4)
    got = rtl_products(PotPE(4, 4, frac_bits), pairs)
    x, c = np.array(pairs).T
    assert mismatches(pairs, got, av.pot_product(x, c, 4, 4, frac_bits)) == []


@pytest.mark.parametrize("wbits,abits", FORMATS)
def test_int_pe_exhaustive(wbits, abits):
    pairs = all_pairs(wbits, abits)
    pe = IntPE(wbits, abits)
    assert pe.product_bits == av.int_product_bits(wbits, abits)
    got = rtl_products(pe, pairs)
    x, c = np.array(pairs).T
    expected = av.int_product(x, c, wbits, abits)
    assert mismatches(pairs, got, expected) == []
    assert got.min() == -av.int_max_product_magnitude(wbits, abits)


def test_w8a8_random_sample():
    rng = np.random.default_rng(99)
    pairs = [(int(x), int(c)) for x, c in zip(rng.integers(0, 256, 400), rng.integers(0, 256, 400))]
    pairs += [(255, 127), (255, 128), (255, 255), (0, 128), (255, 1), (255, 0x80 | 1), (255, 0x7f), (255, 0xff)]
    x, c = np.array(pairs).T
    assert mismatches(pairs, rtl_products(IntPE(8, 8), pairs), av.int_product(x, c, 8, 8)) == []
    assert mismatches(pairs, rtl_products(PotPE(8, 8), pairs), av.pot_product(x, c, 8, 8)) == []


def test_wrong_expected_product_is_caught():
    pairs = all_pairs(4, 4)
    x, c = np.array(pairs).T
    for pe, ref in ((PotPE(4, 4), av.pot_product(x, c, 4, 4)), (IntPE(4, 4), av.int_product(x, c, 4, 4))):
        got = rtl_products(pe, pairs)
        expected = ref.copy()
        expected[45] += 1
        assert mismatches(pairs, got, expected) == [(pairs[45][0], pairs[45][1], int(got[45]), int(expected[45]))]


def test_pot_reference_differs_from_post():
    """POT and POST agree on even POST exponents only; the comparison is not between equal circuits."""
    post = arith.product_table(4, 4)
    pot = av.pot_product_table(4, 4)
    assert not np.array_equal(post, pot)
    assert np.array_equal(post[:, 1], pot[:, 1])          # k = 0: x << frac_bits in both


def test_verilog_structure():
    pot = verilog.convert(PotPE(4, 4), name="pot_pe", emit_src=False)
    intv = verilog.convert(IntPE(4, 4), name="int_pe", emit_src=False)
    assert " * " not in pot
    assert " * " in intv
    with pytest.raises(arith.ArithError):
        PotPE(1, 4)
    with pytest.raises(arith.ArithError):
        IntPE(4, 9)


# --- MAC cells and arrays built from the PEs -----------------------------------

def _golden(kind, x, code, wbits, abits):
    if kind == "post":
        return int(arith.post_product(x, code, wbits, abits))
    if kind == "pot":
        return int(av.pot_product(x, code, wbits, abits))
    return int(av.int_product(x, code, wbits, abits))


@pytest.mark.parametrize("kind", ["post", "pot", "int"])
def test_mac_row_accumulates_golden_products(kind):
    from hw.mac_cell import MacRow
    wbits, abits, share = 4, 4, 3
    dut = MacRow(kind, wbits, abits, share=share, fan_in=8)
    rng = np.random.default_rng(7)
    steps = [(int(rng.integers(0, 16)), [int(c) for c in rng.integers(0, 16, share)], i % 4 == 0)
             for i in range(12)]
    got = []

    async def tb(ctx):
        for x, codes, first in steps:
            ctx.set(dut.x, x)
            ctx.set(dut.codes, codes)
            ctx.set(dut.first, int(first))
            await ctx.tick()
            got.append([ctx.get(dut.acc[c]) for c in range(share)])   # result of the step before
        await ctx.tick()
        got.append([ctx.get(dut.acc[c]) for c in range(share)])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    acc = [0] * share
    expected = []
    for x, codes, first in steps:
        acc = [(0 if first else a) + _golden(kind, x, c, wbits, abits) for a, c in zip(acc, codes)]
        expected.append(list(acc))
    assert got[2:] == expected[1:]          # input register + accumulator: 2 edges from input to acc
    bad = [row[:] for row in expected]
    bad[5][1] += 1
    assert got[2:] != bad[1:]


@pytest.mark.parametrize("kind,sign,clear", [("post", None, "select"), ("post", "pe", "select"),
                                              ("post", "pe", "mask"), ("int", None, "select"), ("int", None, "mask")])
def test_pe_array_column_sums(kind, sign, clear):
    from hw.mac_cell import PeArray
    R, C, wbits, abits = 3, 2, 4, 4
    dut = PeArray(kind, R, C, wbits, abits, fan_in=16, sign=sign, clear=clear)
    assert dut.sign == ("carry" if kind == "post" and sign is None else "pe")
    rng = np.random.default_rng(3)
    steps = [([int(v) for v in rng.integers(0, 16, R)], [int(v) for v in rng.integers(0, 16, R * C)], i % 7 == 0)
             for i in range(40)]
    # corners: the largest activation with the largest codes of each sign, zero codes, mixed signs
    big_neg = 8 + 1 if kind != "int" else 8
    big_pos = 1 if kind != "int" else 7
    steps += [([15] * R, [big_neg] * (R * C), True), ([15] * R, [big_neg] * (R * C), False),
              ([15] * R, [big_pos] * (R * C), True), ([15] * R, [0] * (R * C), False),
              ([15] * R, [big_pos, big_neg] * (R * C // 2), False)]
    got = []

    async def tb(ctx):
        for x, w, first in steps + [([0] * R, [0] * (R * C), False)] * 3:
            ctx.set(dut.x, x)
            ctx.set(dut.w, w)
            ctx.set(dut.first, int(first))
            await ctx.tick()
            got.append([ctx.get(dut.acc[c]) for c in range(C)])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    acc, expected = [0] * C, []
    for x, w, first in steps:
        acc = [(0 if first else acc[c]) + sum(_golden(kind, x[r], w[r * C + c], wbits, abits) for r in range(R))
               for c in range(C)]
        expected.append(acc)
    # step k is in acc 3 edges after it was presented (input reg, product reg, acc): got[k + 2]
    assert got[2:len(steps) + 2] == expected
    assert min(min(e) for e in expected) < 0 < max(max(e) for e in expected)


# --- every accumulator / sign style, exhaustively through the accumulator ---------

def _run_row(dut, steps, share):
    """Feed (x, codes, first) steps; the accumulators after each step (2 edges later)."""
    got = []

    async def tb(ctx):
        for x, codes, first in steps + [(0, [0] * share, False)] * 2:
            ctx.set(dut.x, x)
            ctx.set(dut.codes, codes)
            ctx.set(dut.first, int(first))
            await ctx.tick()
            got.append([ctx.get(dut.acc[c]) for c in range(share)])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return got[1:len(steps) + 1]


STYLES = [("post", "select", "pe"), ("post", "mask", "pe"), ("post", "mask", "carry"),
          ("post", "select", "carry"), ("int", "select", "pe"), ("int", "mask", "pe"), ("pot", "select", "pe")]


@pytest.mark.parametrize("kind,clear,sign", STYLES)
@pytest.mark.parametrize("wbits,abits", [(4, 4), (3, 8)])
def test_mac_row_styles_exhaustive(kind, clear, sign, wbits, abits):
    """Every (activation, code) pair enters an accumulator, as a first product and added to a
    running sum that reaches both ends of the accumulator's range (largest codes, both signs)."""
    from hw.mac_cell import MacRow
    share = 4
    dut = MacRow(kind, wbits, abits, share=share, fan_in=2 ** wbits, clear=clear, sign=sign)
    ref = {"post": lambda x, c: int(arith.post_product(x, c, wbits, abits)),
           "pot": lambda x, c: int(av.pot_product(x, c, wbits, abits)),
           "int": lambda x, c: int(av.int_product(x, c, wbits, abits))}[kind]
    codes = list(range(2 ** wbits))
    steps = []
    for x in range(2 ** abits):
        # column c walks the codes in a rotated order; a new sum starts every 2**wbits steps
        for i in range(2 ** wbits):
            steps.append((x, [codes[(i + 3 * c) % len(codes)] for c in range(share)], i == 0 and x % 2 == 0))
    steps[0] = (steps[0][0], steps[0][1], True)
    got = _run_row(dut, steps, share)
    acc, expected = [0] * share, []
    for x, cs, first in steps:
        acc = [(0 if first else a) + ref(x, c) for a, c in zip(acc, cs)]
        expected.append(list(acc))
    assert got == expected
    lim = 2 ** (dut.acc_bits - 1)
    assert all(-lim <= v < lim for row in expected for v in row)
    # the sums reach large magnitudes of both signs (the top activation times the largest codes)
    flat = [v for row in expected for v in row]
    top = max(abs(ref(2 ** abits - 1, c)) for c in codes)
    assert max(flat) >= top and min(flat) <= -top


def test_mac_row_style_errors():
    from hw.mac_cell import MacRow, PeArray
    with pytest.raises(ValueError, match="clear must be one of"):
        MacRow("post", 4, 4, clear="reset")
    with pytest.raises(ValueError, match="sign must be one of"):
        MacRow("post", 4, 4, sign="late")
    with pytest.raises(ValueError, match="POST PEs only"):
        MacRow("int", 4, 4, sign="carry")
    with pytest.raises(ValueError, match="clear must be one of"):
        PeArray("int", 2, 2, 4, 4, clear="x")

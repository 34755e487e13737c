"""Pin the arithmetic contract in golden/arith.py against independent float / exact-integer math."""

from decimal import Decimal, getcontext
from fractions import Fraction
import math

import numpy as np
import pytest

from golden import arith

W_ALL = list(arith.WBITS_RANGE)
A_ALL = list(arith.ABITS_RANGE)


def exact_lut(x: int, frac_bits: int) -> int:
    """round_half_up(x * 2**F / sqrt(2)) with 60-digit decimals (the value is never a tie for x > 0)."""
    getcontext().prec = 60
    v = Decimal(x) * Decimal(2) ** frac_bits / Decimal(2).sqrt()
    return int((v + Decimal("0.5")).to_integral_value(rounding="ROUND_FLOOR"))


# --- widths -----------------------------------------------------------------

@pytest.mark.parametrize("fn,bad", [
    (arith.check_wbits, [1, 9, 0, -4, 4.0, "4", None]),
    (arith.check_abits, [1, 9, 0, 3.5, "8", None]),
    (arith.check_frac_bits, [-1, 17, 8.0, "8", None]),
])
def test_bad_widths_raise_arith_error(fn, bad):
    for v in bad:
        with pytest.raises(arith.ArithError, match="must be an integer"):
            fn(v)
    assert issubclass(arith.ArithError, ValueError)


def test_good_widths_pass():
    assert [arith.check_wbits(w) for w in W_ALL] == W_ALL
    assert [arith.check_abits(np.int64(a)) for a in A_ALL] == A_ALL
    assert arith.check_frac_bits(0) == 0 and arith.check_frac_bits(16) == 16
    for fn in (arith.post_magnitudes, arith.post_code_values, arith.post_max_exponent):
        with pytest.raises(arith.ArithError):
            fn(1)
    with pytest.raises(arith.ArithError):
        arith.PostFormat(4, 9)


# --- the sqrt(2) LUT ----------------------------------------------------------

@pytest.mark.parametrize("abits,frac_bits", [(2, 0), (2, 8), (4, 8), (4, 3), (8, 8), (8, 16), (6, 11), (3, 1)])
def test_lut_entries_match_float_and_exact_rounding(abits, frac_bits):
    lut = arith.sqrt2_lut(abits, frac_bits)
    assert len(lut) == 2 ** abits
    for x, entry in enumerate(lut):
        real = x * 2.0 ** frac_bits / math.sqrt(2.0)
        assert abs(entry - real) <= 0.5
        assert entry == exact_lut(x, frac_bits)
        assert entry == arith.sqrt2_lut_entry(x, frac_bits)
    bits = arith.lut_entry_bits(abits, frac_bits)
    assert max(lut).bit_length() <= bits <= abits + frac_bits
    assert arith.PostFormat(2, abits, frac_bits).lut == lut


# --- POST codes ----------------------------------------------------------------

@pytest.mark.parametrize("wbits", W_ALL)
def test_post_level_set(wbits):
    kmax = 2 ** (wbits - 1) - 2
    assert arith.post_max_exponent(wbits) == kmax
    mags = arith.post_magnitudes(wbits)
    np.testing.assert_allclose(mags, [math.sqrt(2.0) ** -k for k in range(kmax + 1)], rtol=1e-14)
    vals = arith.post_code_values(wbits)
    assert len(vals) == arith.post_num_codes(wbits) == 2 ** wbits
    assert len(set(vals.tolist())) == 2 * (kmax + 1) + 1       # +-levels and one zero (two zero codes)


@pytest.mark.parametrize("wbits", W_ALL)
def test_post_code_decode_round_trip(wbits):
    kmax = arith.post_max_exponent(wbits)
    for sign in (0, 1):
        for k in range(kmax + 1):
            c = arith.post_code(sign, k, wbits)
            s, m = arith.post_decode(c, wbits)
            assert (int(s), int(m)) == (sign, k + 1)
            v = arith.post_code_values(wbits)[c]
            assert v == (-1) ** sign * 2.0 ** (-k / 2)
    with pytest.raises(arith.ArithError):
        arith.post_code(0, kmax + 1, wbits)
    with pytest.raises(arith.ArithError):
        arith.post_decode(2 ** wbits, wbits)
    with pytest.raises(arith.ArithError):
        arith.post_decode(-1, wbits)


@pytest.mark.parametrize("wbits", W_ALL)
def test_encode_decode_round_trip(wbits):
    codes = np.arange(2 ** wbits)
    vals = arith.post_code_values(wbits)
    enc = arith.encode_post(vals, wbits)
    zero_neg = 1 << (wbits - 1)
    expected = np.where(codes == zero_neg, 0, codes)     # the signed zero re-encodes as code 0
    np.testing.assert_array_equal(enc, expected)
    # scaled values decode back with the same alpha
    alpha = 0.37
    np.testing.assert_array_equal(arith.encode_post(vals * alpha / alpha, wbits), expected)


@pytest.mark.parametrize("wbits", W_ALL)
def test_encode_post_is_nearest_with_ties_up(wbits):
    rng = np.random.default_rng(wbits)
    v = np.concatenate([rng.uniform(-1.2, 1.2, 5000), rng.normal(0, 0.05, 2000)])
    vals = arith.post_code_values(wbits)
    got = vals[arith.encode_post(v, wbits)]
    levels = np.unique(vals)
    dist = np.abs(np.clip(v, -1, 1)[:, None] - levels[None, :]).min(axis=1)
    np.testing.assert_allclose(np.abs(np.clip(v, -1, 1) - got), dist, rtol=0, atol=1e-15)
    # exact midpoints go to the larger magnitude; half the smallest level goes to that level
    mags = np.concatenate([arith.post_magnitudes(wbits), [0.0]])
    for hi, lo in zip(mags[:-1], mags[1:]):
        mid = (hi + lo) / 2
        for sgn in (1, -1):
            assert vals[arith.encode_post(np.array(sgn * mid), wbits)] == sgn * hi
            below = np.nextafter(mid, 0.0)
            assert vals[arith.encode_post(np.array(sgn * below), wbits)] == sgn * lo
    assert arith.encode_post(np.array(1e-300), wbits) == 0
    assert arith.encode_post(np.array(-7.0), wbits) == arith.post_code(1, 0, wbits)
    with pytest.raises(arith.ArithError):
        arith.encode_post(np.array([0.1, np.nan]), wbits)
    with pytest.raises(arith.ArithError):
        arith.encode_post(np.array([np.inf]), wbits)


def test_widen_post_code_keeps_values():
    for f in W_ALL:
        for t in W_ALL:
            codes = np.arange(2 ** f)
            if t < f:
                with pytest.raises(arith.ArithError):
                    arith.widen_post_code(codes, f, t)
                continue
            wide = arith.widen_post_code(codes, f, t)
            np.testing.assert_array_equal(arith.post_code_values(t)[wide], arith.post_code_values(f)[codes])
            for a in (2, 5, 8):
                x = np.arange(2 ** a)[:, None]
                np.testing.assert_array_equal(arith.post_product(x, wide[None, :], t, a),
                                              arith.post_product(x, codes[None, :], f, a))


@pytest.mark.parametrize("wbits", W_ALL)
def test_zero_codes_both_signs(wbits):
    neg_zero = 1 << (wbits - 1)
    assert arith.post_code(0, None, wbits) == 0 and arith.post_code(1, None, wbits) == 0
    assert arith.post_code_values(wbits)[0] == 0 and arith.post_code_values(wbits)[neg_zero] == 0
    for abits in (2, 8):
        x = np.arange(2 ** abits)
        assert not np.any(arith.post_product(x, 0, wbits, abits))
        assert not np.any(arith.post_product(x, neg_zero, wbits, abits))


# --- products --------------------------------------------------------------------

@pytest.mark.parametrize("wbits", W_ALL)
@pytest.mark.parametrize("abits", A_ALL)
def test_post_product_exhaustive_error_bound(wbits, abits):
    for frac_bits in (arith.DEFAULT_FRAC_BITS, 4):
        table = arith.product_table(wbits, abits, frac_bits)
        assert table.shape == (2 ** abits, 2 ** wbits) and table.dtype == np.int64
        x = np.arange(2 ** abits)[:, None]
        codes = np.arange(2 ** wbits)[None, :]
        np.testing.assert_array_equal(table, arith.post_product(x, codes, wbits, abits, frac_bits))
        real = x * arith.post_code_values(wbits)[codes] * 2.0 ** frac_bits
        err = table - real
        assert np.abs(err).max() < arith.lut_error_bound(frac_bits)
        sign, m = arith.post_decode(codes, wbits)
        k = np.maximum(m - 1, 0)
        even = np.broadcast_to((m > 0) & (k % 2 == 0), table.shape)
        # even exponents: exact shift, truncated (floor of the magnitude)
        np.testing.assert_array_equal(np.abs(table)[even], np.floor(np.abs(real)[even]))
        # odd exponents: LUT within 1/2 before the shift, then truncation: err in (-1 - 2**-(j+1), 2**-(j+1)]
        odd = np.broadcast_to((m > 0) & (k % 2 == 1), table.shape)
        half = np.broadcast_to(2.0 ** -((k >> 1) + 1), table.shape)
        mag_err = (np.abs(table) - np.abs(real))[odd]
        assert np.all(mag_err <= half[odd] + 1e-9) and np.all(mag_err > -1 - half[odd] - 1e-9)
        assert np.all(np.abs(mag_err[np.broadcast_to(k >> 1 == 0, table.shape)[odd]]) <= 0.5 + 1e-9)
        # magnitudes are only ever rounded up by the LUT's half unit, never by the shift
        assert (np.abs(table) - np.abs(real)).max() <= 0.5 + 1e-9
        # sign symmetry and the magnitude limit
        pos = np.broadcast_to(sign == 0, table.shape)
        neg_codes = codes | (1 << (wbits - 1))
        np.testing.assert_array_equal(arith.post_product(x, neg_codes, wbits, abits, frac_bits)[pos], -table[pos])
        assert np.abs(table).max() == arith.max_product_magnitude(abits, frac_bits)
        assert arith.max_product_magnitude(abits, frac_bits).bit_length() <= \
            arith.product_magnitude_bits(abits, frac_bits)


def test_post_product_rejects_out_of_range():
    with pytest.raises(arith.ArithError):
        arith.post_product(16, 1, 4, 4)
    with pytest.raises(arith.ArithError):
        arith.post_product(-1, 1, 4, 4)
    with pytest.raises(arith.ArithError):
        arith.post_product(3, 16, 4, 4)


# --- accumulation ----------------------------------------------------------------

@pytest.mark.parametrize("fan_in", [1, 3, 64, 255, 256, 1000, 4096])
@pytest.mark.parametrize("abits,frac_bits", [(2, 0), (4, 8), (8, 8), (8, 16)])
def test_accumulator_bits_never_overflow(fan_in, abits, frac_bits):
    bits = arith.accumulator_bits(fan_in, abits, frac_bits)
    maxmag = arith.max_product_magnitude(abits, frac_bits)
    worst = fan_in * maxmag + fan_in * maxmag          # all products at the limit plus the largest bias
    assert -(2 ** (bits - 1)) <= -worst and worst <= 2 ** (bits - 1) - 1
    # the requantisation product fits its declared width, and int64 with it
    pbits = arith.requant_product_bits(bits)
    assert (worst * (2 ** arith.MULT_BITS - 1)).bit_length() + 1 <= pbits
    assert worst * (2 ** arith.MULT_BITS - 1) + 2 ** 62 < 2 ** 63
    # the real worst case from the product table
    table = arith.product_table(8, abits, frac_bits)
    assert fan_in * np.abs(table).max() <= fan_in * maxmag


def test_accumulator_bits_errors():
    for bad in (0, -3, 2.0, None):
        with pytest.raises(arith.ArithError):
            arith.accumulator_bits(bad, 4)


# --- requantisation ----------------------------------------------------------------

def test_fixed_point_multiplier_accuracy():
    rng = np.random.default_rng(0)
    ratios = np.concatenate([np.logspace(-14, 4, 400), rng.uniform(1e-6, 10, 400),
                             [1.0, 0.5, 2.0 ** -20, 1 - 2.0 ** -30, 0.75]])
    for r in ratios:
        mult, shift = arith.fixed_point_multiplier(float(r))
        assert 2 ** (arith.MULT_BITS - 1) <= mult < 2 ** arith.MULT_BITS
        assert shift in arith.SHIFT_RANGE
        assert abs(mult / 2 ** shift - r) / r < 2.0 ** -arith.MULT_BITS
    # the mantissa carry case: just below a power of two rounds up to it
    assert arith.fixed_point_multiplier(1 - 2.0 ** -30) == (2 ** 14, 14)
    assert arith.fixed_point_multiplier(np.float32(0.25)) == (2 ** 14, 16)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "0.5", None, 2.0 ** 20, 2.0 ** -60])
def test_fixed_point_multiplier_errors(bad):
    with pytest.raises(arith.ArithError):
        arith.fixed_point_multiplier(bad)


def test_requantize_rounds_half_up_and_clips():
    mult, shift, bits = 3 * 2 ** 12, 15, 4              # ratio 0.375
    qmax = 2 ** bits - 1
    acc = np.arange(-200, 400, dtype=np.int64)
    got = arith.requantize(acc, mult, shift, bits)
    ref = [min(max(math.floor(Fraction(int(a) * mult, 2 ** shift) + Fraction(1, 2)), 0), qmax) for a in acc]
    np.testing.assert_array_equal(got, ref)
    # exact half: 4 * 0.375 = 1.5 -> 2; 12 * 0.375 = 4.5 -> 5; just below half rounds down
    assert arith.requantize(4, mult, shift, bits) == 2
    assert arith.requantize(12, mult, shift, bits) == 5
    assert arith.requantize(3, 2 ** 14, 15, bits) == 2      # 1.5 -> 2
    assert arith.requantize(1, 2 ** 14 - 1, 15, bits) == 0  # 0.49997 -> 0
    assert arith.requantize(-1, 2 ** 14, 15, bits) == 0     # -0.5 -> 0 (and ReLU)
    assert arith.requantize(10 ** 6, mult, shift, bits) == qmax
    assert arith.requantize(-(10 ** 6), mult, shift, bits) == 0
    big = np.array([2 ** 40, -(2 ** 40)], dtype=np.int64)
    np.testing.assert_array_equal(arith.requantize(big, 2 ** 15 - 1, 63, 8), [0, 0])
    for m, s in [(0, 8), (2 ** 15, 8), (100, 0), (100, 64)]:
        with pytest.raises(arith.ArithError):
            arith.requantize(5, m, s, 4)
    with pytest.raises(arith.ArithError):
        arith.requantize(5, 100, 8, 9)


def test_quantize_activation():
    step = 0.5
    x = np.array([-3.0, 0.0, 0.24, 0.25, 0.74, 0.75, 7.0, 7.25, 7.5, 100.0])
    np.testing.assert_array_equal(arith.quantize_activation(x, step, 4), [0, 0, 0, 1, 1, 2, 14, 15, 15, 15])
    assert arith.quantize_activation(x, step, 4).dtype == np.int64
    for bad_step in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(arith.ArithError):
            arith.quantize_activation(x, bad_step, 4)
    with pytest.raises(arith.ArithError):
        arith.quantize_activation(np.array([1.0, np.nan]), step, 4)
    with pytest.raises(arith.ArithError):
        arith.quantize_activation(x, step, 1)


def test_post_format():
    f = arith.PostFormat(4, 4)
    assert f.frac_bits == arith.DEFAULT_FRAC_BITS
    assert f.kmax == 6 and f.max_shift == 3
    assert f.product_bits == 4 + arith.DEFAULT_FRAC_BITS + 1
    assert f.acc_bits(64) == arith.accumulator_bits(64, 4)
    assert f.product(15, 1) == 15 << arith.DEFAULT_FRAC_BITS


# --- the hardware-sized stage arithmetic ----------------------------------------------------------

def test_saturate_and_shift_round():
    v = np.array([-(1 << 20), -32769, -32768, 0, 32767, 32768, 1 << 20])
    np.testing.assert_array_equal(arith.saturate(v), [-32768, -32768, -32768, 0, 32767, 32767, 32767])
    x = np.arange(-40, 41)
    for sh in (1, 2, 5):
        ref = [math.floor(Fraction(int(a), 2 ** sh) + Fraction(1, 2)) for a in x]
        np.testing.assert_array_equal(arith.shift_round(x, sh), ref)
    # amounts above MAX_SHIFT act as MAX_SHIFT: 0 for every operand the datapath holds
    np.testing.assert_array_equal(arith.shift_round(np.array([-(1 << 40), 1 << 40]), 200), [0, 0])
    with pytest.raises(arith.ArithError):
        arith.shift_round(3, 0)


def test_normalize_fixed_is_exact_rounding():
    """mant / 2**shift is f / 2**frac rounded half up to FACTOR_MANT_BITS significant bits, exhaustively
    over the sigmoid and exp tables and a sweep of small and large numbers."""
    B = arith.FACTOR_MANT_BITS
    fs = np.concatenate([np.arange(1, 5000), np.array([(1 << 28) - 1, 1 << 27, 3 << 20]),
                         *arith.asq_tables("sigmoid"), *arith.asq_tables("exp")])
    mant, shift = arith.normalize_fixed(fs, 16)
    assert ((mant >= 1 << (B - 1)) & (mant < 1 << B)).all()
    for f, m, s in zip(fs.tolist(), mant.tolist(), shift.tolist()):
        exact = Fraction(f, 1 << 16)
        assert abs(Fraction(m, 1 << s) - exact) <= exact / (1 << B)
    with pytest.raises(arith.ArithError):
        arith.normalize_fixed([0, 3], 16)


def test_stage_value_against_fractions():
    """stage_value is round_half_up((acc >> acc_shift) * m / 2**sh) + bias, with the factor folded into
    m by beta_multiplier, checked against exact rational arithmetic on random operands."""
    rng = np.random.default_rng(3)
    B = arith.FACTOR_MANT_BITS
    for _ in range(200):
        acc = rng.integers(-(1 << 25), 1 << 25, size=(3, 4))
        mult = rng.integers(-(1 << 15) + 1, 1 << 15, size=4)
        shift = rng.integers(16, 40, size=4)
        bias = rng.integers(-(1 << 17) + 1, 1 << 17, size=4)
        acc_shift = int(rng.integers(2, 6))
        beta = rng.integers(40, 1 << 17, size=3)
        got = arith.stage_value(acc, mult, shift, bias, acc_shift, beta)
        bm, bs = arith.normalize_fixed(beta, arith.ASQ_BETA_FRAC)
        for n in range(3):
            for c in range(4):
                a = int(acc[n, c]) >> acc_shift
                m = (int(mult[c]) * int(bm[n])) >> B
                sh = min(int(shift[c]) + int(bs[n]) - B, arith.MAX_SHIFT)
                want = math.floor(Fraction(a * m, 1 << sh) + Fraction(1, 2)) + int(bias[c])
                assert got[n, c] == want
    with pytest.raises(arith.ArithError):                       # operand wider than RESCALE_ACC_BITS
        arith.stage_value(np.array([[1 << 30]]), [1], [20], [0], 0)
    with pytest.raises(arith.ArithError):                       # combined shift below 1
        arith.stage_value(np.array([[5]]), [1 << 14], [1], [0], 0, beta=[1 << 20])


def test_sum_pool_asq_sums_and_adapter():
    v = np.full((1, 2, 8, 8), 1000)
    v[0, 1] = -32768
    pooled = arith.sum_pool(v)                                  # 64 positions: shift 6 - 4 = 2
    np.testing.assert_array_equal(pooled.reshape(-1), [16000, -32768])     # 64000/4 = 16000; the other saturates
    assert arith.sum_pool_shift(64) == 2 and arith.sum_pool_shift(4) == 0 and arith.pool_shift(49) == 6
    s = arith.asq_sums(np.full((2, 3, 7, 7), 100))             # 4900 / 64 = 76.56 -> 77
    np.testing.assert_array_equal(s, np.full((2, 3), 77))
    z = arith.adapter_z(np.array([[3, -4]]), np.array([[2, 1], [-1, 1]]), np.array([5, 100]),
                        np.array([[1, 2]]), np.array([7]), h_shift=1)
    # H = [6-4+5, -3-4+100] = [7, 93]; h = [3, 46]; z = 3 + 92 + 7
    assert int(z[0]) == 102
    z1 = arith.adapter_z(np.array([[3, -4]]), np.array([[2, 1]]), np.array([-9]), h_shift=2)
    assert int(z1[0]) == (6 - 4 - 9) >> 2                      # one layer: no ReLU, arithmetic shift


def test_adapter_layer_exponent_keeps_32_bits():
    rng = np.random.default_rng(1)
    for _ in range(50):
        w = rng.normal(0, 10 ** rng.uniform(-4, 2), size=(8, 64))
        b = rng.normal(0, 1, size=8)
        e = arith.adapter_layer_exponent(w, b, 1 << 15)
        W = np.floor(w * 2.0 ** e + 0.5)
        B = np.floor(b * 2.0 ** e + 0.5)
        assert np.abs(W).max() < 1 << 15
        assert (np.abs(W).sum(axis=1) * (1 << 15) + np.abs(B)).max() < 1 << 31
        # the largest such exponent
        W1 = np.floor(w * 2.0 ** (e + 1) + 0.5)
        B1 = np.floor(b * 2.0 ** (e + 1) + 0.5)
        assert np.abs(W1).max() >= 1 << 15 or (np.abs(W1).sum(axis=1) * (1 << 15) + np.abs(B1)).max() >= 1 << 31 \
            or e == arith.adapter_weight_exponent(w)

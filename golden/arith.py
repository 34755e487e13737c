"""The POST/LSQ integer arithmetic of the accelerator, defined once.

This module is the single definition of every number the hardware uses. The
golden model (export and integer executor), the RTL generator (``hw/``) and the
tests import it; nothing else restates these numbers. It depends on the Python
standard library and NumPy only (no torch), so ``hw/`` can import it.
``docs/arithmetic.md`` is the prose version of this file.

Summary
-------
* Activations are unsigned ``abits``-bit codes ``x`` in ``[0, 2**abits - 1]``;
  the real value is ``x * step``.
* A ``wbits``-bit POST weight code is ``sign << (wbits-1) | m`` with an
  ``(wbits-1)``-bit magnitude code ``m``. ``m == 0`` means the weight is 0 (the
  sign bit is then ignored; the exporter always writes 0). For ``m >= 1`` the
  exponent is ``k = m - 1`` and the weight is ``(-1)**sign * alpha * sqrt(2)**-k``,
  ``k`` in ``[0, 2**(wbits-1) - 2]``.
* The product of ``x`` and a weight code is an integer in units of
  ``alpha * 2**-frac_bits``: with ``j = k >> 1``

  - even ``k``: ``(x << frac_bits) >> j``                      (exact)
  - odd ``k``:  ``sqrt2_lut[x] >> j``, where
    ``sqrt2_lut[x] = round_half_up(x * 2**frac_bits / sqrt(2))``

  then negated when ``sign`` is set. ``>>`` truncates (floor of a non-negative
  value), so the magnitude is never rounded up. This is what a barrel shifter
  and a row-shared look-up table compute, with one adder/negator for the sign.
* The accumulator sums signed products over the fan-in, starting from the
  bias (an integer in the same units). Its width is derived from the fan-in so
  it can never overflow (:func:`accumulator_bits`).
* Requantisation to the next layer's code: ``q = clip(((acc * mult) +
  2**(shift-1)) >> shift, 0, qmax)`` with an unsigned ``MULT_BITS``-bit
  ``mult`` (round half up, arithmetic shift, ReLU folded into the lower clip).
  The final layer emits ``acc`` itself (signed logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from golden.errors import InputError

__all__ = [
    "WBITS_RANGE", "ABITS_RANGE", "DEFAULT_FRAC_BITS", "FRAC_BITS_RANGE", "MULT_BITS",
    "SHIFT_RANGE", "ArithError",
    "check_wbits", "check_abits", "check_frac_bits",
    "post_max_exponent", "post_num_codes", "post_magnitudes", "post_code", "post_decode",
    "post_code_values", "widen_post_code", "encode_post", "sqrt2_lut_entry", "sqrt2_lut", "lut_entry_bits",
    "post_product", "product_table", "product_magnitude_bits", "max_product_magnitude",
    "accumulator_bits", "fixed_point_multiplier", "requantize", "requant_product_bits",
    "quantize_activation", "lut_error_bound", "PostFormat",
]

#: Valid weight bit-widths for POST codes (1 bit has no room for a magnitude).
WBITS_RANGE = range(2, 9)
#: Valid activation bit-widths.
ABITS_RANGE = range(2, 9)
#: Fraction bits of a product (units of alpha * 2**-frac_bits).
DEFAULT_FRAC_BITS = 8
FRAC_BITS_RANGE = range(0, 17)
#: Width of the unsigned requantisation multiplier; it is normalised into
#: ``[2**(MULT_BITS-1), 2**MULT_BITS)`` so every ratio keeps MULT_BITS significant bits. A signed
#: multiplier (``|mult| < 2**MULT_BITS``) is a 16-bit two's-complement DSP operand.
MULT_BITS = 15
#: Allowed requantisation right shifts (the hardware shifter is 6 bits wide).
SHIFT_RANGE = range(1, 64)


class ArithError(InputError):
    """A parameter lies outside what the arithmetic (and so the hardware) supports."""


def check_wbits(wbits: int) -> int:
    if not isinstance(wbits, (int, np.integer)) or int(wbits) not in WBITS_RANGE:
        raise ArithError(f"weight bits must be an integer in {WBITS_RANGE.start}..{WBITS_RANGE.stop - 1} "
                         f"(POST needs a sign bit and at least one magnitude bit), got {wbits!r}")
    return int(wbits)


def check_abits(abits: int) -> int:
    if not isinstance(abits, (int, np.integer)) or int(abits) not in ABITS_RANGE:
        raise ArithError(f"activation bits must be an integer in {ABITS_RANGE.start}..{ABITS_RANGE.stop - 1}, "
                         f"got {abits!r}")
    return int(abits)


def check_frac_bits(frac_bits: int) -> int:
    if not isinstance(frac_bits, (int, np.integer)) or int(frac_bits) not in FRAC_BITS_RANGE:
        raise ArithError(f"product fraction bits must be an integer in {FRAC_BITS_RANGE.start}.."
                         f"{FRAC_BITS_RANGE.stop - 1}, got {frac_bits!r}")
    return int(frac_bits)


# --- POST weight codes -------------------------------------------------------

def post_max_exponent(wbits: int) -> int:
    """Largest exponent k of a ``wbits``-bit POST code: ``2**(wbits-1) - 2``."""
    return 2 ** (check_wbits(wbits) - 1) - 2


def post_num_codes(wbits: int) -> int:
    """Number of distinct codes (``2**wbits``); levels are ``2*(kmax+1) + 1``."""
    return 2 ** check_wbits(wbits)


def post_magnitudes(wbits: int) -> np.ndarray:
    """Normalised non-zero magnitudes ``sqrt(2)**-k`` for k = 0..kmax, descending (float64)."""
    k = np.arange(post_max_exponent(wbits) + 1, dtype=np.float64)
    return 2.0 ** (-k / 2.0)


def post_code(sign: int, k: int | None, wbits: int) -> int:
    """Code for ``(-1)**sign * sqrt(2)**-k``; ``k=None`` encodes zero (sign ignored, written 0)."""
    wbits = check_wbits(wbits)
    if k is None:
        return 0
    if not 0 <= k <= post_max_exponent(wbits):
        raise ArithError(f"POST exponent {k} out of range 0..{post_max_exponent(wbits)} at {wbits} bits")
    return (int(bool(sign)) << (wbits - 1)) | (k + 1)


def post_decode(code, wbits: int):
    """Split codes into ``(sign, m)``; ``k = m - 1`` where ``m > 0``. Works on ints and arrays."""
    wbits = check_wbits(wbits)
    code = np.asarray(code, dtype=np.int64)
    if np.any((code < 0) | (code >= 2 ** wbits)):
        raise ArithError(f"POST code out of range 0..{2 ** wbits - 1} at {wbits} bits")
    sign = (code >> (wbits - 1)) & 1
    m = code & ((1 << (wbits - 1)) - 1)
    return sign, m


def widen_post_code(code, from_bits: int, to_bits: int):
    """Re-encode ``from_bits``-bit POST codes as ``to_bits``-bit codes with the same value.

    The magnitude code ``m`` (and so the exponent) does not depend on the width; only the
    sign bit moves. Lets a wide engine run narrower layers exactly.
    """
    from_bits, to_bits = check_wbits(from_bits), check_wbits(to_bits)
    if to_bits < from_bits:
        raise ArithError(f"cannot narrow {from_bits}-bit POST codes to {to_bits} bits")
    sign, m = post_decode(code, from_bits)
    return (sign << (to_bits - 1)) | m


def post_code_values(wbits: int) -> np.ndarray:
    """Real (normalised, alpha = 1) value of every code 0..2**wbits-1, float64."""
    sign, m = post_decode(np.arange(2 ** check_wbits(wbits)), wbits)
    mag = np.where(m > 0, 2.0 ** (-(np.maximum(m, 1) - 1) / 2.0), 0.0)
    return np.where(sign == 1, -mag, mag)


def encode_post(normalised: np.ndarray, wbits: int) -> np.ndarray:
    """Nearest POST code for each normalised weight ``w / alpha`` (clipped to [-1, 1]).

    Ties between two levels go to the larger magnitude; values nearer to 0 than to
    the smallest level become code 0. This is the same rounding the PyTorch
    quantizer uses, so export reproduces the trained levels exactly.
    """
    wbits = check_wbits(wbits)
    v = np.asarray(normalised, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ArithError("weights contain NaN or inf; refusing to encode them")
    a = np.clip(np.abs(v), 0.0, 1.0)
    levels = np.concatenate([post_magnitudes(wbits), [0.0]])  # descending, zero last
    # midpoints between consecutive descending levels
    mids = (levels[:-1] + levels[1:]) / 2.0
    # index i such that level[i] is nearest: count midpoints strictly greater than a
    idx = np.sum(a[..., None] < mids, axis=-1)
    kmax = post_max_exponent(wbits)
    m = np.where(idx > kmax, 0, idx + 1)
    sign = np.where((v < 0) & (m > 0), 1, 0)
    return (sign << (wbits - 1)) | m


# --- the odd-exponent sqrt(2) look-up table ---------------------------------

def sqrt2_lut_entry(x: int, frac_bits: int) -> int:
    """``round_half_up(x * 2**frac_bits / sqrt(2))`` computed exactly in integers.

    With ``t = x << frac_bits`` the result is the ``n`` with
    ``(2n-1)**2 <= 2*t*t < (2n+1)**2`` (``2*t*t`` is never an odd square), i.e.
    ``(isqrt(2*t*t) + 1) // 2``.
    """
    t = int(x) << check_frac_bits(frac_bits)
    return (math.isqrt(2 * t * t) + 1) // 2


def sqrt2_lut(abits: int, frac_bits: int) -> list[int]:
    """The table the hardware stores: one entry per activation code, ``2**abits`` entries."""
    return [sqrt2_lut_entry(x, frac_bits) for x in range(2 ** check_abits(abits))]


def lut_entry_bits(abits: int, frac_bits: int) -> int:
    """Width of a LUT entry: enough for the largest entry (never more than abits + frac_bits)."""
    return max(1, sqrt2_lut_entry(2 ** check_abits(abits) - 1, frac_bits).bit_length())


def lut_error_bound(frac_bits: int) -> float:
    """Bound on |integer product - exact product| in units of alpha * step * 2**-frac_bits.

    Odd k, shift j = k >> 1: the LUT entry is within 1/2 of exact, i.e. 2**-(j+1) after the
    shift, and the truncating shift removes less than 1 (nothing when j = 0). So the error
    lies in (-1 - 2**-(j+1), 2**-(j+1)]: at most 1/2 for j = 0, below 1.25 for j >= 1.
    Even k: exact while j <= frac_bits, otherwise truncation removes less than 1.
    The returned bound, 1.25, holds for every code.
    """
    check_frac_bits(frac_bits)
    return 1.25


# --- products ----------------------------------------------------------------

def product_magnitude_bits(abits: int, frac_bits: int) -> int:
    """Bits of an unsigned product magnitude: ``abits + frac_bits``."""
    return check_abits(abits) + check_frac_bits(frac_bits)


def max_product_magnitude(abits: int, frac_bits: int) -> int:
    """Largest product magnitude: ``(2**abits - 1) << frac_bits`` (k = 0)."""
    return (2 ** check_abits(abits) - 1) << check_frac_bits(frac_bits)


def post_product(x, code, wbits: int, abits: int, frac_bits: int = DEFAULT_FRAC_BITS):
    """Signed integer product of activation code(s) ``x`` and POST code(s) ``code``.

    Broadcasts like NumPy. Units: ``alpha * step_x * 2**-frac_bits``. Raises
    :class:`ArithError` for codes or activations out of range.
    """
    abits = check_abits(abits)
    x = np.asarray(x, dtype=np.int64)
    if np.any((x < 0) | (x >= 2 ** abits)):
        raise ArithError(f"activation code out of range 0..{2 ** abits - 1} at {abits} bits")
    sign, m = post_decode(code, wbits)
    lut = np.asarray(sqrt2_lut(abits, frac_bits), dtype=np.int64)
    k = np.maximum(m - 1, 0)
    j = k >> 1
    base = np.where((k & 1) == 1, lut[x], x << frac_bits)
    mag = np.where(m > 0, base >> j, 0)
    return np.where(sign == 1, -mag, mag)


def product_table(wbits: int, abits: int, frac_bits: int = DEFAULT_FRAC_BITS) -> np.ndarray:
    """``table[x, code]`` = :func:`post_product` for every pair; shape ``(2**abits, 2**wbits)``."""
    x = np.arange(2 ** check_abits(abits))[:, None]
    c = np.arange(2 ** check_wbits(wbits))[None, :]
    return post_product(x, c, wbits, abits, frac_bits)


# --- accumulation ------------------------------------------------------------

def accumulator_bits(fan_in: int, abits: int, frac_bits: int = DEFAULT_FRAC_BITS) -> int:
    """Signed accumulator width that can never overflow for ``fan_in`` products plus a bias.

    The bias is limited (at export) to the same magnitude as the largest possible sum,
    ``fan_in * max_product_magnitude``, so ``|acc| <= 2 * fan_in * max_product_magnitude``.
    """
    if not isinstance(fan_in, (int, np.integer)) or fan_in < 1:
        raise ArithError(f"fan-in must be a positive integer, got {fan_in!r}")
    bound = 2 * int(fan_in) * max_product_magnitude(abits, frac_bits)
    return bound.bit_length() + 1


# --- requantisation ----------------------------------------------------------

def fixed_point_multiplier(ratio: float) -> tuple[int, int]:
    """``(mult, shift)`` with ``mult / 2**shift ~= ratio``, mult in [2**(MULT_BITS-1), 2**MULT_BITS).

    Raises :class:`ArithError` if ``ratio`` is not finite and positive or needs a
    shift outside :data:`SHIFT_RANGE`.
    """
    if not (isinstance(ratio, (float, int, np.floating)) and math.isfinite(ratio) and ratio > 0):
        raise ArithError(f"requantisation ratio must be finite and > 0, got {ratio!r}")
    mant, exp = math.frexp(float(ratio))          # ratio = mant * 2**exp, mant in [0.5, 1)
    mult = int(round(mant * 2 ** MULT_BITS))
    shift = MULT_BITS - exp
    if mult == 2 ** MULT_BITS:                    # rounding carried out of the mantissa
        mult //= 2
        shift -= 1
    if shift not in SHIFT_RANGE:
        raise ArithError(f"requantisation ratio {ratio:g} needs shift {shift}, outside "
                         f"{SHIFT_RANGE.start}..{SHIFT_RANGE.stop - 1}; the layer's scales are degenerate")
    return mult, shift


def requant_product_bits(acc_bits: int) -> int:
    """Width of the signed product ``acc * mult`` in the rescale stage."""
    return acc_bits + MULT_BITS + 1


def requantize(acc, mult: int, shift: int, out_bits: int):
    """``clip(((acc * mult) + 2**(shift-1)) >> shift, 0, 2**out_bits - 1)`` (round half up, ReLU).

    ``acc`` already includes the bias. Works on ints and integer arrays (int64 is
    exact while ``acc * mult`` stays below 2**62, which :func:`accumulator_bits`
    limits guarantee for every supported width).
    """
    if shift not in SHIFT_RANGE:
        raise ArithError(f"shift {shift} outside {SHIFT_RANGE.start}..{SHIFT_RANGE.stop - 1}")
    if not 0 < mult < 2 ** MULT_BITS:
        raise ArithError(f"multiplier {mult} outside 1..{2 ** MULT_BITS - 1}")
    qmax = 2 ** check_abits(out_bits) - 1
    acc = np.asarray(acc, dtype=np.int64)
    q = (acc * int(mult) + (1 << (shift - 1))) >> shift
    return np.clip(q, 0, qmax)


def quantize_activation(real, step: float, bits: int):
    """Input quantizer (used once, on the network input): ``clip(floor(real/step + 1/2), 0, 2**bits-1)``."""
    if not (math.isfinite(step) and step > 0):
        raise ArithError(f"activation step must be finite and > 0, got {step!r}")
    real = np.asarray(real, dtype=np.float64)
    if not np.all(np.isfinite(real)):
        raise ArithError("input contains NaN or inf")
    return np.clip(np.floor(real / step + 0.5), 0, 2 ** check_abits(bits) - 1).astype(np.int64)


@dataclass(frozen=True)
class PostFormat:
    """Widths of one POST datapath: weight bits, activation bits, product fraction bits."""

    wbits: int
    abits: int
    frac_bits: int = DEFAULT_FRAC_BITS

    def __post_init__(self):
        check_wbits(self.wbits)
        check_abits(self.abits)
        check_frac_bits(self.frac_bits)

    @property
    def kmax(self) -> int:
        return post_max_exponent(self.wbits)

    @property
    def max_shift(self) -> int:
        """Largest barrel-shift amount ``j = kmax >> 1``."""
        return self.kmax >> 1

    @property
    def lut(self) -> list[int]:
        return sqrt2_lut(self.abits, self.frac_bits)

    @property
    def lut_bits(self) -> int:
        return lut_entry_bits(self.abits, self.frac_bits)

    @property
    def product_bits(self) -> int:
        """Signed product width (magnitude bits + sign)."""
        return product_magnitude_bits(self.abits, self.frac_bits) + 1

    def product(self, x, code):
        return post_product(x, code, self.wbits, self.abits, self.frac_bits)

    def acc_bits(self, fan_in: int) -> int:
        return accumulator_bits(fan_in, self.abits, self.frac_bits)


# --- v2: per-channel rescale, fixed-point values, ASQ adaptive step -----------
#
# Used by the integer graph (golden/intgraph.py) for conv models with batch norm folded and ASQ
# activations; docs/arithmetic.md ("Integer graph (v2)") is the prose version. The v1 functions
# above stay the definition of the MLP engine in hw/.

#: Fraction bits of the pre-quantization value ``v`` of a 4-bit ASQ quantizer (units ``step / 2**ASQ_VALUE_FRAC``);
#: in general :func:`asq_value_frac`.
ASQ_VALUE_FRAC = 10
#: The adapter's output ``z`` is rounded to ``2**-ASQ_Z_FRAC`` and clipped to ``[-ASQ_Z_LIMIT, ASQ_Z_LIMIT)``
#: before the factor look-up.
ASQ_Z_FRAC = 6
ASQ_Z_LIMIT = 8
#: Fraction bits of the factor ``beta`` and of its inverse in the ASQ tables.
ASQ_BETA_FRAC = 16
#: Adapter weights are signed fixed-point numbers of at most this many bits (sign included).
ADAPTER_WEIGHT_BITS = 16
#: The factor functions the hardware tables support (``z -> beta``).
ASQ_FACTORS = ("sigmoid", "exp")

__all__ += ["ASQ_VALUE_FRAC", "ASQ_Z_FRAC", "ASQ_Z_LIMIT", "ASQ_BETA_FRAC", "ADAPTER_WEIGHT_BITS",
            "ASQ_FACTORS", "signed_multiplier", "rescale_offset", "rescale", "round_shift",
            "quantize_value", "asq_factor", "asq_tables", "asq_z_index", "asq_quantize",
            "adapter_weight_exponent", "adapter_layer_exponent", "integer_levels"]


def signed_multiplier(ratio: float) -> tuple[int, int]:
    """``(mult, shift)`` for a ratio of any sign: ``fixed_point_multiplier(|ratio|)`` with the sign on
    ``mult``; ``ratio == 0`` gives ``(0, 1)``. Batch norm with a negative scale needs the sign."""
    if not (isinstance(ratio, (float, int, np.floating)) and math.isfinite(ratio)):
        raise ArithError(f"rescale ratio must be finite, got {ratio!r}")
    if ratio == 0:
        return 0, 1
    mult, shift = fixed_point_multiplier(abs(float(ratio)))
    return (mult if ratio > 0 else -mult), shift


def rescale_offset(real_offset: float, shift: int) -> int:
    """Integer offset for :func:`rescale`: ``round_half_up(real_offset * 2**shift) + 2**(shift-1)``.

    ``real_offset`` is the additive term of the target value (BN shift, conv bias, zero point) in
    units of the target value; the ``2**(shift-1)`` makes the final shift round half up.
    """
    if not math.isfinite(real_offset):
        raise ArithError(f"rescale offset must be finite, got {real_offset!r}")
    return int(math.floor(real_offset * 2.0 ** shift + 0.5)) + (1 << (shift - 1))


def rescale(acc, mult, offset, shift):
    """``v = (acc * mult + offset) >> shift`` (floor, arithmetic shift), per channel.

    ``mult`` (signed, ``|mult| < 2**MULT_BITS``), ``offset`` and ``shift`` broadcast against ``acc``
    (give them shape ``[C, 1, 1]`` for ``[N, C, H, W]`` accumulators). int64 is exact while
    ``|acc| < 2**46``, which :func:`accumulator_bits` keeps for every supported width.
    """
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    if np.any(np.abs(mult) >= 2 ** MULT_BITS):
        raise ArithError(f"rescale multiplier outside ±{2 ** MULT_BITS - 1}")
    shift = np.asarray(shift, dtype=np.int64)
    if np.any((shift < SHIFT_RANGE.start) | (shift >= SHIFT_RANGE.stop)):
        raise ArithError(f"rescale shift outside {SHIFT_RANGE.start}..{SHIFT_RANGE.stop - 1}")
    return (acc * mult + np.asarray(offset, dtype=np.int64)) >> shift


def round_shift(value, bits: int):
    """``round_half_up(value / 2**bits)`` for ``bits >= 0`` (``value << -bits`` for negative bits)."""
    value = np.asarray(value, dtype=np.int64)
    if bits <= 0:
        return value << (-bits)
    return (value + (1 << (bits - 1))) >> bits


def quantize_value(v, value_frac: int, lo: int, hi: int):
    """Activation code of a fixed-point value: ``clip(round_half_up(v / 2**value_frac), lo, hi)``."""
    return np.clip(round_shift(v, value_frac), lo, hi)


def asq_factor(name: str, z):
    """The adapter's factor function ``beta(z)`` in float64: ``2*sigmoid(z)`` or ``exp(z)``."""
    z = np.asarray(z, dtype=np.float64)
    if name == "sigmoid":
        return 2.0 / (1.0 + np.exp(-z))
    if name == "exp":
        return np.exp(z)
    raise ArithError(f"ASQ factor {name!r} has no integer form; supported: {', '.join(ASQ_FACTORS)}")


def asq_tables(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(beta, inv_beta)``: ``round(beta(z) * 2**ASQ_BETA_FRAC)`` and ``round(2**ASQ_BETA_FRAC / beta(z))``
    for every grid point ``z = i / 2**ASQ_Z_FRAC``, ``i`` in ``[-L, L)`` with ``L = ASQ_Z_LIMIT * 2**ASQ_Z_FRAC``
    (table index ``i + L``). int64, ``2 * L`` entries each."""
    n = ASQ_Z_LIMIT << ASQ_Z_FRAC
    z = np.arange(-n, n, dtype=np.float64) / (1 << ASQ_Z_FRAC)
    beta = asq_factor(name, z)
    scale = float(1 << ASQ_BETA_FRAC)
    return np.floor(beta * scale + 0.5).astype(np.int64), np.floor(scale / beta + 0.5).astype(np.int64)


def asq_z_index(z_fixed, z_frac: int):
    """Table index of the adapter output ``z = z_fixed / 2**z_frac``: its value on the ``2**-ASQ_Z_FRAC``
    grid (round half up), clipped to ``[-L, L-1]``, plus ``L`` (so 0 .. 2L-1)."""
    n = ASQ_Z_LIMIT << ASQ_Z_FRAC
    i = round_shift(z_fixed, z_frac - ASQ_Z_FRAC)
    return np.clip(i, -n, n - 1) + n


def asq_quantize(v, inv_beta, value_frac: int, qmax: int):
    """ASQ codes ``clip(round_half_up(v * inv_mant / 2**(value_frac + inv_shift)), 0, qmax)`` with
    ``(inv_mant, inv_shift) = normalize_fixed(inv_beta, ASQ_BETA_FRAC)``: ``v`` in units
    ``step / 2**value_frac`` (:data:`VALUE_BITS`), ``inv_beta`` (one per sample) from :func:`asq_tables`."""
    v = np.asarray(v, dtype=np.int64)
    im, ish = normalize_fixed(inv_beta, ASQ_BETA_FRAC)
    return np.clip(shift_round(v * im, value_frac + ish), 0, qmax)


def adapter_weight_exponent(weights) -> int:
    """Exponent ``E`` so that ``round(w * 2**E)`` fits :data:`ADAPTER_WEIGHT_BITS` signed bits with the
    largest ``|w|`` in ``[2**(B-2), 2**(B-1))`` (``B = ADAPTER_WEIGHT_BITS``); 0 for all-zero weights."""
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise ArithError("adapter weights contain NaN or inf; refusing to export them")
    peak = float(np.max(np.abs(w))) if w.size else 0.0
    if peak == 0.0:
        return 0
    e = (ADAPTER_WEIGHT_BITS - 2) - math.floor(math.log2(peak))
    while round(peak * 2.0 ** e) >= 2 ** (ADAPTER_WEIGHT_BITS - 1):
        e -= 1
    return e


def adapter_layer_exponent(w, b, in_bound: int, b_extra: int = 0) -> int:
    """Exponent ``E`` of one adapter layer in fixed point: ``W = round(w * 2**E)``, ``B = round(b * 2**(E +
    b_extra))`` with every ``|W| < 2**(ADAPTER_WEIGHT_BITS-1)`` and, for inputs ``|x| <= in_bound``, every
    ``sum_c |W[j, c]| * in_bound + |B[j]| < 2**(ADAPTER_ACC_BITS-1)``: the largest such ``E`` (at most
    the weights' own :func:`adapter_weight_exponent`)."""
    w = np.asarray(w, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
        raise ArithError("adapter weights or biases contain NaN or inf; refusing to export them")
    w2 = w.reshape(len(b), -1) if w.size else w.reshape(len(b), 0)
    if np.any(w2 != 0):
        e = adapter_weight_exponent(w2)
    else:
        peak = float(np.max(np.abs(b), initial=0.0))
        e = 0 if peak == 0 else (ADAPTER_ACC_BITS - 3) - math.floor(math.log2(peak)) - b_extra
    limit = 1 << (ADAPTER_ACC_BITS - 1)
    for _ in range(256):
        W = np.floor(w2 * 2.0 ** e + 0.5)
        B = np.floor(b * 2.0 ** (e + b_extra) + 0.5)
        if np.max(np.abs(W), initial=0) < 1 << (ADAPTER_WEIGHT_BITS - 1) and \
                np.max(np.abs(W).sum(axis=1) * in_bound + np.abs(B), initial=0) < limit:
            return int(e)
        e -= 1
    raise ArithError("adapter layer does not fit its 32-bit accumulator at any exponent")


def integer_levels(levels, max_level: int = 1 << 24) -> tuple[np.ndarray, float]:
    """Express a normalised level set as integers: ``(ints, unit)`` with ``levels == ints * unit``.

    ``unit`` is the smallest non-zero magnitude; every level must be an integer multiple of it
    (uniform, POT, APoT level sets are). Raises :class:`ArithError` otherwise, or when the largest
    integer exceeds ``max_level`` (e.g. POT at 8 bits: ``2**-126`` steps).
    """
    lv = np.asarray(levels, dtype=np.float64)
    nz = np.abs(lv[lv != 0])
    if nz.size == 0:
        raise ArithError("level set has no non-zero level")
    unit = float(nz.min())
    ints = np.floor(lv / unit + 0.5)
    if np.max(np.abs(ints)) > max_level:
        raise ArithError(f"level set spans {np.max(np.abs(ints)):.3g} smallest steps, more than the integer "
                         f"datapath's {max_level}; use fewer bits")
    if np.max(np.abs(ints * unit - lv)) > 1e-9 * max(1.0, float(np.max(np.abs(lv)))):
        raise ArithError("level set is not a set of integer multiples of its smallest level")
    return ints.astype(np.int64), unit


# --- hardware-sized stage arithmetic (the engine's registers are these widths) ---------------
#
# Every multiplier of the post-MAC datapath takes operands of at most 16 bits (two's complement)
# except the rescale's accumulator operand (RESCALE_ACC_BITS); every value register saturates at
# VALUE_BITS; adapter accumulators are 32 bits. Export (golden.intdag) chooses the per-stage shifts
# (acc_shift, the value unit, the adapter exponents and h_shift) so that the operands fit; the
# saturations are part of the arithmetic, so the golden model and the RTL agree bit for bit.
# docs/arithmetic.md, "Hardware-sized stage arithmetic", is the prose version.

#: Signed width of a value ``v`` (rescaled, pooled, prescaled, the logits) in the engine; every
#: value write saturates to it (:func:`saturate`).
VALUE_BITS = 16
#: Signed width of the rescale multiplier's accumulator operand ``a = acc >> acc_shift``.
RESCALE_ACC_BITS = 24
#: Signed width of a per-channel rescale bias (value units; export clamps it).
BIAS_BITS = 18
#: Largest right shift the arithmetic applies (larger shift amounts are clamped to it; the result is
#: then 0 for every operand the datapath can hold).
MAX_SHIFT = 62
#: Signed width of the adapter's accumulators ``H`` and ``Z`` and of its biases.
ADAPTER_ACC_BITS = 32
#: Unsigned width of a factor mantissa (``beta`` and ``1/beta`` as ``mant / 2**shift``).
FACTOR_MANT_BITS = MULT_BITS
#: Width of a factor's shift field.
FACTOR_SHIFT_BITS = 6
#: Width of one ASQ table entry in the engine: ``{beta_mant, beta_shift, inv_mant, inv_shift}``.
ASQ_TABLE_BITS = 2 * (FACTOR_MANT_BITS + FACTOR_SHIFT_BITS)
#: Width of one factor ``{mant, shift}`` (the ``beta`` the engine keeps per layer).
FACTOR_BITS = FACTOR_MANT_BITS + FACTOR_SHIFT_BITS

__all__ += ["VALUE_BITS", "RESCALE_ACC_BITS", "BIAS_BITS", "MAX_SHIFT", "ADAPTER_ACC_BITS", "FACTOR_MANT_BITS",
            "FACTOR_SHIFT_BITS", "ASQ_TABLE_BITS", "FACTOR_BITS", "adapter_z", "asq_table_index_count",
            "saturate", "shift_round", "normalize_fixed", "factor_words", "acc_shift_for", "beta_multiplier",
            "asq_value_frac", "stage_value", "finish_value", "sum_pool", "pool_shift", "sum_pool_shift", "SUM_POOL_GUARD", "prescale", "asq_sums", "value_unit_bound",
            "VALUE_RANGE_BITS"]


def asq_value_frac(bits: int) -> int:
    """Fraction bits of an ``bits``-bit ASQ quantizer's prescaled input ``vq`` (units ``step / 2**frac``):
    ``VALUE_BITS - 2 - bits``, so the 16-bit ``vq`` holds ``2**(bits+1)`` steps (codes up to ``2**bits - 1``
    with a factor up to 2)."""
    return VALUE_BITS - 2 - check_abits(bits)


def asq_table_index_count() -> int:
    """Entries of each ASQ table: ``2 * ASQ_Z_LIMIT * 2**ASQ_Z_FRAC``."""
    return 2 * (ASQ_Z_LIMIT << ASQ_Z_FRAC)


def saturate(v, bits: int = VALUE_BITS):
    """Two's-complement saturation: ``clip(v, -2**(bits-1), 2**(bits-1) - 1)`` (int64)."""
    return np.clip(np.asarray(v, dtype=np.int64), -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def shift_round(value, shift):
    """``round_half_up(value / 2**shift)`` for shift amounts ``>= 1`` that may differ per element
    (they broadcast); amounts above :data:`MAX_SHIFT` act as ``MAX_SHIFT``. int64, exact while
    ``|value| < 2**61``."""
    value = np.asarray(value, dtype=np.int64)
    shift = np.minimum(np.asarray(shift, dtype=np.int64), MAX_SHIFT)
    if np.any(shift < 1):
        raise ArithError(f"rounding shift {int(np.min(shift))} < 1")
    return (value + (np.int64(1) << (shift - 1))) >> shift


def normalize_fixed(f, frac: int):
    """A positive fixed-point number ``f / 2**frac`` as ``(mant, shift)`` with ``mant / 2**shift`` its
    value rounded (half up) to :data:`FACTOR_MANT_BITS` significant bits: ``mant`` in
    ``[2**(B-1), 2**B)`` (``B = FACTOR_MANT_BITS``). Integer-exact; works on ints and arrays (int64)."""
    arr = np.asarray(f, dtype=np.int64)
    if np.any(arr <= 0):
        raise ArithError("normalize_fixed needs positive numbers")
    B = FACTOR_MANT_BITS
    mants, shifts = [], []
    for x in arr.reshape(-1).tolist():
        e = x.bit_length() - B
        if e > 0:
            m = (x + (1 << (e - 1))) >> e
            if m == 1 << B:
                m, e = m >> 1, e + 1
        else:
            m = x << -e
        mants.append(m)
        shifts.append(frac - e)
    mant = np.array(mants, dtype=np.int64).reshape(arr.shape)
    shift = np.array(shifts, dtype=np.int64).reshape(arr.shape)
    if np.any((shift < 1) | (shift >= 1 << FACTOR_SHIFT_BITS)):
        raise ArithError(f"factor {arr.max()} / 2**{frac} needs a shift outside 1..{(1 << FACTOR_SHIFT_BITS) - 1}")
    return mant, shift


def factor_words(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ASQ tables as the engine stores them: ``(beta_mant, beta_shift, inv_mant, inv_shift)`` per
    index, :func:`normalize_fixed` of :func:`asq_tables`' ``beta`` and ``inv_beta``."""
    beta, inv = asq_tables(name)
    return (*normalize_fixed(beta, ASQ_BETA_FRAC), *normalize_fixed(inv, ASQ_BETA_FRAC))


def acc_shift_for(bound: int) -> int:
    """The rescale's accumulator pre-shift for accumulators with ``|acc| <= bound``: the smallest
    ``s >= 0`` with ``bound >> s < 2**(RESCALE_ACC_BITS - 1)``."""
    bound = int(bound)
    if bound < 0:
        raise ArithError(f"accumulator bound must be >= 0, got {bound}")
    return max(0, bound.bit_length() - (RESCALE_ACC_BITS - 1))


def beta_multiplier(mult, shift, beta_fixed):
    """A channel multiplier ``mult / 2**shift`` times an ASQ factor ``beta_fixed / 2**ASQ_BETA_FRAC``:
    ``((mult * beta_mant) >> B, shift + beta_shift - B)`` with ``(beta_mant, beta_shift) =
    normalize_fixed(beta_fixed, ASQ_BETA_FRAC)`` and ``B = FACTOR_MANT_BITS`` (floor; the product
    keeps ``|m| < 2**MULT_BITS``). Broadcasts. Raises :class:`ArithError` if a combined shift is < 1."""
    bm, bs = normalize_fixed(beta_fixed, ASQ_BETA_FRAC)
    B = FACTOR_MANT_BITS
    m = (np.asarray(mult, dtype=np.int64) * bm) >> B
    sh = np.asarray(shift, dtype=np.int64) + bs - B
    if np.any(sh < 1):
        raise ArithError(f"rescale shift {int(np.min(sh))} after the ASQ factor is < 1: the stage's scale is "
                         f"too large for its input factor")
    return m, sh


def stage_value(acc, mult, shift, bias, acc_shift: int, beta=None):
    """The rescale of a stage's accumulators, before the residual add and saturation:
    ``round_half_up((acc >> acc_shift) * m / 2**sh) + bias`` with ``(m, sh) = (mult, shift)`` or,
    for ASQ input codes, :func:`beta_multiplier` ``(mult, shift, beta)``.

    ``acc`` ``[N, C, ...]``; ``mult``, ``shift``, ``bias`` per channel ``[C]``; ``beta`` per sample
    ``[N]`` or None. ``|acc >> acc_shift|`` must fit :data:`RESCALE_ACC_BITS` (export proves it).
    """
    acc = np.asarray(acc, dtype=np.int64)
    a = acc >> int(acc_shift)
    if np.any(np.abs(a) >= 1 << (RESCALE_ACC_BITS - 1)):
        raise ArithError(f"rescale operand leaves {RESCALE_ACC_BITS} bits (acc_shift {acc_shift} too small)")
    cshape = (1, -1) + (1,) * (acc.ndim - 2)
    m = np.asarray(mult, dtype=np.int64).reshape(cshape)
    sh = np.asarray(shift, dtype=np.int64).reshape(cshape)
    if beta is not None:
        m, sh = beta_multiplier(m, sh, np.asarray(beta, dtype=np.int64).reshape((-1,) + (1,) * (acc.ndim - 1)))
    return shift_round(a * m, sh) + np.asarray(bias, dtype=np.int64).reshape(cshape)


def finish_value(v, residual=None, relu_floor=None):
    """``saturate(v + residual)`` then ``max(., relu_floor)`` (ReLU; None: no ReLU)."""
    if residual is not None:
        v = np.asarray(v, dtype=np.int64) + residual
    v = saturate(v)
    return v if relu_floor is None else np.maximum(v, int(relu_floor))


def pool_shift(positions: int) -> int:
    """``ceil(log2(positions))``: the right shift of a sum over ``positions`` values."""
    return (int(positions) - 1).bit_length()


#: Guard bits a global average pooling keeps: its sum is shifted by ``pool_shift(P) - SUM_POOL_GUARD``, so the
#: pooled mean has 16 times the resolution of the values it averages (whose unit leaves them headroom).
SUM_POOL_GUARD = 4


def sum_pool_shift(positions: int) -> int:
    """The right shift of a global average pooling over ``positions`` values:
    ``max(0, pool_shift(positions) - SUM_POOL_GUARD)``."""
    return max(0, pool_shift(positions) - SUM_POOL_GUARD)


def sum_pool(v):
    """Global average pooling of values ``[N, C, H, W]`` in hardware form: ``saturate(round_half_up(sum /
    2**s))`` per channel with ``s = sum_pool_shift(H*W)`` (no rounding when ``s`` is 0), shape
    ``[N, C, 1, 1]`` (unit ``u * 2**s / (H*W)``)."""
    v = np.asarray(v, dtype=np.int64)
    s = v.sum(axis=(2, 3), keepdims=True)
    ps = sum_pool_shift(int(np.prod(v.shape[2:])))
    return saturate(s if ps == 0 else shift_round(s, ps))


def prescale(v, mult, offset, shift):
    """A value re-expressed in another unit, saturated: ``saturate(rescale(v, mult, offset, shift))``."""
    return saturate(rescale(v, mult, offset, shift))


def asq_sums(vq):
    """The ASQ adapter's input: per-channel sums of ``vq`` ``[N, C, ...]`` over positions ``P``, scaled
    to the mean's range: ``saturate(round_half_up(sum / 2**pool_shift(P)))`` -> ``[N, C]``."""
    vq = np.asarray(vq, dtype=np.int64)
    s = vq.reshape(vq.shape[0], vq.shape[1], -1).sum(axis=2)
    ps = pool_shift(int(np.prod(vq.shape[2:])) if vq.ndim > 2 else 1)
    return saturate(s if ps == 0 else shift_round(s, ps))


#: How many times smaller than the proven worst case export expects a layer's accumulators to be
#: (log2): the value unit resolves ``2**(VALUE_BITS - 2 + VALUE_RANGE_BITS)`` steps over the worst-case
#: range, and the rare values beyond saturate (the worst case of ``sum |w| * x_max`` is seldom within a
#: factor of 10 of real activations).
VALUE_RANGE_BITS = 0


def value_unit_bound(bits: int = VALUE_BITS) -> int:
    """The number of value units export gives the largest possible accumulator contribution:
    ``2**(bits - 2 + VALUE_RANGE_BITS)`` (contributions beyond ``2**(bits-1)`` saturate)."""
    return 1 << (bits - 2 + VALUE_RANGE_BITS)


def adapter_z(sums, w1, b1, w2=None, b2=None, h_shift: int = 0):
    """The ASQ adapter in fixed point, for per-sample adapter inputs ``sums`` ``[N, C]`` (:func:`asq_sums`)
    -> ``z`` ``[N]``.

    ``H = sums @ w1.T + b1``; two layers (``w2`` given): ``z = (relu(H) >> h_shift) @ w2.T + b2``; one
    layer: ``z = H[:, 0] >> h_shift`` (the engine stores it as ``w2 = [1]``, ``b2 = 0``, no ReLU). All
    int64; export keeps ``|H|``, ``|z| < 2**(ADAPTER_ACC_BITS-1)`` and the multiplier operands within
    16 bits. The engine computes the same sums one term a cycle.
    """
    sums = np.asarray(sums, dtype=np.int64)
    h = sums @ np.asarray(w1, dtype=np.int64).T + np.asarray(b1, dtype=np.int64)
    if w2 is None:
        return h[:, 0] >> int(h_shift)
    h = np.maximum(h, 0) >> int(h_shift)
    return (h @ np.asarray(w2, dtype=np.int64).T + np.asarray(b2, dtype=np.int64))[:, 0]


__all__ += ["align_value"]


def align_value(value, mult, shift):
    """A value re-expressed in another unit: ``(value * mult + 2**(shift-1)) >> shift`` (round half up),
    i.e. :func:`rescale` with ``offset = rescale_offset(0, shift)``. Residual adds align the shortcut's
    value to the main path's unit with it (``mult`` a positive 16-bit mantissa, ``shift`` >= 1)."""
    if not (isinstance(shift, (int, np.integer)) and int(shift) in SHIFT_RANGE):
        raise ArithError(f"align shift {shift!r} outside {SHIFT_RANGE.start}..{SHIFT_RANGE.stop - 1}")
    return rescale(value, mult, 1 << (int(shift) - 1), int(shift))


__all__ += ["pool2d"]


def pool2d(v, k: int, stride: int, pad: int, mode: str = "max"):
    """Max or sum pooling over the last two axes of integer values ``[..., H, W]``.

    ``max``: padded positions never win (max pooling of ReLU'd values, pooling commutes with the
    monotonic quantizers); ``sum``: padding adds 0 (global average pooling before its
    ``1/positions``, which goes into the quantizer's multiplier). int64, exact.
    """
    if mode not in ("max", "sum"):
        raise ArithError(f"pooling mode {mode!r} must be 'max' or 'sum'")
    v = np.asarray(v, dtype=np.int64)
    fill = np.iinfo(np.int64).min if mode == "max" else 0
    if pad:
        v = np.pad(v, [(0, 0)] * (v.ndim - 2) + [(pad, pad), (pad, pad)], constant_values=fill)
    h, w = v.shape[-2:]
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    st = v.strides
    win = np.lib.stride_tricks.as_strided(v, v.shape[:-2] + (oh, ow, k, k),
                                          st[:-2] + (st[-2] * stride, st[-1] * stride, st[-2], st[-1]))
    return win.max(axis=(-2, -1)) if mode == "max" else win.sum(axis=(-2, -1))

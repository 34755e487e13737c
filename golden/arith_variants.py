"""Arithmetic of the comparison PEs: power-of-two (POT) and uniform integer (INT) weights.

These are *not* part of the accelerator's datapath (that is :mod:`golden.arith`, POST only);
they define what :class:`hw.pe.PotPE` and :class:`hw.pe.IntPE` compute, so the PE comparison
in ``bench/pe_compare.py`` measures circuits whose function is pinned down and tested
exhaustively. NumPy only (no torch), like :mod:`golden.arith`, whose checks and units it reuses.

POT (power of two), ``wbits``-bit code
    Same layout as a POST code: ``sign << (wbits-1) | m``; ``m == 0`` is the weight 0, otherwise
    ``k = m - 1`` in ``[0, 2**(wbits-1) - 2]`` and the weight is ``(-1)**sign * alpha * 2**-k``.
    The product with an activation code ``x`` is, in units of ``alpha * step * 2**-frac_bits``
    (the units of a POST product)::

        |p| = (x << frac_bits) >> k        (truncating; 0 once k >= abits + frac_bits)

    negated when ``sign`` is set: a barrel shifter and a negator, no LUT, no multiplier. Its
    magnitude never exceeds POST's, so it uses the same accumulator
    (:func:`golden.arith.accumulator_bits`).

INT (uniform, two's complement), ``wbits``-bit code
    The code is the signed integer ``w`` in ``[-2**(wbits-1), 2**(wbits-1) - 1]`` (stored as
    its ``wbits``-bit two's-complement pattern); the weight is ``w * alpha / 2**(wbits-1)``.
    The product is the plain integer ``w * x`` (units ``alpha * step * 2**-(wbits-1)``), signed,
    :func:`int_product_bits` wide. Its own no-overflow accumulator is
    :func:`int_accumulator_bits`; the comparison also runs it with POST's accumulator width
    ("the same accumulator") so only the PE differs.
"""

from __future__ import annotations

import numpy as np

from golden import arith

__all__ = [
    "pot_max_exponent", "pot_product", "pot_product_table",
    "int_code_value", "int_product", "int_product_table", "int_product_bits",
    "int_max_product_magnitude", "int_accumulator_bits",
]


# --- POT ---------------------------------------------------------------------

def pot_max_exponent(wbits: int) -> int:
    """Largest exponent k of a ``wbits``-bit POT code: ``2**(wbits-1) - 2`` (same code space as POST)."""
    return arith.post_max_exponent(wbits)


def pot_product(x, code, wbits: int, abits: int, frac_bits: int = arith.DEFAULT_FRAC_BITS):
    """Signed product of activation code(s) ``x`` and POT code(s) ``code``; broadcasts like NumPy.

    Units ``alpha * step * 2**-frac_bits``; ``|p| = (x << frac_bits) >> k``, 0 for ``m == 0``.
    """
    abits = arith.check_abits(abits)
    frac_bits = arith.check_frac_bits(frac_bits)
    x = np.asarray(x, dtype=np.int64)
    if np.any((x < 0) | (x >= 2 ** abits)):
        raise arith.ArithError(f"activation code out of range 0..{2 ** abits - 1} at {abits} bits")
    sign, m = arith.post_decode(code, wbits)
    k = np.maximum(m - 1, 0)
    # shifting an int64 by >= 64 is undefined in NumPy; every k >= abits+frac_bits gives 0 anyway
    k = np.minimum(k, arith.product_magnitude_bits(abits, frac_bits))
    mag = np.where(m > 0, (x << frac_bits) >> k, 0)
    return np.where(sign == 1, -mag, mag)


def pot_product_table(wbits: int, abits: int, frac_bits: int = arith.DEFAULT_FRAC_BITS) -> np.ndarray:
    """``table[x, code]`` = :func:`pot_product` for every pair; shape ``(2**abits, 2**wbits)``."""
    x = np.arange(2 ** arith.check_abits(abits))[:, None]
    c = np.arange(2 ** arith.check_wbits(wbits))[None, :]
    return pot_product(x, c, wbits, abits, frac_bits)


# --- INT ---------------------------------------------------------------------

def int_code_value(code, wbits: int):
    """Signed integer ``w`` of ``wbits``-bit two's-complement code(s) ``0 .. 2**wbits - 1``."""
    wbits = arith.check_wbits(wbits)
    code = np.asarray(code, dtype=np.int64)
    if np.any((code < 0) | (code >= 2 ** wbits)):
        raise arith.ArithError(f"INT code out of range 0..{2 ** wbits - 1} at {wbits} bits")
    return np.where(code >= 2 ** (wbits - 1), code - 2 ** wbits, code)


def int_product(x, code, wbits: int, abits: int):
    """Signed product ``w * x`` of activation code(s) ``x`` and INT code(s) ``code``; broadcasts."""
    abits = arith.check_abits(abits)
    x = np.asarray(x, dtype=np.int64)
    if np.any((x < 0) | (x >= 2 ** abits)):
        raise arith.ArithError(f"activation code out of range 0..{2 ** abits - 1} at {abits} bits")
    return int_code_value(code, wbits) * x


def int_product_table(wbits: int, abits: int) -> np.ndarray:
    """``table[x, code]`` = :func:`int_product` for every pair; shape ``(2**abits, 2**wbits)``."""
    x = np.arange(2 ** arith.check_abits(abits))[:, None]
    c = np.arange(2 ** arith.check_wbits(wbits))[None, :]
    return int_product(x, c, wbits, abits)


def int_product_bits(wbits: int, abits: int) -> int:
    """Signed product width ``wbits + abits`` (``-2**(wbits-1) * (2**abits - 1)`` needs all of it)."""
    return arith.check_wbits(wbits) + arith.check_abits(abits)


def int_max_product_magnitude(wbits: int, abits: int) -> int:
    """Largest ``|w * x|``: ``2**(wbits-1) * (2**abits - 1)``."""
    return 2 ** (arith.check_wbits(wbits) - 1) * (2 ** arith.check_abits(abits) - 1)


def int_accumulator_bits(fan_in: int, wbits: int, abits: int) -> int:
    """Signed no-overflow accumulator width for ``fan_in`` INT products plus a bias of the same bound.

    Same rule as :func:`golden.arith.accumulator_bits`: ``|acc| <= 2 * fan_in * max |product|``.
    """
    if not isinstance(fan_in, (int, np.integer)) or fan_in < 1:
        raise arith.ArithError(f"fan-in must be a positive integer, got {fan_in!r}")
    return (2 * int(fan_in) * int_max_product_magnitude(wbits, abits)).bit_length() + 1

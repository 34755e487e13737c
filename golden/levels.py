"""Normalised level sets and code words of the weight quantizers (NumPy only, no torch).

This is the single definition of *which* values a ``b``-bit weight quantizer can produce; the
torch quantizers (:mod:`golden.quant`) build their level tables from it and the CLI
(``post-accel levels``) prints it. Everything is normalised: the largest positive level is 1
(``alpha = 1``, or ``Qp * step = 1`` for the uniform quantizer). ``docs/quantizers.md``
explains every choice.

Level sets at ``b`` bits
------------------------
``uniform``
    Signed LSQ (two's complement): ``q / Qp`` for ``q`` in ``[-2**(b-1), 2**(b-1) - 1]``,
    ``Qp = 2**(b-1) - 1``; ``2**b`` levels, the most negative one is ``-(Qp + 1) / Qp``.
    With ``symmetric=True`` the code ``-2**(b-1)`` is unused (``2**b - 1`` levels in [-1, 1]).
``pot``
    ``{0} U {+-2**-k : k = 0..2**(b-1) - 2}``: ``2**b - 1`` levels.
``post``
    ``{0} U {+-sqrt(2)**-k : k = 0..2**(b-1) - 2}``: ``2**b - 1`` levels, exactly
    :func:`golden.arith.post_magnitudes`.
``apot``
    ``{0} U {+-m : m in M(b-1)}`` where ``M(B)`` are the non-zero values of
    ``build_power_value(B, additive=True)`` of the APoT authors' repository
    (yhhhli/APoT_Quantization), normalised to a maximum of 1; ``2**b - 1`` levels. 2-bit APoT
    is ternary ``{-1, 0, 1}`` (the repository quantizes 2-bit weights uniformly). Supported:
    2..7 bits (the repository defines ``B`` = 2..6 only).

Code words (``b`` bits)
-----------------------
``pot``, ``post``, ``apot`` use sign-magnitude: ``code = sign << (b-1) | m``; ``m = 0`` is the
level 0 (the sign bit is ignored and written 0), ``m >= 1`` is the ``m``-th largest magnitude
(for POST and POT ``k = m - 1``). This is :func:`golden.arith.post_code` for POST.
``uniform`` uses the two's-complement word of ``q``.
"""

from __future__ import annotations

import numpy as np

from . import arith

__all__ = ["QUANTS", "BITS_RANGES", "check_bits", "uniform_levels", "pot_magnitudes", "post_magnitudes",
           "apot_build_power_value", "apot_magnitudes", "magnitudes", "level_set", "code_values",
           "encode_magnitude", "describe"]

#: Weight quantizers whose level sets this module defines.
QUANTS = ("uniform", "pot", "post", "apot")

#: Valid bit-widths of each level set.
BITS_RANGES = {
    "uniform": range(2, 9),
    "pot": range(2, 9),
    "post": arith.WBITS_RANGE,
    "apot": range(2, 8),
}

_WHY = {
    "uniform": "a signed LSQ quantizer needs a sign bit and at least one magnitude bit",
    "pot": "POT needs a sign bit and at least one magnitude bit",
    "post": "POST needs a sign bit and at least one magnitude bit",
    "apot": "the APoT authors' build_power_value defines B = bits - 1 in 2..6 only; "
            "2 bits is ternary",
}


def _check_quant(quant: str) -> str:
    if quant not in QUANTS:
        raise ValueError(f"unknown level set {quant!r}; valid: {', '.join(QUANTS)}")
    return quant


def check_bits(quant: str, bits) -> int:
    """Validate ``bits`` for level set ``quant``; raise :class:`golden.arith.ArithError` if invalid."""
    r = BITS_RANGES[_check_quant(quant)]
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in r:
        raise arith.ArithError(f"{quant} weights: bits must be an integer in {r.start}..{r.stop - 1} "
                               f"({_WHY[quant]}), got {bits!r}")
    return int(bits)


# --- per-quantizer sets -------------------------------------------------------

def uniform_levels(bits: int, symmetric: bool = False) -> np.ndarray:
    """Signed LSQ levels ``q / Qp`` ascending (float64); see the module docstring."""
    b = check_bits("uniform", bits)
    qp = 2 ** (b - 1) - 1
    qn = qp if symmetric else qp + 1
    return np.arange(-qn, qp + 1, dtype=np.float64) / qp


def pot_magnitudes(bits: int) -> np.ndarray:
    """Non-zero POT magnitudes ``2**-k``, ``k = 0..2**(b-1) - 2``, descending (float64)."""
    b = check_bits("pot", bits)
    k = np.arange(2 ** (b - 1) - 1, dtype=np.float64)
    return 2.0 ** -k


def post_magnitudes(bits: int) -> np.ndarray:
    """Non-zero POST magnitudes ``sqrt(2)**-k`` descending: exactly :func:`golden.arith.post_magnitudes`."""
    check_bits("post", bits)
    return arith.post_magnitudes(bits)


def apot_build_power_value(B: int) -> np.ndarray:
    """The APoT repository's ``build_power_value(B, additive=True)``, in float64, sorted ascending.

    Re-derived from yhhhli/APoT_Quantization (``models/quant_layer.py``): the level set is every
    sum ``a + b + c`` of one term from each base list (each list holds 0 and a few powers of two),
    de-duplicated and divided by its maximum. It includes 0 and has ``2**B`` values.
    ``B`` must be 2..6 (the repository raises ``NotImplementedError`` otherwise).
    """
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or int(B) not in range(2, 7):
        raise arith.ArithError(f"APoT build_power_value is defined for B = 2..6 only, got {B!r}")
    B = int(B)
    base_a, base_b, base_c = [0.0], [0.0], [0.0]
    for i in range(3):
        if B == 2:
            base_a.append(2.0 ** (-i - 1))
        elif B == 4:
            base_a.append(2.0 ** (-2 * i - 1))
            base_b.append(2.0 ** (-2 * i - 2))
        elif B == 6:
            base_a.append(2.0 ** (-3 * i - 1))
            base_b.append(2.0 ** (-3 * i - 2))
            base_c.append(2.0 ** (-3 * i - 3))
        elif B == 3:
            if i < 2:
                base_a.append(2.0 ** (-i - 1))
            else:
                base_b.append(2.0 ** (-i - 1))
                base_a.append(2.0 ** (-i - 2))
        else:  # B == 5
            if i < 2:
                base_a.append(2.0 ** (-2 * i - 1))
                base_b.append(2.0 ** (-2 * i - 2))
            else:
                base_c.append(2.0 ** (-2 * i - 1))
                base_a.append(2.0 ** (-2 * i - 2))
                base_b.append(2.0 ** (-2 * i - 3))
    values = np.unique([a + b + c for a in base_a for b in base_b for c in base_c])
    return values / values.max()


def apot_magnitudes(bits: int) -> np.ndarray:
    """Non-zero APoT weight magnitudes at ``bits`` (sign + ``bits-1`` magnitude bits), descending.

    ``bits = 2`` gives ``[1.0]`` (ternary, as the repository's uniform 2-bit weights); otherwise the
    non-zero values of :func:`apot_build_power_value` with ``B = bits - 1``.
    """
    b = check_bits("apot", bits)
    if b == 2:
        return np.array([1.0])
    v = apot_build_power_value(b - 1)
    return v[v > 0][::-1].copy()


def magnitudes(quant: str, bits: int) -> np.ndarray:
    """Non-zero magnitudes of a sign-magnitude set (``pot``, ``post``, ``apot``), descending."""
    fn = {"pot": pot_magnitudes, "post": post_magnitudes, "apot": apot_magnitudes}
    if quant not in fn:
        raise ValueError(f"{quant!r} is not a sign-magnitude level set; valid: pot, post, apot")
    return fn[quant](bits)


def level_set(quant: str, bits: int, symmetric: bool = False) -> np.ndarray:
    """All distinct normalised levels of ``quant`` at ``bits``, ascending (float64).

    ``symmetric`` applies to ``uniform`` only.
    """
    if _check_quant(quant) == "uniform":
        return uniform_levels(bits, symmetric=symmetric)
    m = magnitudes(quant, bits)
    return np.concatenate([-m, [0.0], m[::-1]])


def code_values(quant: str, bits: int) -> np.ndarray:
    """Normalised value of every code word ``0 .. 2**bits - 1`` (float64); see the module docstring."""
    b = check_bits(_check_quant(quant), bits)
    codes = np.arange(2 ** b, dtype=np.int64)
    if quant == "uniform":
        q = np.where(codes >= 2 ** (b - 1), codes - 2 ** b, codes)
        return q / float(2 ** (b - 1) - 1)
    if quant == "post":
        return arith.post_code_values(b) + 0.0          # + 0.0 turns -0.0 (sign bit, m = 0) into 0.0
    m = codes & ((1 << (b - 1)) - 1)
    sign = codes >> (b - 1)
    table = np.concatenate([[0.0], magnitudes(quant, b)])   # index m
    mag = table[m]
    return np.where(sign == 1, -mag, mag) + 0.0


def encode_magnitude(normalised, mags_desc: np.ndarray, bits: int) -> np.ndarray:
    """Nearest sign-magnitude code word for each normalised value (clipped to [-1, 1]).

    ``mags_desc`` are the non-zero magnitudes, descending, ``mags_desc[0] == 1``. Ties between
    two levels go to the larger magnitude; values nearer to 0 than to the smallest magnitude
    give ``m = 0`` (code 0, sign not set). With POST magnitudes this equals
    :func:`golden.arith.encode_post`. Raises :class:`golden.arith.ArithError` on NaN/inf.
    """
    v = np.asarray(normalised, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise arith.ArithError("weights contain NaN or inf; refusing to encode them")
    mags = np.asarray(mags_desc, dtype=np.float64)
    if len(mags) > 2 ** (bits - 1) - 1:
        raise arith.ArithError(f"{len(mags)} magnitudes do not fit a {bits}-bit sign-magnitude code")
    a = np.clip(np.abs(v), 0.0, 1.0)
    levels = np.concatenate([mags, [0.0]])
    mids = (levels[:-1] + levels[1:]) / 2.0
    idx = np.sum(a[..., None] < mids, axis=-1)          # index of the nearest descending level
    m = np.where(idx >= len(mags), 0, idx + 1)
    sign = np.where((v < 0) & (m > 0), 1, 0)
    return (sign << (bits - 1)) | m


def describe(quant: str, bits: int) -> str:
    """One line: what the code words of ``quant`` at ``bits`` mean."""
    b = check_bits(_check_quant(quant), bits)
    if quant == "uniform":
        qp = 2 ** (b - 1) - 1
        return (f"two's-complement q in -{qp + 1}..{qp}; level = q / {qp} "
                f"(signed LSQ, alpha = Qp * step)")
    what = {"pot": "2**-(m-1)", "post": "sqrt(2)**-(m-1)", "apot": "the m-th largest APoT magnitude"}[quant]
    return f"sign bit + {b - 1}-bit magnitude code m; m = 0 -> 0, m >= 1 -> {what}"

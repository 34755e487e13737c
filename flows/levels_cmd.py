"""``post-accel levels``: print the normalised level set of a weight quantizer at a bit-width.

Text output: a header line, then one line per level (ascending) with its code word(s) in binary.
``--json`` prints one JSON object::

    {"quant": "post", "bits": 4, "count": 15, "levels": [...ascending...],
     "code_values": [...value of code 0 .. 2**bits-1...], "codes": "<what a code word means>"}

Unknown ``--quant`` values are rejected by argparse; bits outside the quantizer's range raise
:class:`golden.arith.ArithError`, which ``flows.cli.main`` reports in one line.
"""

from __future__ import annotations

import argparse
import json

from flows.cliutil import UserError

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Register the ``levels`` sub-command on ``subparsers`` (from ``add_subparsers``)."""
    from golden.levels import QUANTS

    p = subparsers.add_parser("levels", help="print the normalised level set of a weight quantizer")
    p.add_argument("--quant", choices=QUANTS, required=True, help="level set: " + ", ".join(QUANTS))
    p.add_argument("--bits", type=int, required=True, help="bit-width of the code words")
    p.add_argument("--symmetric", action="store_true",
                   help="uniform only: drop the most negative code (2**bits - 1 levels)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)   # accepted like the other commands
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Print the level set described by ``args.quant`` / ``args.bits``; return 0."""
    import numpy as np

    from golden import levels as L

    quant, symmetric = args.quant, bool(getattr(args, "symmetric", False))
    if symmetric and quant != "uniform":
        raise UserError("--symmetric applies to --quant uniform only")
    bits = L.check_bits(quant, args.bits)
    levels = L.level_set(quant, bits, symmetric=symmetric)
    values = L.code_values(quant, bits)
    if symmetric:
        values = np.where(np.arange(2 ** bits) == 2 ** (bits - 1), np.nan, values)   # unused code
    result = {"quant": quant, "bits": bits, "count": int(len(levels)), "symmetric": symmetric,
              "levels": [float(v) for v in levels],
              "code_values": [None if np.isnan(v) else float(v) for v in values],
              "codes": L.describe(quant, bits) + (f" (code {2 ** (bits - 1)}, q = -{2 ** (bits - 1)}, unused)"
                                                  if symmetric else "")}
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    lines = [f"{quant} at {bits} bits: {len(levels)} levels; codes: {result['codes']}"]
    for v in levels:
        words = [c for c in range(2 ** bits) if values[c] == v]
        lines.append(f"  {v:+.10f}  " + " ".join(format(c, f"0{bits}b") for c in words))
    print("\n".join(lines))
    return 0

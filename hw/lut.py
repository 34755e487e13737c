"""The row-shared sqrt(2) look-up table: ``entry = arith.sqrt2_lut(abits, frac_bits)[x]``."""

from __future__ import annotations

from amaranth.hdl import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden import arith

__all__ = ["Sqrt2Lut", "checked"]


def checked(component, check):
    """Run ``check()``; if it raises, mark ``component`` as deliberately unused, then re-raise.

    Components validate their parameters before ``super().__init__()``; without this, the
    half-constructed object would later trigger Amaranth's ``UnusedElaboratable`` warning.
    """
    try:
        return check()
    except Exception:
        component._MustUse__silence = True
        raise


class Sqrt2Lut(wiring.Component):
    """Combinational ROM of ``round_half_up(x * 2**frac_bits / sqrt(2))`` for every activation code.

    The contents and the entry width come from :func:`golden.arith.sqrt2_lut` and
    :func:`golden.arith.lut_entry_bits`; one instance serves all C PEs of an array row.

    Parameters
    ----------
    abits : int
        Activation code width (``2**abits`` entries).
    frac_bits : int
        Product fraction bits.

    Attributes
    ----------
    x : In(unsigned(abits))
        Activation code.
    entry : Out(unsigned(lut_bits))
        ``sqrt2_lut[x]``; ``lut_bits = arith.lut_entry_bits(abits, frac_bits)``.
        Combinational (latency 0).
    """

    def __init__(self, abits: int, frac_bits: int = arith.DEFAULT_FRAC_BITS):
        self.abits = checked(self, lambda: arith.check_abits(abits))
        self.frac_bits = checked(self, lambda: arith.check_frac_bits(frac_bits))
        self.table = arith.sqrt2_lut(self.abits, self.frac_bits)
        self.lut_bits = arith.lut_entry_bits(self.abits, self.frac_bits)
        super().__init__({
            "x": In(unsigned(self.abits)),
            "entry": Out(unsigned(self.lut_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        with m.Switch(self.x):
            for code, value in enumerate(self.table):
                with m.Case(code):
                    m.d.comb += self.entry.eq(value)
        return m

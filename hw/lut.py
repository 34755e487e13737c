"""The row-shared sqrt(2) look-up table: ``entry = arith.sqrt2_lut(abits, frac_bits)[x]``."""

from __future__ import annotations

from functools import cache

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden import arith

__all__ = ["Sqrt2Lut", "checked", "split_tables", "SPLIT_MIN_ABITS"]

#: From this activation width up, :class:`Sqrt2Lut` is two small tables and an adder, not one ROM.
SPLIT_MIN_ABITS = 6


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


def split_tables(table: list[int], abits: int, max_extra: int = 16) -> tuple[int, int, list[int], list[int]]:
    """Two small tables whose sum gives ``table``: ``(q, e, hi, lo)`` with
    ``table[x] == (hi[x >> q] + lo[x & (2**q - 1)]) >> e`` for every ``x`` in ``0 .. 2**abits - 1``.

    ``q = abits // 2``; ``e`` is the fewest extra fraction bits for which integer tables exist.
    For each ``e`` the conditions ``table[x] << e <= hi[h] + lo[l] < (table[x] + 1) << e`` are a
    system of difference constraints between the ``hi`` and ``-lo`` entries, solved exactly by
    Bellman-Ford (no rounding argument involved; the result is checked entry by entry).
    Raises ``ValueError`` when no ``e <= max_extra`` works.
    """
    q = abits // 2
    n_hi, n_lo = 2 ** (abits - q), 2 ** q
    for e in range(max_extra + 1):
        # nodes: hi[h] = h, -lo[l] = n_hi + l; an edge (u, v, w) says node_v - node_u <= w
        edges = []
        for x, t in enumerate(table):
            h, lo_ = x >> q, n_hi + (x & (n_lo - 1))
            edges.append((h, lo_, -(t << e)))                  # hi + lo >= t << e
            edges.append((lo_, h, ((t + 1) << e) - 1))         # hi + lo <= ((t + 1) << e) - 1
        dist = [0] * (n_hi + n_lo)
        for _ in range(n_hi + n_lo + 1):
            changed = False
            for u, v, w in edges:
                if dist[u] + w < dist[v]:
                    dist[v], changed = dist[u] + w, True
            if not changed:
                break
        if changed:
            continue                                            # negative cycle: infeasible at this e
        hi, lo = dist[:n_hi], [-d for d in dist[n_hi:]]
        shift = min(lo)                                         # make both tables non-negative
        hi, lo = [v + shift for v in hi], [v - shift for v in lo]
        if min(hi) < 0:
            continue
        if all(((hi[x >> q] + lo[x & (n_lo - 1)]) >> e) == t for x, t in enumerate(table)):
            return q, e, hi, lo
    raise ValueError(f"no split of a {2 ** abits}-entry table with <= {max_extra} extra bits")


@cache
def _split(abits, frac_bits):
    try:
        return split_tables(arith.sqrt2_lut(abits, frac_bits), abits)
    except ValueError:                      # no exact split (none seen for 6..8 bits): one ROM
        return None


class Sqrt2Lut(wiring.Component):
    """Combinational ROM of ``round_half_up(x * 2**frac_bits / sqrt(2))`` for every activation code.

    The contents and the entry width come from :func:`golden.arith.sqrt2_lut` and
    :func:`golden.arith.lut_entry_bits`; one instance serves all C PEs of an array row.

    Up to 5 activation bits it is one ROM (a 16-entry ROM is one LUT4 per output bit). From
    :data:`SPLIT_MIN_ABITS` bits up a ``2**abits``-entry ROM grows with its entry count, so it is
    built as two ``2**(abits/2)``-entry ROMs and one adder, ``entry = (hi[x >> q] + lo[x &
    (2**q-1)]) >> e`` (:func:`split_tables`; the same numbers: checked for every ``x`` when the
    component is built). At 8 bits and 8 fraction bits: 3 extra bits, 44 SB_LUT4 + 18 SB_CARRY instead
    of 234 SB_LUT4 (yosys 0.23 ``synth_ice40``, 2026-12-02).

    Parameters
    ----------
    abits : int
        Activation code width (``2**abits`` entries).
    frac_bits : int
        Product fraction bits.
    split : bool or None
        Force the split form (``True``) or the single ROM (``False``); ``None`` (default) picks the
        split from :data:`SPLIT_MIN_ABITS` activation bits up.

    Attributes
    ----------
    x : In(unsigned(abits))
        Activation code.
    entry : Out(unsigned(lut_bits))
        ``sqrt2_lut[x]``; ``lut_bits = arith.lut_entry_bits(abits, frac_bits)``.
        Combinational (latency 0).
    """

    def __init__(self, abits: int, frac_bits: int = arith.DEFAULT_FRAC_BITS, split: bool | None = None):
        self.abits = checked(self, lambda: arith.check_abits(abits))
        self.frac_bits = checked(self, lambda: arith.check_frac_bits(frac_bits))
        self.table = arith.sqrt2_lut(self.abits, self.frac_bits)
        self.lut_bits = arith.lut_entry_bits(self.abits, self.frac_bits)
        if split is None:
            split = self.abits >= SPLIT_MIN_ABITS
        self.split = _split(self.abits, self.frac_bits) if split else None
        super().__init__({
            "x": In(unsigned(self.abits)),
            "entry": Out(unsigned(self.lut_bits)),
        })

    @staticmethod
    def _rom(m, index, values, name):
        out = Signal(range(max(values) + 1), name=name)
        with m.Switch(index):
            for code, value in enumerate(values):
                with m.Case(code):
                    m.d.comb += out.eq(value)
        return out

    def elaborate(self, platform):
        m = Module()
        if self.split is None:
            m.d.comb += self.entry.eq(self._rom(m, self.x, self.table, "rom"))
            return m
        q, e, hi, lo = self.split
        total = self._rom(m, self.x[q:], hi, "hi") + self._rom(m, self.x[:q], lo, "lo")
        m.d.comb += self.entry.eq(total[e:])
        return m

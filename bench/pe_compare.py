"""POST vs POT vs INT processing elements on open FPGA flows: LUTs, FFs, carry, DSPs and Fmax.

For weight bits 2..8 and activation bits 4 and 8 it synthesises, for each PE kind,

* a MAC cell: a row of ``--share`` PEs sharing one activation register and (POST) one sqrt(2)
  LUT, each with its own accumulator (``hw.mac_cell.MacRow``); per-PE = row / share;
* 4x4 and 8x8 arrays (``hw.mac_cell.PeArray``: the engine's array datapath for that PE);

on the iCE40 UP5K (yosys synth_ice40 + nextpnr-ice40) and the ECP5-25k, plus ablations at
W4A4 (LUT sharing, accumulator width, INT on DSPs) and a breakdown of where a POST MAC's LUTs go.
All accumulators are ``golden.arith.accumulator_bits(fan_in=64, abits, frac_bits=8)`` wide, the
same for the three kinds. Jobs run through ``flows.jobs.run_jobs`` (Dask, 2 workers).

Writes ``bench/results/pe_compare.json`` and the tables between the markers in
``docs/hardware.md``::

    .venv/bin/python bench/pe_compare.py                 # the reduced sweep (fits 2 cores)
    .venv/bin/python bench/pe_compare.py --sweep full    # every width, every array, both FPGAs
    .venv/bin/python bench/pe_compare.py --levers        # issue 15 goal 6: W4A4/W4A8 MAC levers,
                                                         # iCE40 + CMOS proxy (keeps the sweep data)

``--levers`` synthesises the W4A4 and W4A8 MAC rows in each accumulator/sign style
(``hw.mac_cell.MacRow``'s ``clear`` and ``sign``), the INT row on the UP5K's DSPs, and the parts
of a MAC alone, on the iCE40 and in the CMOS transistor proxy (``flows.synth.cmos_transistors``);
it stores them under ``"levers"`` in the JSON and renders them above the sweep tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.jobs import run_jobs  # noqa: E402

KINDS = ("post", "pot", "int")
WBITS = tuple(range(2, 9))
ABITS = (4, 8)
BEGIN, END = "<!-- pe_compare:begin -->", "<!-- pe_compare:end -->"


# --- the job list ------------------------------------------------------------

def sweep_jobs(sweep: str, share: int) -> list[dict]:
    """Job descriptions of a sweep: ``quick`` (W4A4 only), ``reduced`` or ``full``."""
    jobs = []

    def add(group, target, unit, kind, w, a, rows=4, cols=4, **extra):
        jobs.append({"group": group, "target": target, "unit": unit, "pe": kind, "wbits": w, "abits": a,
                     "rows": rows, "cols": cols, **extra})

    widths = [(w, a) for a in ABITS for w in WBITS]
    if sweep == "quick":
        widths = [(4, 4)]
    # MAC cells on iCE40: every width
    for w, a in widths:
        for k in KINDS:
            add("mac", "ice40-up5k", "mac", k, w, a, cols=share)
    # arrays on iCE40
    a4x4 = widths if sweep == "full" else [(w, a) for (w, a) in widths if w in (2, 4, 6, 8)]
    a8x8 = widths if sweep == "full" else [(w, a) for (w, a) in widths if (w, a) in ((2, 4), (4, 4), (4, 8))]
    for w, a in a4x4:
        for k in KINDS:
            add("array", "ice40-up5k", "array", k, w, a, 4, 4)
    for w, a in a8x8:
        for k in KINDS:
            add("array", "ice40-up5k", "array", k, w, a, 8, 8)
    # ECP5
    e_mac = widths if sweep == "full" else [(w, a) for (w, a) in widths if w in (2, 4, 6, 8)]
    e_arr = widths if sweep == "full" else [(4, 4), (8, 8)]
    for w, a in e_mac:
        for k in KINDS:
            add("mac", "ecp5-25k", "mac", k, w, a, cols=share)
    for w, a in e_arr:
        for k in KINDS:
            add("array", "ecp5-25k", "array", k, w, a, 4, 4)
            if (w, a) == (4, 4) or sweep == "full":
                add("array", "ecp5-25k", "array", k, w, a, 8, 8)
    # ablations at W4A4 on iCE40
    from golden import arith_variants
    for s in (1, 8):
        add("ablation", "ice40-up5k", "mac", "post", 4, 4, cols=s, label=f"POST, LUT shared by {s}")
    add("ablation", "ice40-up5k", "mac", "int", 4, 4, cols=share, acc_bits=arith_variants.int_accumulator_bits(64, 4, 4),
        label="INT, its own (narrower) accumulator")
    add("ablation", "ice40-up5k", "mac", "post", 4, 4, cols=share, frac_bits=4, label="POST, frac_bits 4")
    add("ablation", "ice40-up5k", "mac", "pot", 4, 4, cols=share, frac_bits=3,
        label="POT, frac_bits 3 (exact at W4)")
    add("ablation", "ice40-up5k", "mac", "int", 4, 4, cols=share, dsp=True, label="INT, multipliers on DSPs")
    add("ablation", "ice40-up5k", "array", "int", 4, 4, 4, 4, dsp=True, label="INT 4x4, multipliers on DSPs")
    return jobs


def run_job(job: dict) -> dict:
    """One synthesis (and place and route): a JSON-ready dict; failures are returned, not raised."""
    from flows.synth import synth_unit

    kw = {k: job[k] for k in ("frac_bits", "acc_bits", "dsp", "clear", "sign", "cmos", "pnr") if k in job}
    started = time.monotonic()
    try:
        rep = synth_unit(job["unit"], job["pe"], job["wbits"], job["abits"], job["target"],
                         rows=job["rows"], cols=job["cols"], **kw)
        rep.pop("tools", None)
        rep.pop("cells", None)
        return {**job, **rep}
    except Exception as exc:  # noqa: BLE001 - one failed job must not lose the sweep
        return {**job, "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                "seconds": round(time.monotonic() - started, 2)}


# --- issue 15 goal 6: the levers, at W4A4 and W4A8 ---------------------------

LEVER_WIDTHS = ((4, 4), (4, 8))
#: (label, kind, clear, sign, dsp) of each lever row
LEVER_ROWS = (
    ("INT, masked clear (the MacRow of 2026-11-25)", "int", "mask", "pe", False),
    ("INT, clear after the adder (best plain `*`)", "int", "select", "pe", False),
    ("INT, clear after the adder, `synth_ice40 -dsp`", "int", "select", "pe", True),
    ("POST, masked clear, sign adder in the PE (the MacRow of 2026-11-25; sqrt(2) table as of today)", "post", "mask", "pe", False),
    ("POST, sign on the accumulator's carry-in (masked clear)", "post", "mask", "carry", False),
    ("POST, clear after the adder, sign adder in the PE", "post", "select", "pe", False),
    ("POT, clear after the adder", "pot", "select", "pe", False),
)


#: (label, kind, sign, dsp) of the 4x4 array rows (synthesis only: no place and route)
LEVER_ARRAYS = (
    ("INT 4x4 array (best plain `*`)", "int", "pe", False),
    ("INT 4x4 array, `synth_ice40 -dsp`", "int", "pe", True),
    ("POST 4x4 array, signs on the tree carry-ins (as hw.array.PostArray)", "post", "carry", False),
    ("POST 4x4 array, sign adder in each PE (PostArray before 2026-12-02)", "post", "pe", False),
)


def lever_jobs(share: int) -> list[dict]:
    from golden import arith
    jobs = [{"group": "lever", "target": "ice40-up5k", "unit": "mac", "pe": kind, "wbits": w, "abits": a,
             "rows": 4, "cols": share, "clear": clear, "sign": sign, "dsp": dsp, "cmos": True, "label": label}
            for w, a in LEVER_WIDTHS for label, kind, clear, sign, dsp in LEVER_ROWS]
    # fewer fraction bits: a different POST format (less precise sqrt(2) products), same accumulator
    for w, a in LEVER_WIDTHS:
        acc = arith.accumulator_bits(64, a, arith.DEFAULT_FRAC_BITS)
        for clear, sign, what in (("select", "pe", "clear after the adder, sign adder in the PE"),
                                  ("mask", "carry", "sign on the carry-in")):
            jobs.append({"group": "lever", "target": "ice40-up5k", "unit": "mac", "pe": "post", "wbits": w,
                         "abits": a, "rows": 4, "cols": share, "clear": clear, "sign": sign, "dsp": False,
                         "cmos": True, "frac_bits": 4, "acc_bits": acc,
                         "label": f"POST frac_bits 4 (another format), {what}, {acc}-bit accumulator"})
    for w, a in LEVER_WIDTHS:
        for label, kind, sign, dsp in LEVER_ARRAYS:
            jobs.append({"group": "lever", "target": "ice40-up5k", "unit": "array", "pe": kind, "wbits": w,
                         "abits": a, "rows": 4, "cols": 4, "clear": "select", "sign": sign, "dsp": dsp,
                         "cmos": True, "pnr": False, "label": label})
    return jobs


def lever_parts(share: int = 4, fan_in: int = 64) -> list[dict]:
    """The parts of a MAC, each synthesised alone (synth_ice40, no place and route) and in the
    CMOS proxy, at W4A4 and W4A8: the numbers behind the lower bounds in docs/hardware.md."""
    from functools import partial

    from amaranth.hdl import Module, Mux, signed
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from flows.synth import _to_verilog, cmos_transistors, synth_verilog
    from golden import arith
    from golden import arith_variants as av
    from hw.lut import Sqrt2Lut
    from hw.pe import IntPE, PostOnesPE, PostPE

    fb = arith.DEFAULT_FRAC_BITS

    class Accumulator(wiring.Component):
        """A registered accumulator alone: ``acc <= first ? p : acc + p`` (select) or ``(first ? 0 :
        acc) + p`` (mask); ``p`` arrives from a register so nothing merges into its source."""
        def __init__(self, in_bits, acc_bits, clear):
            self.in_bits, self.clear = in_bits, clear
            super().__init__({"p": In(signed(in_bits)), "first": In(1), "acc": Out(signed(acc_bits))})

        def elaborate(self, platform):
            from amaranth.hdl import Signal
            m = Module()
            p_r, f_r = Signal(signed(self.in_bits)), Signal()
            m.d.sync += [p_r.eq(self.p), f_r.eq(self.first)]
            if self.clear == "select":
                m.d.sync += self.acc.eq(Mux(f_r, p_r, self.acc + p_r))
            else:
                m.d.sync += self.acc.eq(Mux(f_r, 0, self.acc) + p_r)
            return m

    out = []
    for w, a in LEVER_WIDTHS:
        acc = arith.accumulator_bits(fan_in, a, fb)
        pbits = arith.product_magnitude_bits(a, fb) + 1
        parts = [
            ("sqrt(2) table, one ROM", partial(Sqrt2Lut, a, fb, split=False), f"per row; /{share} per PE"),
            ("sqrt(2) table, split (2 ROMs + adder)", partial(Sqrt2Lut, a, fb, split=True),
             f"per row; /{share} per PE"),
            ("POST PE with its sign adder", partial(PostPE, w, a, fb), "hw.pe.PostPE"),
            ("POST PE, ones' complement out", partial(PostOnesPE, w, a, fb), "hw.pe.PostOnesPE"),
            ("INT PE (`*`)", partial(IntPE, w, a), "hw.pe.IntPE"),
            (f"accumulator {acc} b, clear after the adder, POST product in",
             partial(Accumulator, pbits, acc, "select"), "input registered; FFs include it"),
            (f"accumulator {acc} b, masked clear, POST product in",
             partial(Accumulator, pbits, acc, "mask"), "input registered; FFs include it"),
            (f"accumulator {acc} b, clear after the adder, INT product in",
             partial(Accumulator, av.int_product_bits(w, a), acc, "select"), "input registered; FFs include it"),
        ]
        for name, make, detail in parts:
            verilog = _to_verilog(make(), "part")
            rep = synth_verilog(verilog, "part", "ice40-up5k", pnr=False)
            out.append({"wbits": w, "abits": a, "part": name, "detail": detail, "luts": rep.luts,
                        "carry": rep.carry, "ffs": rep.ffs, "cmos_transistors": cmos_transistors(verilog, "part")})
    return out


def lever_markdown(lev: dict) -> list[str]:
    meta, results, parts = lev["meta"], lev["results"], lev["parts"]
    lines = [f"### Goal 6 levers (MAC row of {meta['share']}, iCE40 UP5K and CMOS proxy)", "",
             f"Measured {meta['date']} with `{meta['command']}` ({meta['jobs']} jobs, {meta['seconds']:.0f} s; "
             f"{meta['yosys']}, nextpnr-ice40 seed 1). Per PE = row / {meta['share']}. CMOS = transistors of the "
             "combinational logic after `synth -flatten; abc -g cmos2; stat -tech cmos` (flip-flops not counted).",
             ""]
    for (w, a), unit in [(wa, u) for u in ("mac", "array") for wa in LEVER_WIDTHS]:
        rows = [r for r in results if (r["wbits"], r["abits"]) == (w, a) and r["unit"] == unit]
        if not rows:
            continue
        ok = [r for r in rows if "error" not in r]
        best_int = min((r for r in ok if r["pe"] == "int" and not r["dsp"]), key=lambda r: r["luts"], default=None)
        what = (f"MAC row of {meta['share']}, per PE" if unit == "mac"
                else "4x4 array (hw.mac_cell.PeArray), per PE = array / 16, synthesis only")
        lines += [f"#### W{w}A{a}: {what} ({rows[0].get('acc_bits', '–')}-bit accumulators)", "",
                  "| variant | LUTs per PE | carry | FFs | DSPs | CMOS per PE | LUTs / best INT | CMOS / best INT | Fmax (MHz) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['label']} | error: {r['error']} | | | | | | | |")
                continue
            pp = r["per_pe"]
            rl = f"{r['luts'] / best_int['luts']:.2f}" if best_int else "–"
            rc = f"{r['cmos_transistors'] / best_int['cmos_transistors']:.2f}" if best_int else "–"
            fmax = "–" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.0f}"
            lines.append(f"| {r['label']} | {pp['luts']:g} | {pp['carry']:g} | {pp['ffs']:g} | {pp['dsps']:g} | "
                         f"{pp['cmos_transistors']:g} | {rl} | {rc} | {fmax} |")
        lines.append("")
    if parts:
        lines += ["#### The parts alone (synth_ice40, no place and route; CMOS proxy)", "",
                  "| W | A | part | detail | SB_LUT4 | SB_CARRY | FFs | CMOS |", "|---|---|---|---|---|---|---|---|"]
        for b in parts:
            lines.append(f"| {b['wbits']} | {b['abits']} | {b['part']} | {b['detail']} | {b['luts']} | {b['carry']} | "
                         f"{b['ffs']} | {b['cmos_transistors']} |")
        lines.append("")
    return lines


# --- where the area goes: sub-blocks synthesised alone (iCE40, synthesis only) --

def breakdown(wbits: int = 4, abits: int = 4, fan_in: int = 64, share: int = 4) -> list[dict]:
    """LUT/carry/FF counts of the parts of a MAC cell, each synthesised on its own (synth_ice40)."""
    from amaranth.hdl import Cat, Module, Mux, signed, unsigned
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from flows.synth import synth_component
    from golden import arith
    from hw.lut import Sqrt2Lut
    from hw.pe import IntPE, PostPE, PotPE

    fb = arith.DEFAULT_FRAC_BITS
    mag_bits = arith.product_magnitude_bits(abits, fb)
    acc_bits = arith.accumulator_bits(fan_in, abits, fb)
    lut_bits = arith.lut_entry_bits(abits, fb)

    class Shifter(wiring.Component):
        """POST magnitude path of PostPE without the sign: base mux + barrel shifter."""
        def __init__(self):
            super().__init__({"x": In(unsigned(abits)), "lut": In(unsigned(lut_bits)),
                              "code": In(unsigned(wbits)), "mag": Out(unsigned(mag_bits))})

        def elaborate(self, platform):
            m = Module()
            mc = self.code[:wbits - 1]
            k = mc - 1
            base = Mux(mc == 0, 0, Mux(k[0], self.lut, self.x << fb))
            m.d.comb += self.mag.eq((base >> k[1:wbits - 1])[:mag_bits])
            return m

    class SignAdder(wiring.Component):
        """PostPE's sign stage: one adder, (|p| ^ -s) + s."""
        def __init__(self, naive=False):
            self.naive = naive
            super().__init__({"mag": In(unsigned(mag_bits)), "s": In(1), "p": Out(signed(mag_bits + 1))})

        def elaborate(self, platform):
            m = Module()
            if self.naive:       # negate, then select: a negator and a 2:1 mux
                m.d.comb += self.p.eq(Mux(self.s, -self.mag, self.mag))
            else:
                m.d.comb += self.p.eq((Cat(self.mag, 0) ^ self.s.replicate(mag_bits + 1)) + self.s)
            return m

    class Accumulator(wiring.Component):
        """acc <= (first ? 0 : acc) + p, registered; ``fused``: acc +/- |p| with the sign as carry-in."""
        def __init__(self, in_bits, fused=False):
            self.fused, self.in_bits = fused, in_bits
            ports = {"first": In(1), "acc": Out(signed(acc_bits))}
            ports.update({"mag": In(unsigned(in_bits)), "s": In(1)} if fused else {"p": In(signed(in_bits))})
            super().__init__(ports)

        def elaborate(self, platform):
            m = Module()
            prev = Mux(self.first, 0, self.acc)
            if self.fused:      # (acc<<1 | s) + ((|p| ^ -s)<<1 | s) = (acc + (|p| ^ -s) + s) << 1
                inv = Cat(self.mag, 0) ^ self.s.replicate(self.in_bits + 1)
                total = Cat(self.s, prev).as_signed() + Cat(self.s, inv).as_signed()
                m.d.sync += self.acc.eq(total[1:])
            else:
                m.d.sync += self.acc.eq(prev + self.p)
            return m

    from golden import arith_variants as av
    parts = [
        ("sqrt(2) LUT (one per row)", lambda: Sqrt2Lut(abits, fb), f"{2 ** abits} x {lut_bits} ROM; /{share} per PE"),
        ("POST shifter (base mux + barrel shift)", Shifter, f"{mag_bits}-bit magnitude"),
        ("sign: one adder (|p| ^ -s) + s", SignAdder, f"{mag_bits + 1} bits, as in PostPE"),
        ("sign: negate then mux (alternative)", lambda: SignAdder(naive=True), "not used"),
        ("POST PE (shifter + sign)", lambda: PostPE(wbits, abits, fb), "hw.pe.PostPE"),
        ("POT PE", lambda: PotPE(wbits, abits, fb), "hw.pe.PotPE"),
        ("INT PE (multiplier)", lambda: IntPE(wbits, abits), "hw.pe.IntPE"),
        (f"accumulator, {acc_bits} bits, POST/POT product in", lambda: Accumulator(mag_bits + 1),
         "register + adder + clear"),
        (f"accumulator, {acc_bits} bits, INT product in",
         lambda: Accumulator(av.int_product_bits(wbits, abits)), "same width, narrower input"),
        (f"accumulator, {av.int_accumulator_bits(fan_in, wbits, abits)} bits (INT's own), INT product in",
         None, "see below"),
        (f"accumulator with the sign fused (acc +/- |p|), {acc_bits} bits", lambda: Accumulator(mag_bits, True),
         "replaces sign adder + accumulator"),
    ]
    out = []
    for name, make, what in parts:
        if make is None:
            continue
        rep = synth_component(make(), "part", "ice40-up5k", pnr=False)
        out.append({"part": name, "detail": what, "luts": rep.luts, "carry": rep.carry, "ffs": rep.ffs})
    return out


def sign_alternatives(wbits: int = 4, abits: int = 4, fan_in: int = 64, share: int = 4) -> list[dict]:
    """Whole POST MAC rows with three ways of applying the sign, each checked against
    ``golden.arith`` in simulation, then synthesised and placed on the iCE40 (per-PE figures).

    ``pe_adder``: the PE's own adder, ``(|p| ^ -s) + s`` (hw.pe.PostPE, the design);
    ``negate_mux``: ``s ? -|p| : |p|`` in the PE; ``fused``: no sign stage in the PE, the
    accumulator adds ``|p| ^ -s`` with ``s`` as carry-in (one adder per MAC instead of two).
    """
    import numpy as np
    from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
    from amaranth.lib import data, wiring
    from amaranth.lib.wiring import In, Out
    from amaranth.sim import Simulator

    from flows.synth import synth_component
    from golden import arith
    from hw.lut import Sqrt2Lut

    fb = arith.DEFAULT_FRAC_BITS
    mag_bits = arith.product_magnitude_bits(abits, fb)
    acc_bits = arith.accumulator_bits(fan_in, abits, fb)

    class Row(wiring.Component):
        def __init__(self, style):
            self.style = style
            super().__init__({"x": In(unsigned(abits)), "codes": In(data.ArrayLayout(unsigned(wbits), share)),
                              "first": In(1), "acc": Out(data.ArrayLayout(signed(acc_bits), share))})

        def elaborate(self, platform):
            m = Module()
            x_r, first_r = Signal(unsigned(abits)), Signal()
            codes_r = Signal(data.ArrayLayout(unsigned(wbits), share))
            m.d.sync += [x_r.eq(self.x), codes_r.eq(self.codes), first_r.eq(self.first)]
            m.submodules.lut = lut = Sqrt2Lut(abits, fb)
            m.d.comb += lut.x.eq(x_r)
            for c in range(share):
                code = codes_r[c]
                mc, s = code[:wbits - 1], code[wbits - 1]
                k = mc - 1
                base = Mux(mc == 0, 0, Mux(k[0], lut.entry, x_r << fb))
                mag = (base >> k[1:wbits - 1])[:mag_bits]
                prev = Mux(first_r, 0, self.acc[c])
                if self.style == "fused":
                    inv = Cat(mag, 0) ^ s.replicate(mag_bits + 1)
                    m.d.sync += self.acc[c].eq((Cat(s, prev).as_signed() + Cat(s, inv).as_signed())[1:])
                elif self.style == "negate_mux":
                    m.d.sync += self.acc[c].eq(prev + Mux(s, -mag, mag))
                else:
                    p = ((Cat(mag, 0) ^ s.replicate(mag_bits + 1)) + s)[:mag_bits + 1].as_signed()
                    m.d.sync += self.acc[c].eq(prev + p)
            return m

    def check(style):
        dut = Row(style)
        rng = np.random.default_rng(5)
        steps = [(int(rng.integers(0, 2 ** abits)), [int(v) for v in rng.integers(0, 2 ** wbits, share)], i % 7 == 0)
                 for i in range(60)]
        got = []

        async def tb(ctx):
            for x, codes, first in steps + [(0, [0] * share, False)]:
                ctx.set(dut.x, x)
                ctx.set(dut.codes, codes)
                ctx.set(dut.first, int(first))
                await ctx.tick()
                got.append([ctx.get(dut.acc[c]) for c in range(share)])

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(tb)
        sim.run()
        acc, expected = [0] * share, []
        for x, codes, first in steps:
            acc = [(0 if first else a) + int(arith.post_product(x, c, wbits, abits)) for a, c in zip(acc, codes)]
            expected.append(acc)
        if got[1:] != expected:
            raise AssertionError(f"sign style {style} does not match golden.arith")

    out = []
    for style, what in (("pe_adder", "sign adder in the PE, then accumulator (the design)"),
                        ("negate_mux", "negate and mux in the PE, then accumulator"),
                        ("fused", "sign folded into the accumulator's adder (carry-in)")):
        check(style)
        rep = synth_component(Row(style), "row", "ice40-up5k")
        out.append({"style": style, "detail": what, "luts_per_pe": rep.luts / share,
                    "carry_per_pe": rep.carry / share, "ffs_per_pe": rep.ffs / share, "fmax_mhz": rep.fmax_mhz})
    return out


# --- report ------------------------------------------------------------------

def _index(results):
    idx = {}
    for r in results:
        if r["group"] in ("mac", "array"):
            idx[(r["target"], r["unit"], r["rows"] if r["unit"] == "array" else 0,
                 r["cols"] if r["unit"] == "array" else 0, r["pe"], r["wbits"], r["abits"])] = r
    return idx


def _cell(r, key="luts", per_pe=False):
    if r is None:
        return "–"
    if "error" in r:
        return "error"
    v = r["per_pe"][key] if per_pe else r[key]
    if key == "fmax_mhz":
        return "–" if v is None else f"{v:.0f}"
    txt = f"{v:g}"
    return txt if r.get("fits", True) else f"({txt}) no fit"


def markdown(data: dict) -> str:
    results, meta = data["results"], data["meta"]
    idx = _index(results)
    lines = lever_markdown(data["levers"]) if data.get("levers") else []
    lines += ["### The sweep", "",
              "MAC rows and arrays below use the accumulator and sign forms of their date (before "
              "2026-12-02: masked clear, sign adder in the PE, one-ROM sqrt(2) table).", "",
              f"Measured {meta['date']} with `{meta['command']}` ({meta['sweep']} sweep, "
             f"{meta['jobs']} jobs, {meta['seconds']:.0f} s on {meta['workers']} Dask workers; "
             f"{meta['yosys']}, nextpnr seed {meta['seed']}). Raw data: `bench/results/pe_compare.json`.", ""]

    for target in ("ice40-up5k", "ecp5-25k"):
        lut_key = "luts" if target == "ice40-up5k" else "lut4_equivalent"
        rows = [(w, a) for a in ABITS for w in WBITS
                if any((target, "mac", 0, 0, k, w, a) in idx for k in KINDS)]
        if not rows:
            continue
        lines += [f"#### MAC cell per PE on {target} (row of {meta['share']} PEs / {meta['share']}; "
                  f"{'LUT4s incl. 2 per CCU2C' if target == 'ecp5-25k' else 'SB_LUT4'})", "",
                  "| W | A | acc bits | POST LUTs | POT LUTs | INT LUTs | **POST/INT** | POST FFs | INT FFs | "
                  "POST carry | INT carry | Fmax POST | Fmax POT | Fmax INT (MHz) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for w, a in rows:
            p, t, i = (idx.get((target, "mac", 0, 0, k, w, a)) for k in KINDS)
            ratio = "–"
            if p and i and "error" not in p and "error" not in i:
                ratio = f"{p['per_pe'][lut_key] / i['per_pe'][lut_key]:.2f}"
            acc = p.get("acc_bits", "–") if p else "–"
            lines.append(f"| {w} | {a} | {acc} | {_cell(p, lut_key, True)} | {_cell(t, lut_key, True)} | "
                         f"{_cell(i, lut_key, True)} | **{ratio}** | {_cell(p, 'ffs', True)} | "
                         f"{_cell(i, 'ffs', True)} | {_cell(p, 'carry', True)} | {_cell(i, 'carry', True)} | "
                         f"{_cell(p, 'fmax_mhz')} | {_cell(t, 'fmax_mhz')} | {_cell(i, 'fmax_mhz')} |")
        lines.append("")

        arrays = sorted({(k[2], k[3], k[5], k[6]) for k in idx if k[0] == target and k[1] == "array"},
                        key=lambda t: (t[0], t[3], t[2]))
        if arrays:
            lines += [f"#### Arrays on {target} (whole array; Fmax after place and route)", "",
                      "| array | W | A | POST LUTs | POT LUTs | INT LUTs | POST/INT | POST FFs | INT FFs | "
                      "Fmax POST | Fmax POT | Fmax INT (MHz) |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for R, C, w, a in arrays:
                p, t, i = (idx.get((target, "array", R, C, k, w, a)) for k in KINDS)
                ratio = "–"
                if p and i and "error" not in p and "error" not in i:
                    ratio = f"{p[lut_key] / i[lut_key]:.2f}"
                lines.append(f"| {R}x{C} | {w} | {a} | {_cell(p, lut_key)} | {_cell(t, lut_key)} | "
                             f"{_cell(i, lut_key)} | {ratio} | {_cell(p, 'ffs')} | {_cell(i, 'ffs')} | "
                             f"{_cell(p, 'fmax_mhz')} | {_cell(t, 'fmax_mhz')} | {_cell(i, 'fmax_mhz')} |")
            lines.append("")

    abl = [r for r in results if r["group"] == "ablation"]
    if abl:
        lines += ["#### Ablations at W4A4 on ice40-up5k", "",
                  "| variant | unit | acc bits | LUTs per PE | FFs per PE | carry per PE | DSPs per PE | Fmax (MHz) |",
                  "|---|---|---|---|---|---|---|---|"]
        base = [idx.get(("ice40-up5k", "mac", 0, 0, k, 4, 4)) for k in KINDS]
        for k, r in zip(KINDS, base):
            if r and "error" not in r:
                lines.append(f"| {k.upper()} reference (share {meta['share']}, frac_bits 8) | MAC | {r['acc_bits']} | "
                             f"{_cell(r, 'luts', True)} | {_cell(r, 'ffs', True)} | {_cell(r, 'carry', True)} | "
                             f"{_cell(r, 'dsps', True)} | {_cell(r, 'fmax_mhz')} |")
        for r in abl:
            unit = "MAC" if r["unit"] == "mac" else f"{r['rows']}x{r['cols']} array"
            if "error" in r:
                lines.append(f"| {r['label']} | {unit} | – | error: {r['error']} | | | | |")
                continue
            lines.append(f"| {r['label']} | {unit} | {r['acc_bits']} | {_cell(r, 'luts', True)} | "
                         f"{_cell(r, 'ffs', True)} | {_cell(r, 'carry', True)} | {_cell(r, 'dsps', True)} | "
                         f"{_cell(r, 'fmax_mhz')} |")
        lines.append("")

    if data.get("sign_alternatives"):
        lines += ["#### Applying the sign: three W4A4 POST MAC rows (share 4, each checked against golden.arith "
                  "in simulation; ice40-up5k, per PE)", "",
                  "| sign style | what | LUTs per PE | carry per PE | FFs per PE | Fmax (MHz) |",
                  "|---|---|---|---|---|---|"]
        for a in data["sign_alternatives"]:
            fmax = "–" if a["fmax_mhz"] is None else f"{a['fmax_mhz']:.0f}"
            lines.append(f"| `{a['style']}` | {a['detail']} | {a['luts_per_pe']:g} | {a['carry_per_pe']:g} | "
                         f"{a['ffs_per_pe']:g} | {fmax} |")
        lines.append("")

    if data.get("breakdown"):
        lines += ["#### Where a W4A4 MAC's area goes (each part synthesised alone, synth_ice40)", "",
                  "| part | detail | SB_LUT4 | SB_CARRY | FFs |", "|---|---|---|---|---|"]
        for b in data["breakdown"]:
            lines.append(f"| {b['part']} | {b['detail']} | {b['luts']} | {b['carry']} | {b['ffs']} |")
        lines.append("")
    return "\n".join(lines)


def write_markdown(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else f"# Hardware\n\n{BEGIN}\n{END}\n"
    if BEGIN not in doc or END not in doc:
        doc += f"\n{BEGIN}\n{END}\n"
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", choices=("quick", "reduced", "full"), default="reduced")
    ap.add_argument("--share", type=int, default=4, help="PEs per row sharing the LUT in a MAC cell (default 4)")
    ap.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--serial", action="store_true", help="run without Dask")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "pe_compare.json"))
    ap.add_argument("--doc", default=str(ROOT / "docs" / "hardware.md"))
    ap.add_argument("--markdown-only", action="store_true", help="re-render docs/hardware.md from --out")
    ap.add_argument("--breakdown-only", action="store_true",
                    help="recompute only the breakdown and sign alternatives into --out, then re-render")
    ap.add_argument("--levers", action="store_true",
                    help="run only the goal-6 levers (W4A4, W4A8; iCE40 + CMOS proxy) into --out's \"levers\"")
    args = ap.parse_args(argv)

    out = Path(args.out)
    if args.levers:
        data = json.loads(out.read_text())
        jobs = lever_jobs(args.share)
        started = time.monotonic()
        results = run_jobs(run_job, jobs, scheduler=args.scheduler, progress=not args.no_progress,
                           serial=args.serial, workers=args.workers, desc="pe_compare (levers)")
        parts = lever_parts(share=args.share)
        from flows.synth import find_tool
        import subprocess
        yosys_version = subprocess.run(find_tool("yosys") + ["-V"], capture_output=True, text=True,
                                       check=False).stdout.strip()
        data["levers"] = {"meta": {"date": dt.date.today().isoformat(), "command": "python bench/pe_compare.py --levers",
                                   "share": args.share, "jobs": len(jobs),
                                   "seconds": round(time.monotonic() - started, 1), "yosys": yosys_version},
                          "results": results, "parts": parts}
        out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    elif args.markdown_only or args.breakdown_only:
        data = json.loads(out.read_text())
        if args.breakdown_only:
            data["breakdown"] = breakdown(share=args.share)
            data["sign_alternatives"] = sign_alternatives(share=args.share)
            data["meta"]["breakdown_date"] = dt.date.today().isoformat()
            out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    else:
        jobs = sweep_jobs(args.sweep, args.share)
        started = time.monotonic()
        results = run_jobs(run_job, jobs, scheduler=args.scheduler, progress=not args.no_progress,
                           serial=args.serial, workers=args.workers, desc=f"pe_compare ({args.sweep})")
        parts = breakdown(share=args.share)
        signs = sign_alternatives(share=args.share)
        seconds = time.monotonic() - started
        from flows.synth import find_tool
        import subprocess
        yosys_version = subprocess.run(find_tool("yosys") + ["-V"], capture_output=True, text=True).stdout.strip()
        cmd = "python bench/pe_compare.py" + ("" if args.sweep == "reduced" else f" --sweep {args.sweep}")
        data = {"meta": {"date": dt.date.today().isoformat(), "command": cmd, "sweep": args.sweep,
                         "share": args.share, "jobs": len(jobs), "seconds": round(seconds, 1),
                         "workers": 1 if args.serial else args.workers, "yosys": yosys_version, "seed": 1,
                         "fan_in": 64, "frac_bits": 8, "python": platform.python_version()},
                "results": results, "breakdown": parts, "sign_alternatives": signs}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    write_markdown(Path(args.doc), markdown(data))
    errors = [r for r in data["results"] if "error" in r]
    for r in errors:
        print(f"error: {r['target']} {r['unit']} {r['pe']} W{r['wbits']}A{r['abits']}: {r['error']}", file=sys.stderr)
    print(f"wrote {out} and {args.doc} ({len(data['results'])} jobs, {len(errors)} errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

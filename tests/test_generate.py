"""`post-accel generate`: deterministic Verilog + manifest that lints clean and synthesises for iCE40."""

import json
import shutil
import subprocess
import sys

import pytest

from flows.cli import main
from sim.rtl import simulator_env

# Waivers for `verilator --lint-only -Wall` on Amaranth's output, each with its reason
# (also listed in README.md). Everything else in -Wall must stay clean.
LINT_WAIVERS = {
    "-Wno-DECLFILENAME": "Amaranth emits every submodule into one file named after the top",
    "-Wno-UNUSEDSIGNAL": "unused bits of wide struct payloads and memory read data (e.g. the high "
                         "bits of a host write when the target memory is narrower)",
    "-Wno-WIDTHEXPAND": "yosys' Verilog backend writes operators on operands of their RTLIL widths "
                        "(`a == 2'h3` with a 3-bit `a`, `x + $signed(y)`); Verilog's context-width rules "
                        "extend them exactly as RTLIL specifies, so nothing is lost",
    "-Wno-WIDTHTRUNC": "the same backend writes `!v` for a multi-bit `v` (RTLIL $logic_not: v == 0), "
                       "which Verilator reports as a 1-bit truncation although it is the intended reduction",
    "-Wno-PROCASSINIT": "Amaranth gives every register its reset value as a Verilog initial value as well "
                        "(`reg busy = 1'h0;`) so simulation starts from reset values; registers are "
                        "still reset synchronously by `rst`",
}

DEFAULT_ARGS = ["generate", "--rows", "4", "--cols", "4", "--wbits", "4", "--abits", "4"]


def _generate(tmp_path, capsys, name="rtl", extra=()):
    out = tmp_path / name
    assert main(DEFAULT_ARGS + list(extra) + ["--out", str(out), "--json"]) == 0
    return out, json.loads(capsys.readouterr().out)


def test_generate_json_and_manifest(tmp_path, capsys):
    out, result = _generate(tmp_path, capsys)
    for key in ("verilog", "rows", "cols", "wbits", "abits"):
        assert key in result
    assert (result["rows"], result["cols"], result["wbits"], result["abits"]) == (4, 4, 4, 4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["lut"]["count"] == 4 and manifest["lut"]["entries"] == 16
    assert {p["name"] for p in manifest["ports"]} >= {"clk", "rst", "start", "done", "busy", "cycles",
                                                      "host_wr__payload", "rd_resp__payload"}
    assert "module post_engine" in (out / "post_engine.v").read_text()


def test_generate_is_deterministic(tmp_path, capsys):
    a, _ = _generate(tmp_path, capsys, "a")
    b, _ = _generate(tmp_path, capsys, "b")
    assert (a / "post_engine.v").read_bytes() == (b / "post_engine.v").read_bytes()
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()


def test_generate_for_trained_model(tmp_path, capsys, trained_model_path, trained_model):
    out = tmp_path / "m"
    assert main(["generate", "--model", str(trained_model_path), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["wbits"] == max(st.wbits for st in trained_model.stages)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["file"] == trained_model_path.name


def test_verilator_lint_wall(tmp_path, capsys):
    out, _ = _generate(tmp_path, capsys)
    env = simulator_env()
    cmd = ["verilator", "--lint-only", "-Wall", *LINT_WAIVERS, "--top-module", "post_engine",
           str(out / "post_engine.v")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "%Warning" not in proc.stderr and "%Error" not in proc.stderr, proc.stderr[-4000:]


def test_yosys_synth_ice40(tmp_path, capsys):
    yosys = shutil.which("yosys")
    assert yosys, "yosys is not installed: run `make deps` (apt-get install yosys)"
    out, _ = _generate(tmp_path, capsys)
    stat = tmp_path / "stat.txt"
    script = f"read_verilog {out / 'post_engine.v'}; synth_ice40 -top post_engine; tee -q -o {stat} stat"
    proc = subprocess.run([yosys, "-q", "-p", script], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "ERROR" not in proc.stdout + proc.stderr
    report = stat.read_text()
    # synthesis kept the datapath: LUTs and carry cells, and no multiplier (DSP) inferred in the PEs
    assert "SB_LUT4" in report and "SB_CARRY" in report, report
    assert "SB_MAC16" not in report, report


@pytest.mark.parametrize("bad,message", [
    (["--wbits", "9"], "weight bits"),
    (["--wbits", "1"], "weight bits"),
    (["--abits", "0"], "activation bits"),
])
def test_generate_bad_widths(tmp_path, capsys, bad, message):
    args = ["generate", "--out", str(tmp_path / "x")] + bad
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_generate_bad_rows_exits_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "generate", "--rows", "0", "--out",
                           str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--rows" in proc.stderr and "Traceback" not in proc.stderr

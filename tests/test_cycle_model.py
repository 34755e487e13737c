"""The cycle model (sim/cycle_model.py) against the engine's measured cycles, and its other figures.

24 layer stacks on 24 engine configurations run on the RTL (Amaranth's simulator); the measured
``cycles`` output must equal the model's total exactly. The trained MLP on Verilator is checked in
tests/test_rtl_cocotb.py the same way.
"""

import json
import zlib

import numpy as np
import pytest

from flows.cli import main
from hw.program import LAYER_OVERHEAD, DescField, EngineParams, build_program, predicted_cycles
from sim.amaranth_sim import run_amaranth
from sim.cycle_model import (Shape, layer_perf, model_perf, program_shapes, shapes_for_model,
                             write_shapes_file)
from test_hw_engine import random_layers

SMALL = dict(max_fan_in=40, act_words=24, weight_words=400, chan_words=64, result_words=16, max_layers=4)

# (rows, cols, wbits, abits, layer sizes): 24 shapes x configurations
CONFIGS = [
    (1, 1, 4, 4, [3, 2]), (1, 2, 4, 4, [5, 3, 2]), (2, 1, 3, 3, [4, 5, 2]), (2, 2, 4, 4, [8, 8, 4]),
    (2, 3, 4, 4, [7, 5, 3]), (3, 2, 4, 4, [9, 4, 4, 2]), (3, 3, 5, 3, [6, 6, 6]), (4, 4, 4, 4, [16, 12, 10]),
    (4, 4, 8, 8, [10, 3]), (4, 2, 2, 2, [13, 9, 5]), (2, 4, 4, 4, [5, 11, 7]), (5, 3, 4, 4, [20, 7, 3]),
    (3, 5, 4, 4, [12, 14, 5]), (8, 2, 4, 4, [33, 6, 4]), (2, 8, 4, 4, [9, 17, 10]), (1, 4, 4, 4, [6, 9, 3]),
    (4, 1, 4, 4, [11, 4, 3]), (6, 6, 4, 4, [30, 13, 8]), (4, 4, 6, 5, [40, 16, 10]), (3, 1, 4, 4, [2, 2, 2]),
    (1, 3, 3, 4, [7, 7]), (5, 5, 4, 4, [25, 25, 10]), (7, 3, 4, 4, [15, 8, 6]), (2, 2, 8, 2, [6, 6, 6, 6]),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"{r}x{c}_w{w}a{a}_" + "-".join(map(str, s))
                                                for r, c, w, a, s in CONFIGS])
def test_cycle_model_equals_rtl(cfg):
    rows, cols, wbits, abits, sizes = cfg
    params = EngineParams(rows=rows, cols=cols, wbits=wbits, abits=abits, **SMALL)
    rng = np.random.default_rng(zlib.crc32(repr(cfg).encode()))
    program = build_program(params, random_layers(rng, params, sizes))
    run = run_amaranth(program, rng.integers(0, 2 ** abits, size=(1, sizes[0])))
    perf = model_perf(program_shapes(program), rows, cols)
    assert run["cycles"] == [perf["total_cycles"]]
    assert perf["rtl_checked_layers"] == len(sizes) - 1


@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"{r}x{c}_w{w}a{a}_" + "-".join(map(str, s))
                                                for r, c, w, a, s in CONFIGS])
def test_cycle_model_equals_schedule(cfg):
    """Without a simulator: the model's cycles equal hw.program's schedule (47 descriptor fields a layer)."""
    rows, cols, wbits, abits, sizes = cfg
    params = EngineParams(rows=rows, cols=cols, wbits=wbits, abits=abits, **SMALL)
    program = build_program(params, random_layers(np.random.default_rng(zlib.crc32(repr(cfg).encode())), params, sizes))
    perf = model_perf(program_shapes(program), rows, cols)
    assert perf["total_cycles"] == predicted_cycles(params, program)
    assert LAYER_OVERHEAD == 1 + len(DescField) + 1 == 49


def test_fc_layer_figures():
    p = layer_perf(Shape("fc", "linear", 64, 10), rows=4, cols=4)
    assert (p.n_it, p.n_ot, p.n_pix) == (16, 3, 1)
    assert p.array_steps == 48 and p.useful_macs == 640
    assert p.step_utilisation == pytest.approx(640 / (16 * 48))
    assert 0 < p.utilisation < p.step_utilisation <= 1
    assert p.chan_reads == 10 and p.outputs_written == 10 and p.rtl_checked


def test_conv_and_depthwise_schedule():
    conv = layer_perf(Shape("c", "conv", 16, 32, k=3, padding=1, in_hw=(8, 8), out_hw=(8, 8)), rows=4, cols=4)
    assert conv.n_it == 9 * 4 and conv.n_ot == 8 and conv.n_pix == 64
    assert conv.array_steps == 64 * 8 * 36 and conv.rtl_checked
    assert conv.step_utilisation == pytest.approx(1.0)          # channels fill the array exactly
    dw = layer_perf(Shape("d", "conv", 32, 32, k=3, padding=1, groups=32, in_hw=(8, 8), out_hw=(8, 8)),
                    rows=4, cols=4)
    assert dw.n_it == 9 and dw.n_ot == 8                         # each output tile reads its own channels
    assert dw.step_utilisation == pytest.approx(1 / 4)           # the diagonal of each 4x4 tile works
    assert dw.rtl_checked                                        # the engine's depthwise mode
    dw35 = layer_perf(Shape("d", "conv", 30, 30, k=3, padding=1, groups=30, in_hw=(8, 8), out_hw=(8, 8)),
                      rows=3, cols=5)                            # C not a multiple of R: block-diagonal dense
    assert dw35.n_it == 9 * 10 and dw35.n_ot == 6
    with pytest.raises(ValueError, match="groups"):
        layer_perf(Shape("x", "conv", 6, 4, groups=4), rows=2, cols=2)


def test_shapes_file_is_in_sync_with_the_zoo(tmp_path):
    fresh = write_shapes_file(str(tmp_path / "shapes.json"))
    from sim.cycle_model import SHAPES_FILE
    with open(SHAPES_FILE) as f:
        assert json.load(f) == json.loads(json.dumps(fresh)), "run sim.cycle_model.write_shapes_file()"
    shapes, unmodelled = shapes_for_model("resnet18")
    assert len(shapes) == 21 and unmodelled["residual_add"] == 8
    assert sum(s.macs for s in shapes) == 1_814_073_344       # ResNet-18's well-known 1.8 GMAC


def test_perf_cli(capsys, trained_model_path):
    assert main(["perf", "--model", "resnet18", "--rows", "16", "--cols", "16", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["rows"] == 16 and len(r["layers"]) == 21 and 0 < r["utilisation"] <= 1
    assert r["latency_us"] == pytest.approx(r["total_cycles"] / 100.0)
    assert main(["perf", "--model", str(trained_model_path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["rtl_checked_layers"] == len(r["layers"]) == 3
    assert main(["perf", "--model", "resnet99"]) == 2
    assert "resnet18" in capsys.readouterr().err
    assert main(["perf", "--model", "mlp", "--rows", "0"]) == 2

"""The command line on a DAG model (export v4): ``train --model resnet8`` -> ``export`` (a v4 integer
graph) -> ``simulate`` (every output of every engine layer, copies and residual-only layers
included, against the integer graph's run) -> ``perf --model FILE`` (exactly the compiled
program's cycles), and one-line errors for checkpoints without an integer form and corrupted v4
files.

The ResNet-8 is trained briefly through the CLI once per module (POST weights everywhere so that
every layer runs on the engine, ASQ activations: adapters, betas and consumer-specific copies).
"""

import json
import subprocess

import numpy as np
import pytest

from test_cli import assert_clean_error, cli

TRAIN = ("--model", "resnet8", "--epochs", "2", "--fp-epochs", "1", "--edge-weight-quant", "post",
         "--act-quant", "asq")


def _ok(proc) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _main(capsys, *args) -> subprocess.CompletedProcess:
    """``post-accel ARGS`` in this process (no interpreter start-up): the exit code and the output."""
    from flows.cli import main
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


@pytest.fixture(scope="module")
def resnet8(tmp_path_factory):
    """(train JSON, export JSON, checkpoint path, v4 model path) of a briefly trained digits ResNet-8."""
    d = tmp_path_factory.mktemp("resnet8")
    ckpt, model = d / "r8.ckpt.safetensors", d / "r8.model.safetensors"
    trained = _ok(cli("train", *TRAIN, "--out", ckpt, "--json"))
    exported = _ok(cli("export", ckpt, "--out", model, "--json"))
    return trained, exported, ckpt, model


@pytest.fixture(scope="module")
def graph(resnet8):
    from golden.graphfile import load_graph
    return load_graph(resnet8[3])


@pytest.fixture(scope="module")
def program(graph):
    from flows.compile import compile_graph
    return compile_graph(graph)


def test_train_help_mentions_resnet8():
    proc = cli("train", "--help")
    assert proc.returncode == 0 and "resnet8" in proc.stdout
    assert "resnet8" in cli("export", "--help").stdout


def test_train_and_export_resnet8_to_v4(resnet8, graph):
    trained, exported, ckpt, model = resnet8
    assert trained["checkpoint"] == str(ckpt) and trained["model"] == "resnet8"
    assert trained["act_quant"] == "asq" and trained["epochs"] == 2
    assert 0 <= trained["float_test_accuracy"] <= 1
    assert exported["model"] == str(model) and exported["format"] == "post-accel-intgraph"
    assert exported["version"] == 4 and exported["output"] == "fc"
    assert exported["layers"] == [st.name for st in graph.stages] and len(exported["layers"]) == 10
    assert exported["test_samples"] == 360
    assert exported["float_test_accuracy"] == trained["float_test_accuracy"]
    assert abs(exported["integer_test_accuracy"] - exported["float_test_accuracy"]) <= 0.05
    # the file is a v4 DAG and its integer accuracy is run_graph's
    from golden.data import load_digits_split
    from golden.graphfile import DAG_VERSION
    from golden.intdag import run_graph
    from golden.modelfile import METADATA_KEY
    from safetensors import safe_open
    with safe_open(str(model), "np") as f:
        assert json.loads(f.metadata()[METADATA_KEY])["version"] == DAG_VERSION
    assert graph.kind == "dag" and graph.output == "fc"
    _, _, x_test, y_test = load_digits_split()
    assert exported["integer_test_accuracy"] == float((run_graph(graph, x_test).predictions == y_test).mean())


def test_export_error_is_one_line(tmp_path, capsys):
    """A zoo checkpoint that loads but has no integer form (quantizers that never saw data)."""
    from golden.train_zoo import TrainSpec, build_spec_model, save_checkpoint
    spec = TrainSpec(model="resnet8", weight_quant="post", act_quant="asq", edge_weight_quant="post", epochs=1,
                     fp_epochs=0)
    ckpt = tmp_path / "untrained.safetensors"
    save_checkpoint(build_spec_model(spec), spec, {"float_test_accuracy": 0.1}, ckpt)
    assert_clean_error(_main(capsys, "export", ckpt, "--out", tmp_path / "m.safetensors"), "untrained.safetensors",
                       "cannot export 'resnet8'", "never saw data")
    assert not (tmp_path / "m.safetensors").exists()


def test_copy_plan_is_the_programs_layer_order(graph, program):
    """golden.dagplan.copy_plan (what the compiler and the cycle model both use) gives the program's
    layers in order: copies for readers with other quantizers, residual-only shortcuts."""
    from golden.dagplan import copy_plan
    from sim.cycle_model import dag_engine_plan
    plan = copy_plan(graph)
    assert dag_engine_plan(graph) == plan
    assert [l.name for l in program.layers] == [e for _, _, e, _ in plan]
    assert [src for *_, src in plan] == [l.input_from for l in program.layers]
    names = [e for _, _, e, _ in plan]
    assert len(names) > len(graph.stages) and any("~" in n for n in names)
    assert any(c is None and e != graph.output for _, c, e, _ in plan)        # the 1x1 shortcuts


def test_simulate_expectations_are_the_integer_graph(graph, program):
    """What `simulate` compares each engine layer with (run_graph's codes of the consumer stage,
    zeros for a residual-only layer, the logits) is what the program's own reference computes, and
    the beta each engine layer's ASQ quantizer chooses is run_graph's beta of that consumer."""
    from flows.simulate_cmd import _expectations
    from golden.dagplan import copy_plan
    from golden.data import load_digits_split
    from golden.intdag import run_graph
    _, _, x_test, _ = load_digits_split()
    n = 3
    golden = run_graph(graph, x_test[:n])
    x_codes, betas, expected, names = _expectations(graph, program, golden, n)
    assert names == [l.name for l in program.layers] and len(expected) == len(names)
    assert np.array_equal(expected[-1], golden.logits)
    consumer = {e: c for _, c, e, _ in copy_plan(graph)}
    index = {st.name: i for i, st in enumerate(graph.stages)}
    for s in range(n):
        outs, ref_betas = program.reference_run(x_codes[s], None if betas is None else int(betas[s]))
        for l, name in enumerate(names):
            np.testing.assert_array_equal(outs[l], expected[l][s], err_msg=name)
            c = consumer[name]
            if c is not None and c.in_quant.kind == "asq":
                assert ref_betas[l] == int(golden.betas[index[c.name]][s]), name


def test_simulate_resnet8_verilator(trained_resnet8_path, trained_resnet8):
    """A v4 file through `simulate` on Verilator (the conftest model, whose build
    tests/test_rtl_resnet.py shares): every value of every engine layer and the predictions equal
    the integer graph's; the cycles are the program's (and `perf`'s)."""
    from flows.compile import compile_graph
    from hw.program import predicted_cycles
    program = compile_graph(trained_resnet8)
    r = _ok(cli("simulate", trained_resnet8_path, "--backend", "verilator", "--samples", "4", "--jobs", "1",
                "--json"))
    assert r["model_format"] == "post-accel-intgraph v4" and r["samples"] == 4
    assert r["mismatches"] == 0 and r["prediction_mismatches"] == 0
    assert r["rtl_accuracy"] == r["golden_accuracy"]
    assert r["layers"] == [l.name for l in program.layers] and r["engine_layers"] == len(program.layers)
    assert r["stages"] == [st.name for st in trained_resnet8.stages]
    assert set(r["per_layer_mismatches"]) == set(r["layers"])
    per_sample = predicted_cycles(program.params, program)
    assert r["cycles"] == 4 * per_sample                            # the run's total
    assert per_sample == _ok(cli("perf", "--model", trained_resnet8_path, "--json"))["total_cycles"]


def test_perf_of_a_v4_file_is_the_program(resnet8, program, capsys):
    from hw.program import predicted_cycles
    from sim.cycle_model import model_perf, program_shapes, shapes_from_file
    shapes, unmodelled = shapes_from_file(resnet8[3])
    assert unmodelled == {}
    assert shapes == program_shapes(program)
    want = predicted_cycles(program.params, program)
    assert model_perf(shapes, 4, 4)["total_cycles"] == want
    r = _ok(_main(capsys, "perf", "--model", resnet8[3], "--json"))
    assert r["total_cycles"] == want and [l["name"] for l in r["layers"]] == [l.name for l in program.layers]


def test_simulate_text_report_names_stages_and_engine_layers(graph, program):
    from flows.simulate_cmd import _model_summary
    line = _model_summary(graph, [l.name for l in program.layers])
    assert f"{len(graph.stages)} stages -> {len(program.layers)} engine layers" in line and "~1" in line


def _rewrite_header(path, out, edit):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from golden.modelfile import METADATA_KEY
    with safe_open(str(path), "np") as f:
        h = json.loads(f.metadata()[METADATA_KEY])
    edit(h)
    save_file(load_file(str(path)), str(out), metadata={METADATA_KEY: json.dumps(h)})


@pytest.mark.parametrize("how,needle", [
    ("truncate", "bad.safetensors"),
    (lambda h: h["stages"][2].update(residual=["nowhere", 1, 1]), "residual"),
    (lambda h: h.update(output="nowhere"), "output"),
    (lambda h: h["stages"][1].update(input_from="fc"), "input_from"),
])
def test_corrupted_v4_file_is_one_line(resnet8, tmp_path, capsys, how, needle):
    """A damaged v4 file: `simulate`, `perf` and `generate` name the file and the problem in one line
    (the graph loader's message, not the old-format refusal)."""
    bad = tmp_path / "bad.safetensors"
    if how == "truncate":
        data = resnet8[3].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        assert_clean_error(cli("simulate", bad, "--backend", "amaranth", "--samples", "1"), "bad.safetensors")
    else:
        _rewrite_header(resnet8[3], bad, how)
    for args in (("simulate", bad, "--backend", "amaranth", "--samples", "1"), ("perf", "--model", bad),
                 ("generate", "--model", bad, "--out", tmp_path / "rtl")):
        proc = _main(capsys, *args)
        assert_clean_error(proc, needle, "bad.safetensors")
        assert "no longer reads" not in proc.stderr
    assert not (tmp_path / "rtl").exists()

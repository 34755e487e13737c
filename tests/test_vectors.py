"""`post-accel vectors` and sim.vectors: golden vectors that check RTL other than post-accel's engine.

The vectors written in each format load back equal to the golden executor's run; a hand-written Verilog
POST neuron (docs/examples/vectors/) driven by cocotb on Icarus reports 0 mismatches against them, and
an expected value edited in the written files is caught and named (layer, sample, index, expected, got).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flows.cli import main
from golden.data import load_digits_split
from golden.graphfile import load_graph, save_graph
from golden.intdag import run_graph
from sim.vectors import Mismatch, VectorChecker, VectorError, compare, load_vectors

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "docs" / "examples" / "vectors"
SAMPLES = 5


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


@pytest.fixture(scope="module")
def resnet8_dag_path(tmp_path_factory, digits):
    """A ResNet-8 (residual adds, a shortcut conv, sum pooling), calibrated but untrained, as a v3 DAG file."""
    import torch

    from golden import zoo
    from golden.intdag import export_dag
    torch.manual_seed(0)
    m = zoo.build_model("resnet8", 4, 4, "post", "asq", edge_weight_quant="post", edge_act_quant="asq")
    m.train()
    with torch.no_grad():
        m(torch.tensor(digits[0][:256], dtype=torch.float32))
    path = tmp_path_factory.mktemp("dag") / "resnet8.safetensors"
    save_graph(export_dag(m.eval()), path)
    return path


def _write(model, out, fmt, samples=SAMPLES):
    assert main(["vectors", str(model), "--samples", str(samples), "--out", str(out), "--format", fmt,
                 "--quiet"]) == 0
    return load_vectors(out)


@pytest.mark.parametrize("fmt", ["npy", "hex", "json"])
@pytest.mark.parametrize("which", ["cnn", "resnet8"])
def test_round_trip_equals_run_graph(which, fmt, tmp_path, digits, trained_cnn_path, request):
    model = trained_cnn_path if which == "cnn" else request.getfixturevalue("resnet8_dag_path")
    vec = _write(model, tmp_path / "v", fmt)
    graph = load_graph(model)
    run = run_graph(graph, digits[2][:SAMPLES])
    man = vec.manifest
    assert man["format"] == "post-accel-vectors" and man["vector_format"] == fmt and man["samples"] == SAMPLES
    import hashlib
    assert man["model"]["sha256"] == hashlib.sha256(Path(model).read_bytes()).hexdigest()
    assert vec.layers == [st.name for st in graph.stages]
    np.testing.assert_array_equal(vec.array("network", "logits"), run.logits)
    np.testing.assert_array_equal(vec.array("network", "predictions"), run.predictions)
    np.testing.assert_array_equal(vec.array("network", "labels"), digits[3][:SAMPLES])
    first = next(i for i, st in enumerate(graph.stages) if st.input_from in (None, "input"))
    np.testing.assert_array_equal(vec.array("network", "input_codes"), run.codes[first])
    for i, st in enumerate(graph.stages):
        rec = vec.layer(st.name)
        assert rec["wbits"] == st.wbits and rec["abits"] == graph.stages[i].in_quant.bits
        assert rec["acc_shape"] == list(run.accs[i].shape[1:]) and rec["value_shape"] == list(run.values[i].shape[1:])
        np.testing.assert_array_equal(vec.array(st.name, "in_codes"), run.codes[i])
        np.testing.assert_array_equal(vec.array(st.name, "acc"), run.accs[i])
        np.testing.assert_array_equal(vec.array(st.name, "value"), run.values[i])
        if run.betas[i] is None:
            assert "in_beta" not in vec.names(st.name)
        else:
            np.testing.assert_array_equal(vec.array(st.name, "in_beta"), run.betas[i])
        for name in ("weights", "mult", "shift", "bias"):
            np.testing.assert_array_equal(vec.array(st.name, name), getattr(st, name))
        assert rec["acc_shift"] == st.acc_shift
        if st.residual is not None:
            assert rec["residual"] == {"from": st.residual[0], "mult": st.residual[1], "shift": st.residual[2]}
    # the stage values are what the golden model quantizes: the output stage's value is the logits
    out = graph.output if graph.kind == "dag" else graph.stages[-1].name
    np.testing.assert_array_equal(vec.array(out, "value").reshape(SAMPLES, -1), run.logits)
    if fmt == "hex":                              # $readmemh text: fixed-width two's complement lines
        e = vec.info(vec.layers[0], "acc")
        lines = (tmp_path / "v" / e["file"]).read_text().splitlines()
        assert len(lines) == run.accs[0].size and {len(l) for l in lines} == {(e["width"] + 3) // 4}
    for e in man["arrays"]:
        assert set(e) >= {"layer", "name", "file", "shape", "dtype", "meaning"} and e["meaning"]
    assert not [p for p in (tmp_path / "v").iterdir() if p.name.startswith(".")]      # no temp files left


def test_helper_imports_without_torch():
    code = "import sys; import sim.vectors; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def _corrupt(out: Path, vec, layer, array, flat_index, delta=1):
    """Edit one expected value in the written file (whatever the format), return the edited value."""
    e = vec.info(layer, array)
    f = out / e["file"]
    if f.suffix == ".npy":
        a = np.load(f)
        a.reshape(-1)[flat_index] += delta
        np.save(f, a)
        return int(a.reshape(-1)[flat_index])
    if f.suffix == ".hex":
        lines = f.read_text().splitlines()
        raw, w = int(lines[flat_index], 16), e["width"]
        v = (raw - (1 << w) if e["signed"] and raw >> (w - 1) else raw) + delta      # the value, edited
        lines[flat_index] = f"{v & ((1 << w) - 1):0{len(lines[flat_index])}x}"
        f.write_text("\n".join(lines) + "\n")
        return v
    doc = json.loads(f.read_text())
    a = np.asarray(doc["arrays"][e["key"]]["data"])
    a.reshape(-1)[flat_index] += delta
    doc["arrays"][e["key"]]["data"] = a.tolist()
    f.write_text(json.dumps(doc))
    return int(a.reshape(-1)[flat_index])


@pytest.mark.parametrize("fmt", ["npy", "hex", "json"])
def test_corrupted_vector_is_caught(fmt, tmp_path, digits, trained_cnn_path):
    out = tmp_path / "v"
    vec = _write(trained_cnn_path, out, fmt)
    run = run_graph(load_graph(trained_cnn_path), digits[2][:SAMPLES])
    layer = vec.layers[1]
    good = VectorChecker(vec)
    for i, name in enumerate(vec.layers):
        good.compare(name, run.values[i])
        good.compare(name, run.accs[i], array="acc")
    assert good.ok and good.checked == sum(v.size + a.size for v, a in zip(run.values, run.accs)), good.summary()
    shape = run.values[1].shape
    flat = 3 * int(np.prod(shape[1:])) + 17                  # sample 3, element 17 of layer1's value
    edited = _corrupt(out, vec, layer, "value", flat)
    bad = VectorChecker(load_vectors(out))
    for i, name in enumerate(vec.layers):
        bad.compare(name, run.values[i])
    index = tuple(int(i) for i in np.unravel_index(17, shape[1:]))
    want = Mismatch(layer, "value", 3, index, edited, int(run.values[1].reshape(-1)[flat]))
    assert bad.mismatches == 1 and bad.first == want
    assert str(want) in bad.summary() and f"expected {edited}" in bad.summary()
    with pytest.raises(AssertionError, match=f"{layer}/value sample 3"):
        bad.assert_ok()
    assert compare(out, layer, run.values[1][3], sample=3) == want


def test_checker_errors(tmp_path, trained_cnn_path):
    vec = _write(trained_cnn_path, tmp_path / "v", "npy", samples=2)
    check = VectorChecker(vec)
    with pytest.raises(VectorError, match="no array 'nope' for layer 'fc'; it has in_codes"):
        check.compare("fc", [0], array="nope")
    with pytest.raises(VectorError, match=r"fc/value: got shape \[3\], expected \[2, 10\]"):
        check.compare("fc", [0, 0, 0])
    with pytest.raises(VectorError, match="is a parameter"):
        check.compare("fc", np.zeros(10), array="mult", sample=0)
    assert check.compare("fc", vec.array("fc", "mult"), array="mult") == 0
    with pytest.raises(VectorError, match="no manifest"):
        load_vectors(tmp_path)


@pytest.mark.parametrize("argv,message", [
    (["--samples", "0"], "--samples must be in 1..360"),
    (["--samples", "361"], "--samples must be in 1..360"),
    (["--out", "FILE"], "is a file, not a directory"),
    (["--out", "/dev/null"], "is a special file, not a directory"),
    (["--out", "FILE/sub"], "cannot create the directory"),
])
def test_bad_flags_are_one_line_errors(argv, message, tmp_path, capsys, trained_cnn_path):
    (tmp_path / "FILE").write_text("keep me")
    argv = [a.replace("FILE", str(tmp_path / "FILE")) for a in argv]
    full = ["vectors", str(trained_cnn_path), "--samples", "2", "--out", str(tmp_path / "v")] + argv
    assert main(full) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert (tmp_path / "FILE").read_text() == "keep me"


def test_not_a_graph_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "m.safetensors").write_bytes(b"nonsense")
    assert main(["vectors", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "m.safetensors" in err and err.count("\n") == 1


# --- the hand-written Verilog neuron, driven by cocotb on Icarus ---------------------------------------

@pytest.fixture(scope="module")
def neuron_vectors(tmp_path_factory, trained_cnn_path):
    out = tmp_path_factory.mktemp("neuron") / "vectors"
    vec = _write(trained_cnn_path, out, "hex", samples=2)
    return out, vec


@pytest.fixture(scope="module")
def neuron_build(tmp_path_factory, neuron_vectors):
    from cocotb_tools.runner import get_runner

    _, vec = neuron_vectors
    rec = vec.layer(vec.layers[-1])
    lut = vec.info(rec["name"], "lut")
    build_dir = tmp_path_factory.mktemp("neuron_build")
    runner = get_runner("icarus")
    runner.build(sources=[EXAMPLE / "post_neuron.v"], hdl_toplevel="post_neuron", build_dir=build_dir,
                 always=True, timescale=("1ns", "1ps"),
                 parameters={"ABITS": rec["abits"], "WBITS": rec["wbits"], "FRAC": rec["frac_bits"],
                             "LUTW": lut["width"]},
                 log_file=build_dir / "build.log")
    return runner, build_dir


def _run_neuron(neuron_build, out: Path, vec, test_dir: Path, monkeypatch) -> tuple[dict, tuple]:
    from cocotb_tools.runner import get_results

    monkeypatch.syspath_prepend(str(EXAMPLE))          # the runner hands sys.path to the simulator's Python

    runner, build_dir = neuron_build
    layer = vec.layers[-1]
    test_dir.mkdir()
    report = test_dir / "report.json"
    try:
        runner.test(test_module="post_neuron_tb", hdl_toplevel="post_neuron", hdl_toplevel_lang="verilog",
                    build_dir=build_dir, test_dir=test_dir, results_xml=str(test_dir / "results.xml"),
                    plusargs=[f"+LUT={out / vec.info(layer, 'lut')['file']}"],
                    extra_env={"VECTORS": str(out), "VECTORS_LAYER": layer, "VECTORS_REPORT": str(report)},
                    log_file=test_dir / "sim.log")
    except SystemExit as exc:                          # the runner exits 1 when a cocotb test failed
        assert exc.code == 1, (test_dir / "sim.log").read_text()[-3000:]
    return json.loads(report.read_text()), get_results(test_dir / "results.xml")


def test_hand_written_neuron_matches_vectors(neuron_build, neuron_vectors, tmp_path, monkeypatch):
    out, vec = neuron_vectors
    report, (tests, failed) = _run_neuron(neuron_build, out, vec, tmp_path / "run", monkeypatch)
    layer = vec.layers[-1]
    n_out = vec.array(layer, "weights").shape[0]
    assert (tests, failed) == (1, 0)
    assert report == {"checked": 2 * 2 * n_out, "mismatches": 0, "first": None}


def test_hand_written_neuron_catches_a_corrupted_vector(neuron_build, neuron_vectors, tmp_path, monkeypatch):
    import shutil
    src, vec = neuron_vectors
    out = tmp_path / "vectors"
    shutil.copytree(src, out)
    layer = vec.layers[-1]
    n_out = vec.array(layer, "value").shape[1]
    edited = _corrupt(out, vec, layer, "value", 1 * n_out + 4, delta=-3)      # sample 1, output 4
    report, (tests, failed) = _run_neuron(neuron_build, out, load_vectors(out), tmp_path / "run", monkeypatch)
    assert (tests, failed) == (1, 1)
    assert report["mismatches"] == 1
    got = int(vec.array(layer, "value")[1, 4])                                 # the DUT computes the true value
    assert report["first"] == {"layer": layer, "array": "value", "sample": 1, "index": [4], "expected": edited,
                               "got": got}
    assert edited == got - 3


def test_acc_and_value_follow_the_arithmetic(tmp_path, digits, trained_cnn_path):
    """The vectors' sums of products and values, recomputed product by product from golden.arith
    (independently of the executor's vectorised paths): the first conv and the last linear layer."""
    from golden import arith
    vec = _write(trained_cnn_path, tmp_path / "v", "npy", samples=2)
    first, last = vec.layer(vec.layers[0]), vec.layer(vec.layers[-1])
    # first layer: a k x k convolution with zero padding, one sample, every output position
    x, w = vec.array(first["name"], "in_codes")[1], vec.array(first["name"], "weights")
    o_ch, _, k, _ = w.shape
    p, s = first["padding"], first["stride"]
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    acc = vec.array(first["name"], "acc")[1]
    for o in range(o_ch):
        for i in range(acc.shape[1]):
            for j in range(acc.shape[2]):
                patch = xp[:, i * s:i * s + k, j * s:j * s + k]
                want = arith.post_product(patch, w[o], first["wbits"], first["abits"], first["frac_bits"]).sum()
                assert acc[o, i, j] == want, (o, i, j)
    assert not first["input_beta"] and not first["post_ops"]
    mult, shift, bias = (vec.array(first["name"], k) for k in ("mult", "shift", "bias"))
    v = arith.stage_value(acc[None], mult, shift, bias, first["acc_shift"])
    v = arith.finish_value(v, None, first["relu_floor"] if first["relu"] else None)[0]
    np.testing.assert_array_equal(vec.array(first["name"], "value")[1], v)
    # last layer: products, sums, then the per-channel rescale (no ASQ input, no ReLU, no pooling)
    assert not last["input_beta"] and not last["relu"] and not last["post_ops"]
    n = last["name"]
    prods = arith.post_product(vec.array(n, "in_codes")[:, None, :], vec.array(n, "weights")[None, :, :],
                               last["wbits"], last["abits"], last["frac_bits"])
    np.testing.assert_array_equal(vec.array(n, "acc"), prods.sum(axis=-1))
    v = arith.stage_value(vec.array(n, "acc"), vec.array(n, "mult"), vec.array(n, "shift"), vec.array(n, "bias"),
                          last["acc_shift"])
    np.testing.assert_array_equal(vec.array(n, "value"), arith.finish_value(v))
    lut = vec.array(n, "lut")
    assert [int(v) for v in lut] == [arith.sqrt2_lut_entry(x, last["frac_bits"]) for x in range(2 ** last["abits"])]

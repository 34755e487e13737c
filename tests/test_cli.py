"""The command line end to end (train/export on tiny budgets, simulate) and its handling of bad input.

Each bad input must give one line on stderr naming the problem and the fix, a non-zero exit code
and no traceback.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=env)


def assert_clean_error(proc, *words, code=2):
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_help_for_every_command():
    for cmd in ("train", "export", "generate", "simulate"):
        proc = cli(cmd, "--help")
        assert proc.returncode == 0 and "--json" in proc.stdout


def test_train_export_json(tmp_path):
    ckpt, model = tmp_path / "c.safetensors", tmp_path / "m.safetensors"
    proc = cli("train", "--epochs", "1", "--out", ckpt, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["checkpoint"] == str(ckpt) and 0 <= result["float_test_accuracy"] <= 1
    assert "hidden" not in result and result["model"] == "mlp" and result["weight_quant"] == "post"
    proc = cli("export", ckpt, "--out", model, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["test_samples"] == 360
    assert (result["format"], result["version"]) == ("post-accel-intgraph", 4)
    assert result["layers"] == ["layers.0", "layers.1", "layers.2"] and result["output"] == "layers.2"
    assert abs(result["integer_test_accuracy"] - result["float_test_accuracy"]) < 0.05
    # the default MLP (POST weights everywhere) runs on the engine: a bit-exact sample
    proc = cli("simulate", model, "--backend", "amaranth", "--samples", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["model_format"] == "post-accel-intgraph v4" and result["mismatches"] == 0


@pytest.mark.parametrize("backend", ["amaranth", "icarus"])
def test_simulate_json(backend, trained_model_path):
    proc = cli("simulate", trained_model_path, "--backend", backend, "--samples", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("samples", "mismatches", "rtl_accuracy", "golden_accuracy", "cycles", "seconds"):
        assert key in result
    assert result["samples"] == 3 and result["mismatches"] == 0
    assert result["model_format"] == "post-accel-intgraph v4"
    assert result["layers"] == result["stages"] == ["layers.0", "layers.1", "layers.2"]
    assert result["rtl_accuracy"] == result["golden_accuracy"]
    assert result["cycles"] > 0


@pytest.mark.parametrize("backend,suffix", [("icarus", ".vcd"), ("icarus", ".fst"), ("amaranth", ".vcd"),
                                           ("verilator", ".vcd")])
def test_simulate_waves(backend, suffix, trained_model_path, tmp_path):
    """--waves dumps every signal of one sample; the run itself is still compared in full."""
    waves = tmp_path / f"one{suffix}"
    proc = cli("simulate", trained_model_path, "--backend", backend, "--samples", "2", "--waves", waves, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["mismatches"] == 0 and result["waves"] == str(waves)
    data = waves.read_bytes()
    assert len(data) > 10_000
    if suffix == ".vcd":
        text = data.decode(errors="replace")
        assert "$enddefinitions" in text and "busy" in text and "cycles" in text
    else:
        assert not data.startswith(b"$")                # FST is binary, not VCD text
    assert_clean_error(cli("simulate", trained_model_path, "--backend", backend, "--samples", "1", "--waves",
                           tmp_path / "x.txt"), "--waves", ".vcd")


def test_simulate_parallel_jobs_agree(trained_model_path):
    """The samples split over two simulator processes give the same answer as one process."""
    one = json.loads(cli("simulate", trained_model_path, "--backend", "icarus", "--samples", "4", "--jobs", "1",
                         "--json").stdout)
    two = json.loads(cli("simulate", trained_model_path, "--backend", "icarus", "--samples", "4", "--jobs", "2",
                         "--json").stdout)
    assert one["launches"] == 1 and two["launches"] == 2
    for r in (one, two):
        assert r["mismatches"] == 0 and r["samples"] == 4
    assert one["cycles"] == two["cycles"] and one["rtl_accuracy"] == two["rtl_accuracy"]


def test_simulate_trained_cnn_json(trained_cnn_path):
    """The CNN's integer graph (ASQ, pooling) through the CLI (Verilator: the simulator build is
    the one tests/test_rtl_cnn.py uses), a slice over two processes, bit exact."""
    proc = cli("simulate", trained_cnn_path, "--backend", "verilator", "--samples", "6", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["model_format"] == "post-accel-intgraph v4"
    assert result["layers"] == ["features.0", "features.3", "features.7", "fc"]
    assert result["mismatches"] == 0 and result["prediction_mismatches"] == 0
    assert result["cycles"] == 6 * result["cycles_per_sample"] > 6 * 40_000     # the 4x4 W8A8 engine


def test_train_bad_bits():
    assert_clean_error(cli("train", "--wbits", "1", "--epochs", "1", "--out", "/tmp/x"), "weight bits")
    assert_clean_error(cli("train", "--abits", "9", "--epochs", "1", "--out", "/tmp/x"), "activation bits")


def test_missing_model_file(tmp_path):
    assert_clean_error(cli("simulate", tmp_path / "nope.safetensors", "--backend", "icarus"), "nope.safetensors")
    assert_clean_error(cli("export", tmp_path / "nope.safetensors"), "nope.safetensors")


def test_truncated_model_file(tmp_path, trained_model_path):
    bad = tmp_path / "truncated.safetensors"
    data = trained_model_path.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    assert_clean_error(cli("simulate", bad, "--backend", "icarus"), "truncated.safetensors")
    assert_clean_error(cli("generate", "--model", bad, "--out", tmp_path / "o"), "truncated.safetensors")


def test_foreign_model_file(tmp_path, trained_checkpoint_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(256))
    assert_clean_error(cli("simulate", junk, "--backend", "icarus"), "junk.safetensors")
    # a real safetensors file that is not an exported integer model (the float checkpoint)
    assert_clean_error(cli("simulate", trained_checkpoint_path, "--backend", "icarus"),
                       trained_checkpoint_path.name)


def test_pickle_is_never_loaded(tmp_path):
    import pickle
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"x": 1}))
    assert_clean_error(cli("simulate", evil, "--backend", "icarus"), "evil.safetensors")


def test_missing_simulator(trained_model_path, tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))          # no iverilog anywhere on PATH
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "simulate", str(trained_model_path),
                           "--backend", "icarus", "--samples", "1"], capture_output=True, text=True,
                          cwd=REPO, env=env)
    assert_clean_error(proc, "Icarus", "apt-get install iverilog")


def test_simulate_bad_sample_count(trained_model_path):
    assert_clean_error(cli("simulate", trained_model_path, "--samples", "100000", "--backend", "icarus"),
                       "--samples")


def test_model_too_big_for_engine(trained_model_path):
    proc = cli("simulate", trained_model_path, "--backend", "icarus", "--max-fan-in", "8", "--samples", "1")
    assert_clean_error(proc, "fan")


def test_train_export_cnn_with_any_quantizers(tmp_path):
    """`train --model cnn --weight-quant/--act-quant` -> zoo checkpoint -> `export` writes an integer graph
    (the one format, a chain of stages) that `perf` reads, and that `simulate` refuses with a clear message (POT weights are not POST)."""
    ckpt, model = tmp_path / "c.safetensors", tmp_path / "m.safetensors"

    def _cli(*args):
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    r = _cli("train", "--model", "cnn", "--weight-quant", "pot", "--act-quant", "asq", "--epochs", "1",
             "--fp-epochs", "1", "--out", str(ckpt), "--json")
    assert r["model"] == "cnn" and r["weight_quant"] == "pot" and r["act_quant"] == "asq"
    r = _cli("export", str(ckpt), "--out", str(model), "--json")
    assert r["format"] == "post-accel-intgraph" and len(r["layers"]) == 4
    assert r["version"] == 4 and r["output"] == r["layers"][-1]      # a chain is a DAG: the one format
    assert abs(r["integer_test_accuracy"] - r["float_test_accuracy"]) <= 0.05
    r = _cli("perf", "--model", str(model), "--json")
    assert [l["kind"] for l in r["layers"]] == ["conv", "conv", "conv", "linear"]
    assert_clean_error(cli("simulate", model, "--samples", "2"), "do not run on the POST engine", "--edge-weight-quant post")


def test_old_model_files_name_the_reexport_command(tmp_path):
    """v1 MLP files and v2 chain graphs: every command that reads a model refuses them in one line that
    names `post-accel export CHECKPOINT` (dispatch on the format tag)."""
    import numpy as np
    from safetensors.numpy import save_file
    for fmt, version, what in (("post-accel-intmodel", 1, "version-1 MLP file"),
                               ("post-accel-intgraph", 2, "version-2 chain graph")):
        old = tmp_path / f"old{version}.safetensors"
        save_file({"fc1.codes": np.zeros((2, 2), np.uint8)}, str(old),
                  metadata={"post_accel": json.dumps({"format": fmt, "version": version})})
        for args in (("simulate", old, "--backend", "icarus"), ("perf", "--model", old),
                     ("generate", "--model", old, "--out", tmp_path / "o")):
            assert_clean_error(cli(*args), old.name, what, "`post-accel export CHECKPOINT`")


def test_train_rejects_non_digits_models():
    assert_clean_error(cli("train", "--model", "resnet18"), "mlp, cnn")

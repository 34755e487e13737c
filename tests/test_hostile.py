"""Hostile but fair input (issue 14): every case is one line on stderr naming the file/field/flag, exit
status 2, no traceback, and no file left behind; outputs are checked before any long work and written
atomically; a simulation that disagrees with golden exits 1.

Special files are FIFOs made with ``os.mkfifo`` in ``tmp_path`` (never a real device). Tests run as root,
so a read-only directory is simulated by a path *under a regular file* (root cannot create that either).
Crafted checkpoints and model files are built here from the session's trained CNN (``conftest``).
"""

import json
import os
import subprocess
import threading

import numpy as np
import pytest
import torch

from conftest import _trained_cnn_paths
from golden.safeio import (LOCK_NAME, OutputPathError, atomic_output, check_output_dir, check_output_path,
                           locked_dir, write_text_atomic)


def _main(capsys, *args) -> subprocess.CompletedProcess:
    """``post-accel ARGS`` in this process: exit code and output."""
    from flows.cli import main
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def _one_line(proc, *words, code=2) -> str:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _listing(d) -> list:
    return sorted(p.name for p in d.iterdir())


@pytest.fixture(scope="module")
def cnn_ckpt():
    return _trained_cnn_paths()[0]


@pytest.fixture(scope="module")
def cnn_model():
    return _trained_cnn_paths()[1]


@pytest.fixture(scope="module")
def v3_file(tmp_path_factory, cnn_ckpt):
    """The trained CNN exported as a v3 DAG graph (export_dag works on chains too)."""
    from golden.graphfile import save_graph
    from golden.intdag import export_dag
    from golden.train_zoo import load_checkpoint
    model, spec, _ = load_checkpoint(cnn_ckpt)
    path = tmp_path_factory.mktemp("v3") / "cnn_v3.safetensors"
    save_graph(export_dag(model), path, provenance={"spec": spec.to_dict()})
    return path


# --- the safe-write helper itself ---------------------------------------------------------------------

def test_check_output_path_refuses_special_and_impossible_targets(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    plain = tmp_path / "plain"
    plain.write_text("keep me")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "to_fifo").symlink_to(fifo)
    cases = {"": "empty", str(fifo): "FIFO", str(tmp_path / "to_fifo"): "FIFO", str(tmp_path): "directory",
             str(plain / "x.safetensors"): "not a directory", str(tmp_path / "dangling"): "dangling",
             str(tmp_path) + "/": "directory"}
    for path, word in cases.items():
        with pytest.raises(OutputPathError, match=word) as err:
            check_output_path(path, "--out")
        assert "--out" in str(err.value) and "\n" not in str(err.value)
    assert check_output_path(plain, "--out") == plain                     # an existing regular file is fine
    assert check_output_path(tmp_path / "new" / "deeper" / "f", "--out")  # parents are created on write
    with pytest.raises(OutputPathError, match="not a directory"):
        check_output_dir(plain, "--out")
    with pytest.raises(OutputPathError, match="FIFO"):
        check_output_dir(fifo, "--out")
    assert plain.read_text() == "keep me" and stat_is_fifo(fifo)


def stat_is_fifo(path) -> bool:
    import stat
    return stat.S_ISFIFO(os.lstat(path).st_mode)


def test_atomic_output_leaves_nothing_on_failure_and_replaces_on_success(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target, "--out") as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old" and _listing(tmp_path) == ["f.json"]
    write_text_atomic(target, "new", "--out")
    assert target.read_text() == "new" and _listing(tmp_path) == ["f.json"]
    write_text_atomic(tmp_path / "a" / "b.txt", "x", "--out")
    assert (tmp_path / "a" / "b.txt").read_text() == "x"


def test_locked_dir_serialises_writers(tmp_path):
    """Two writers into one directory: the second waits until the first has written both of its files."""
    out, order = tmp_path / "rtl", []
    first_in = threading.Event()

    def writer(tag, hold):
        with locked_dir(out, "--out"):
            order.append(f"{tag}+")
            first_in.set()
            hold.wait(5)
            for name in ("post_engine.v", "manifest.json"):
                write_text_atomic(out / name, tag, "--out")
            order.append(f"{tag}-")

    go = threading.Event()
    a = threading.Thread(target=writer, args=("a", go))
    a.start()
    first_in.wait(5)
    released = threading.Event()
    released.set()
    b = threading.Thread(target=writer, args=("b", released))
    b.start()
    b.join(0.3)
    assert b.is_alive()                     # blocked on the lock while `a` holds it
    go.set()
    a.join(5)
    b.join(5)
    assert order == ["a+", "a-", "b+", "b-"]
    assert {(out / n).read_text() for n in ("post_engine.v", "manifest.json")} == {"b"}
    assert _listing(out) == sorted([LOCK_NAME, "manifest.json", "post_engine.v"])


# --- output paths on the command line -----------------------------------------------------------------

def test_export_refuses_bad_out_paths_and_leaves_them_alone(tmp_path, capsys, cnn_ckpt):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    plain = tmp_path / "plain"
    plain.write_text("x")
    for out, word in ((fifo, "FIFO"), (plain / "m.safetensors", "not a directory"), (tmp_path, "directory"),
                      ("", "empty")):
        _one_line(_main(capsys, "export", cnn_ckpt, "--out", out), "--out", word)
    assert stat_is_fifo(fifo) and _listing(tmp_path) == ["fifo", "plain"]


def test_train_checks_out_before_training(tmp_path, capsys):
    """The check runs first: a FIFO --out fails at once (a 1-epoch train would take seconds)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for model in ("mlp", "cnn"):
        _one_line(_main(capsys, "train", "--model", model, "--act-quant", "asq" if model == "cnn" else "lsq",
                        "--epochs", "1", "--out", fifo), "--out", "FIFO")
    assert _listing(tmp_path) == ["fifo"]


def test_generate_out_paths_and_array_limits(tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.write_text("x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _one_line(_main(capsys, "generate", "--out", ""), "--out", "empty")
    _one_line(_main(capsys, "generate", "--out", plain), "--out", "not a directory")
    _one_line(_main(capsys, "generate", "--out", fifo), "--out", "FIFO")
    _one_line(_main(capsys, "generate", "--out", plain / "rtl"), "--out", "not a directory")
    for flags in (("--cols", "1000000"), ("--rows", "1000000"), ("--rows", "70000"), ("--rows", "64", "--cols", "64")):
        line = _one_line(_main(capsys, "generate", *flags, "--out", tmp_path / "rtl"), "--rows", "1..64", "1024 PEs")
        assert "use at most 0" not in line
    assert _listing(tmp_path) == ["fifo", "plain"]


def test_synth_checks_limits_and_tools_before_building(tmp_path, capsys, monkeypatch):
    _one_line(_main(capsys, "synth", "--cols", "1000000", "--no-pnr"), "--cols 1000000", "1..64")
    monkeypatch.setenv("PATH", str(tmp_path))                    # no yosys anywhere
    import flows.synth as synth
    monkeypatch.setattr(synth.shutil, "which", lambda *a, **k: None)
    built = []
    import hw.build
    monkeypatch.setattr(hw.build, "engine_verilog", lambda *a: built.append(a) or "")
    _one_line(_main(capsys, "synth", "--no-pnr"), "yosys", "not installed")
    assert not built


def test_simulate_waves_target_checked_before_simulating(tmp_path, capsys, cnn_model):
    plain = tmp_path / "plain"
    plain.write_text("x")
    fifo = tmp_path / "w.vcd"
    os.mkfifo(fifo)
    for waves, word in ((plain / "w.vcd", "not a directory"), (fifo, "FIFO"), (tmp_path / "d.vcd", "directory")):
        if word == "directory":
            waves.mkdir()
        _one_line(_main(capsys, "simulate", cnn_model, "--backend", "amaranth", "--samples", "1", "--waves", waves),
                  "--waves", word)


@pytest.fixture
def fake_rtl(monkeypatch):
    """An "RTL" that returns the golden values (so `simulate` runs in seconds on a loaded machine) and
    writes no waveform; ``corrupt[0] = True`` makes the golden side disagree in one value."""
    import flows.compile as compile_mod
    import sim.amaranth_sim as amaranth_sim
    real, seen, corrupt = compile_mod.expected_outputs, {}, [False]

    def expected_outputs(*args, **kw):
        seen["expected"] = [np.asarray(e) for e in real(*args, **kw)]
        if not corrupt[0]:
            return seen["expected"]
        bad = [e.copy() for e in seen["expected"]]
        bad[0].reshape(-1)[0] += 1
        return bad

    def run_amaranth(program, x, waves=None, betas=None):
        outs = [[e.reshape(len(e), -1)[s] for e in seen["expected"]] for s in range(len(x))]
        return {"outputs": outs, "cycles": [1] * len(x), "seconds": 0.0, "sim_cycles": len(x)}
    monkeypatch.setattr(compile_mod, "expected_outputs", expected_outputs)
    monkeypatch.setattr(amaranth_sim, "run_amaranth", run_amaranth)
    return corrupt


def test_simulate_reports_a_waveform_the_simulator_did_not_write(tmp_path, capsys, cnn_model, fake_rtl):
    base = ("simulate", cnn_model, "--backend", "amaranth", "--samples", "2", "--jobs", "1", "--quiet")
    assert _main(capsys, *base).returncode == 0                     # the fake agrees with golden
    _one_line(_main(capsys, *base, "--waves", tmp_path / "w.vcd"), "--waves", "wrote no waveform")


def test_simulate_exits_1_on_a_mismatch(capsys, cnn_model, fake_rtl):
    """One corrupted expected value must make `simulate` fail (exit 1), not pass silently."""
    fake_rtl[0] = True
    proc = _main(capsys, "simulate", cnn_model, "--backend", "amaranth", "--samples", "2", "--jobs", "1", "--json")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["mismatches"] == 1


def test_checkpoint_given_to_simulate_says_export_it_first(capsys, cnn_ckpt):
    _one_line(_main(capsys, "simulate", cnn_ckpt, "--backend", "amaranth", "--samples", "1"), cnn_ckpt.name,
              "training checkpoint", "post-accel export")
    _one_line(_main(capsys, "generate", "--model", cnn_ckpt, "--out", "/nonexistent-never-created"), "export it first")


def test_fifo_inputs_are_refused_not_read(tmp_path, capsys):
    """Reading a FIFO would block forever: every command that reads a file refuses it first."""
    fifo = tmp_path / "in.safetensors"
    os.mkfifo(fifo)
    for args in (("export", fifo, "--out", tmp_path / "m.safetensors"), ("simulate", fifo),
                 ("generate", "--model", fifo, "--out", tmp_path / "rtl"), ("perf", "--model", fifo)):
        _one_line(_main(capsys, *args), "in.safetensors", "regular file")
    assert _listing(tmp_path) == ["in.safetensors"]


def test_empty_waves_and_model_file_given_to_export(tmp_path, capsys, cnn_model):
    _one_line(_main(capsys, "simulate", cnn_model, "--backend", "icarus", "--waves", ""), "--waves")
    _one_line(_main(capsys, "export", cnn_model, "--out", tmp_path / "m.safetensors"), "exported model file",
              "post-accel simulate")
    assert _listing(tmp_path) == []


def test_perf_rows_beyond_the_address_space_names_the_limit(capsys, cnn_model):
    line = _one_line(_main(capsys, "perf", "--model", cnn_model, "--rows", "70000"), "rows 70000", "32768")
    assert "use at most 0" not in line


# --- crafted checkpoints --------------------------------------------------------------------------------

def _edit_checkpoint(src, dst, tensors=None, meta=None):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from golden.train_zoo import CHECKPOINT_KEY
    with safe_open(str(src), "pt") as f:
        info = json.loads(f.metadata()[CHECKPOINT_KEY])
        ts = {k: f.get_tensor(k) for k in f.keys()}
    if tensors:
        tensors(ts)
    text = json.dumps(info)
    if meta:
        out = meta(info)
        text = out if isinstance(out, str) else json.dumps(info)
    save_file(ts, str(dst), metadata={CHECKPOINT_KEY: text})
    return dst


def _set(name, value):
    def edit(ts):
        t = ts[name].clone()
        t.reshape(-1)[0] = value
        ts[name] = t
    return edit


ADAPTER_B = "features.3.act_quant.adapter.out.bias"


@pytest.mark.parametrize("tensors,meta,words", [
    (_set(ADAPTER_B, float("nan")), None, (ADAPTER_B, "NaN")),
    (_set("features.3.act_quant.step", -0.2), None, ("features.3.act_quant.step", "> 0")),
    (_set("features.3.act_quant.step", 0.0), None, ("features.3.act_quant.step", "> 0")),
    (_set("fc.weight_quant.alpha", float("inf")), None, ("fc.weight_quant.alpha", "inf")),
    (_set("features.1.running_var", -1.0), None, ("features.1.running_var", ">= 0")),
    (lambda ts: ts.pop("fc.act_quant.step"), None, ("missing", "fc.act_quant.step")),
    (lambda ts: ts.update({"fc.act_quant.step": ts["fc.act_quant.step"].double()}), None,
     ("fc.act_quant.step", "torch.float64")),
    (lambda ts: ts.update({"fc.bias": ts["fc.bias"][:3].clone()}), None, ("fc.bias", "shape")),
    (None, lambda info: info.update(version=99), ("version 99",)),
    (None, lambda info: info.update(spec=5), ("invalid spec",)),
    (None, lambda info: "[" * 100000 + "]" * 100000, ("nested",)),
    (None, lambda info: info["spec"].update(wbits="4"), ("wbits",)),
])
def test_crafted_checkpoint_is_refused_with_its_reason(tmp_path, capsys, cnn_ckpt, tensors, meta, words):
    bad = _edit_checkpoint(cnn_ckpt, tmp_path / "bad.safetensors", tensors, meta)
    line = _one_line(_main(capsys, "export", bad, "--out", tmp_path / "m.safetensors"), "bad.safetensors", *words)
    assert "not a post-accel training checkpoint" not in line
    assert _listing(tmp_path) == ["bad.safetensors"]


def _cnn(cnn_ckpt):
    from golden.train_zoo import load_checkpoint
    return load_checkpoint(cnn_ckpt)[0]


@pytest.mark.parametrize("edit,words", [
    (lambda m: m.features[3].act_quant.adapter.out.bias.fill_(1e30), ("adapter", "b2", "fraction bits")),
    (lambda m: m.features[3].act_quant.adapter.out.bias.fill_(float("nan")), ("adapter", "b2", "NaN")),
    (lambda m: m.features[3].act_quant.step.fill_(0.0), ("step", "> 0")),
    (lambda m: m.features[3].act_quant.step.fill_(-1.0), ("step", "> 0")),
    (lambda m: m.fc.bias.fill_(1e30), ("output channel", "shift")),
    (lambda m: m.features[1].weight.fill_(float("nan")), ("finite",)),
])
def test_export_refuses_what_no_file_may_hold(cnn_ckpt, edit, words):
    """The exporters refuse these in memory too (a model not loaded from a checkpoint), naming the layer."""
    from golden.intdag import export_dag
    from golden.intgraph import ExportError
    model = _cnn(cnn_ckpt)
    with torch.no_grad():
        edit(model)
    with pytest.raises(ExportError) as err:
        export_dag(model)
    msg = str(err.value)
    assert "\n" not in msg and any(w in msg for w in ("layer", "features", "fc")), msg
    for w in words:
        assert w in msg, msg


# --- crafted model files (v3 DAG and v2 chain share the loader) --------------------------------------------

def _edit_model(src, dst, header=None, tensors=None, raw_header=None):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from golden.modelfile import METADATA_KEY
    with safe_open(str(src), "np") as f:
        h = json.loads(f.metadata()[METADATA_KEY])
        ts = {k: f.get_tensor(k) for k in f.keys()}
    if header:
        header(h)
    if tensors:
        tensors(ts)
    save_file(ts, str(dst), metadata={METADATA_KEY: raw_header if raw_header is not None else json.dumps(h)})
    return dst


def _stage(i, **kw):
    return lambda h: h["stages"][i].update(**kw)


def _asq_stage(h):
    return next(i for i, st in enumerate(h["stages"]) if (st.get("in_quant") or st.get("out") or {}).get("kind")
                == "asq")


def _set_asq_lo(h, lo):
    st = h["stages"][_asq_stage(h)]
    (st.get("in_quant") or st["out"])["lo"] = lo


@pytest.mark.parametrize("which", ["v2", "v3"])
@pytest.mark.parametrize("header,tensors,raw,words", [
    (_stage(0, weight_shape=5), None, None, ("stage0.weight_shape", "positive integers")),
    (_stage(0, weight_shape=[1, 2]), None, None, ("stage0.weight_shape",)),
    (_stage(0, value_frac=10 ** 30), None, None, ("stage0.value_frac", "0..47")),
    (_stage(0, relu="yes"), None, None, ("stage0.relu",)),
    (_stage(0, post_ops=7), None, None, ("stage0.post_ops",)),
    (_stage(0, name=["x"]), None, None, ("stage0.name",)),
    (lambda h: h.update(meta=3), None, None, ("header.meta",)),
    (lambda h: h["input"].update(value_frac=10 ** 40), None, None, ("input.value_frac",)),
    (lambda h: _set_asq_lo(h, 5), None, None, (".lo is 5", "ASQ")),
    (lambda h: _set_asq_lo(h, 1), None, None, (".lo is 1", "ASQ")),
    (None, lambda ts: ts.update({"stage0.mult": ts["stage0.mult"].astype(np.float32)}), None,
     ("stage0.mult", "integer")),
    (None, lambda ts: ts.pop("stage1.weights"), None, ("stage1.weights", "missing")),
    (None, None, '{"a":' * 50000 + "1" + "}" * 50000, ("nested deeper",)),
    (None, None, '{"format": "post-accel-intgraph", "deep": ' + "[" * 40 + "1" + "]" * 40 + "}", ("nested deeper",)),
    (None, None, " " * ((1 << 22) + 1), ("characters",)),
])
def test_crafted_model_file_is_refused_with_its_reason(tmp_path, capsys, cnn_model, v3_file, which, header,
                                                       tensors, raw, words):
    src = cnn_model if which == "v2" else v3_file
    bad = _edit_model(src, tmp_path / "bad.safetensors", header, tensors, raw)
    for args in (("simulate", bad, "--backend", "amaranth", "--samples", "1"), ("perf", "--model", bad),
                 ("generate", "--model", bad, "--out", tmp_path / "rtl")):
        _one_line(_main(capsys, *args), "bad.safetensors", *words)
    assert _listing(tmp_path) == ["bad.safetensors"]


def test_asq_lo_is_what_golden_and_rtl_disagreed_on(cnn_model):
    """Why lo must be 0 for ASQ: golden clips ASQ codes to 0..hi (arith.asq_quantize), the RTL's quantizer
    to lo..hi; with lo = 5 they differ (the file is refused at load time, test above)."""
    from golden import arith
    from golden.graphfile import load_graph
    graph = load_graph(cnn_model)
    q = next(st.in_quant for st in graph.stages if st.in_quant.kind == "asq")
    assert q.lo == 0
    codes = arith.asq_quantize(np.arange(-8, 64), np.full(72, 1 << arith.ASQ_BETA_FRAC), 0, q.hi)
    assert codes.min() == 0 and (codes < 5).any()          # values an lo = 5 RTL clip would change

"""The golden model on the digits MLP: data, quantizers, the one trainer and checkpoint (golden.train_zoo),
the one export (golden.intdag.export_dag, file golden.graphfile), the integer executor
(golden.intdag.run_graph) and the model file checks."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from golden import arith
from golden.data import load_digits_split
from golden.graphfile import load_graph, save_graph
from golden.intdag import export_dag, predict, run_graph, stage_units
from golden.intgraph import ExportError, float_codes_by_name, run_dag, stage_acc
from golden.modelfile import METADATA_KEY, MODEL_FORMAT, MODEL_VERSION, ModelFileError, OldModelFileError
from golden.quantizers import LSQActQuantizer, POSTWeightQuantizer
from golden.train_zoo import TrainSpec, ZooCheckpointError, load_checkpoint, save_checkpoint, train_spec
from golden.zoo import build_model


@pytest.fixture(scope="module")
def data():
    return load_digits_split()


@pytest.fixture(scope="module")
def trained(trained_checkpoint_path):
    """The session's trained W4A4 digits MLP (POST weights, LSQ activations): (model, spec, metrics)."""
    return load_checkpoint(trained_checkpoint_path)


@pytest.fixture(scope="module")
def exported(trained):
    return export_dag(trained[0])


# --- data ---------------------------------------------------------------------------

def test_data_split(data):
    X_train, y_train, X_test, y_test = data
    assert X_train.shape == (1437, 64) and X_test.shape == (360, 64)
    assert X_train.dtype == np.float32 and y_test.dtype == np.int64
    assert X_train.min() == 0 and X_train.max() == 16
    again = load_digits_split()
    for a, b in zip(data, again):
        np.testing.assert_array_equal(a, b)


# --- quantizers ---------------------------------------------------------------------

@pytest.mark.parametrize("bits", list(arith.WBITS_RANGE))
def test_post_quantizer_levels_match_encode_post(bits):
    q = POSTWeightQuantizer(bits)
    np.testing.assert_array_equal(q.levels().numpy(), np.unique(arith.post_code_values(bits)))
    g = torch.Generator().manual_seed(bits)
    w = (torch.randn(40, 50, generator=g) * 0.3).clamp(-0.99, 0.99)
    mids = ((q._levels[:-1] + q._levels[1:]) / 2).float()      # (float32-rounded) rounding boundaries
    flat = w.view(-1)
    flat[0] = 1.0                                                # so alpha = max|w| = 1 and w / alpha is exact
    flat[1:1 + len(mids)] = mids
    flat[1 + len(mids):1 + 2 * len(mids)] = -torch.nextafter(mids, torch.zeros(()))
    wq = q(w)                                                    # initialises alpha = max|w|
    alpha = q.alpha.detach()
    assert alpha.item() == 1.0
    codes = q.codes(w)
    expected = torch.from_numpy(arith.post_code_values(bits)[codes]).float() * alpha
    torch.testing.assert_close(wq.detach(), expected, rtol=0, atol=0)
    with torch.no_grad():                                        # any alpha: forward levels == codes()
        q.alpha.fill_(0.37)
    expected = torch.from_numpy(arith.post_code_values(bits)[q.codes(w)]).float() * q.alpha.detach()
    torch.testing.assert_close(q(w).detach(), expected, rtol=0, atol=0)


def test_post_quantizer_gradients():
    q = POSTWeightQuantizer(4)
    w = torch.tensor([0.9, -0.3, 0.05, 2.0, -1.5, 0.0])
    q(w)                                                         # alpha = 2.0
    with torch.no_grad():
        q.alpha.fill_(1.0)
    w = w.clone().requires_grad_(True)
    q(w).sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 1.0]))   # STE inside [-1, 1]
    assert q.alpha.grad is not None and q.alpha.grad.item() != 0.0


def test_lsq_quantizer_init_codes_and_gradients():
    q = LSQActQuantizer(4)
    x = torch.tensor([[0.0, 0.5, 1.0, 3.0], [2.0, 10.0, -1.0, 0.25]])
    q(x)
    assert math.isclose(q.step.item(), 2 * x.abs().mean().item() / math.sqrt(15), rel_tol=1e-6)
    with torch.no_grad():
        q.step.fill_(0.5)
    x = torch.tensor([1.25, 0.74, -0.3, 3.0, 100.0, 0.2]).requires_grad_(True)
    xq, codes = q(x, return_codes=True)
    assert codes.tolist() == [3, 1, 0, 6, 15, 0]                 # 2.5 rounds half *up* to 3
    assert codes.dtype == torch.int64 and torch.equal(codes, q.codes(x))
    torch.testing.assert_close(xq.detach(), codes.float() * 0.5)
    xq.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    assert q.step.grad is not None and q.step.grad.item() != 0.0


def test_bad_bit_widths_raise_value_error():
    for make in (lambda: LSQActQuantizer(1), lambda: LSQActQuantizer(9), lambda: POSTWeightQuantizer(1),
                 lambda: POSTWeightQuantizer(9), lambda: build_model("mlp", 0, 4),
                 lambda: TrainSpec(model="mlp", abits=12)):
        with pytest.raises(ValueError):
            make()


def test_model_structure():
    m = build_model("mlp", 3, 5, weight_quant="post", act_quant="lsq", edge_weight_quant="post")
    assert [(l.in_features, l.out_features, l.weight_quant.bits, l.act_quant.bits) for l in m.layers] == \
        [(64, 64, 8, 8), (64, 32, 3, 5), (32, 10, 8, 8)]
    m.train()
    with torch.no_grad():
        logits = m(torch.rand(5, 64) * 16)
    assert logits.shape == (5, 10)
    codes = float_codes_by_name(m.eval(), np.random.RandomState(0).rand(5, 64) * 16).codes
    assert [codes[f"layers.{i}"].shape for i in range(3)] == [(5, 64), (5, 64), (5, 32)]
    assert all(c.dtype == np.int64 for c in codes.values())


# --- training -----------------------------------------------------------------------

def test_quick_training_is_deterministic():
    spec = TrainSpec(model="mlp", weight_quant="post", act_quant="lsq", edge_weight_quant="post", epochs=2,
                     fp_epochs=1)
    m1, met1 = train_spec(spec, integer=False)
    m2, met2 = train_spec(spec, integer=False)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    assert met1["float_test_accuracy"] == met2["float_test_accuracy"] > 0.5


def test_default_training_accuracy(trained, exported, data):
    _, _, metrics = trained
    assert metrics["float_test_accuracy"] > 0.94
    X_test, y_test = data[2], data[3]
    assert (run_graph(exported, X_test).predictions == y_test).mean() > 0.94


def test_checkpoint_round_trip(trained, tmp_path, data):
    model, spec, metrics = trained
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(model, spec, metrics, path)
    m2, s2, met2 = load_checkpoint(path)
    assert s2 == spec and met2 == metrics
    x = torch.from_numpy(data[2])
    assert torch.equal(model(x), m2(x))
    # bad checkpoints
    raw = path.read_bytes()
    (tmp_path / "short.safetensors").write_bytes(raw[: len(raw) // 2])
    save_file({"a": np.zeros(3, np.float32)}, str(tmp_path / "foreign.safetensors"))
    for name in ("missing.safetensors", "short.safetensors", "foreign.safetensors"):
        with pytest.raises(ZooCheckpointError, match=name) as exc:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(exc.value) and isinstance(exc.value, ValueError)


# --- export -------------------------------------------------------------------------

def test_export_follows_the_spec(trained, exported):
    model, spec, _ = trained
    g = exported
    assert g.kind == "dag" and g.output == "layers.2" and tuple(g.input_shape) == (64,)
    assert [st.name for st in g.stages] == ["layers.0", "layers.1", "layers.2"]
    assert [st.input_from for st in g.stages] == ["input", "layers.0", "layers.1"]
    assert [(st.wbits, st.in_quant.bits) for st in g.stages] == [(8, 8), (4, 4), (8, 8)]
    assert [st.relu for st in g.stages] == [True, True, False]
    assert g.input_quant.kind == "lsq" and g.input_quant.bits == 8 and g.stages[0].in_quant is g.input_quant
    for st, layer in zip(g.stages, model.layers):
        assert st.weight_format == "post" and st.frac_bits == arith.DEFAULT_FRAC_BITS
        np.testing.assert_array_equal(st.weights, layer.weight_quant.codes(layer.weight))
        assert st.mult.shape == st.shift.shape == st.bias.shape == (layer.out_features,)
        assert math.isclose(st.in_quant.value_step, float(layer.act_quant.step.detach()), rel_tol=1e-7)
    assert g.meta["model"] == "mlp"


def test_export_save_load_round_trip(exported, tmp_path, data):
    path = tmp_path / "model.safetensors"
    save_graph(exported, path, provenance={"test": True})
    loaded = load_graph(path)
    X = data[2]
    a, b = run_graph(exported, X), run_graph(loaded, X)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert all((x == y).all() for x, y in zip(a.codes, b.codes))
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        header = json.loads(f.metadata()[METADATA_KEY])
    assert (header["format"], header["version"]) == (MODEL_FORMAT, MODEL_VERSION) == ("post-accel-intgraph", 4)
    assert header["input_shape"] == [64] and header["input"]["bits"] == 8 and header["output"] == "layers.2"


def test_export_refuses_nan_and_untrained(trained):
    model, spec, _ = trained
    import copy
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.layers[1].weight[3, 4] = float("nan")
    with pytest.raises(ExportError, match="NaN"):
        export_dag(bad)
    fresh = build_model("mlp", 4, 4, weight_quant="post", act_quant="lsq", edge_weight_quant="post")
    with pytest.raises(ExportError, match="never saw"):
        export_dag(fresh)


# --- executor -----------------------------------------------------------------------

def test_executor_matches_scalar_reference(exported, data):
    """The vectorised stage accumulation equals a plain loop over arith.post_product, and the executor's
    next codes are the rescale, ReLU and quantizer of it."""
    run = run_graph(exported, data[2][:3])
    for i, st in enumerate(exported.stages):
        xin = run.codes[i]
        bits = st.in_quant.bits
        acc = stage_acc(st, xin, bits)
        for b in range(xin.shape[0]):
            for o in (0, st.weights.shape[0] - 1):
                ref = sum(int(arith.post_product(int(xin[b, k]), int(st.weights[o, k]), st.wbits, bits,
                                                 st.frac_bits)) for k in range(st.weights.shape[1]))
                assert acc[b, o] == ref
        v = arith.finish_value(arith.stage_value(acc, st.mult, st.shift, st.bias, st.acc_shift), None,
                               st.relu_floor if st.relu else None)
        if i + 1 < len(exported.stages):
            nxt = exported.stages[i + 1]
            q = nxt.in_quant
            want = arith.quantize_value(arith.rescale(v, nxt.in_mult, nxt.in_offset, nxt.in_shift), 0, q.lo, q.hi)
            np.testing.assert_array_equal(run.codes[i + 1], want)
        else:
            np.testing.assert_array_equal(run.logits, v)
    np.testing.assert_array_equal(run.predictions, np.argmax(run.logits, axis=1))


def test_predict_in_chunks_equals_run_graph(exported, data):
    """golden.intdag.predict runs the golden model a chunk of samples at a time (export's test-set
    accuracy on 10,000 Fashion-MNIST images); the chunks change nothing."""
    X = data[2]
    whole = run_graph(exported, X).predictions
    for chunk in (1, 7, 256, len(X) + 5):
        np.testing.assert_array_equal(predict(exported, X, chunk=chunk), whole)
    assert predict(exported, X[:0]).shape == (0,)
    with pytest.raises(ValueError, match="chunk"):
        predict(exported, X, chunk=0)


def test_executor_agrees_with_float_model(trained, exported, data):
    """Integer executor vs the float model's fake-quantized codes on all 360 test samples.

    Rare +-1 code differences are expected: the products carry the sqrt(2) LUT's rounding and the
    rescales 16-bit fixed-point multipliers, so a value that the float model puts just on one side of
    a rounding boundary (x.5) can land on the other side. Compared layer by layer (every layer fed the
    float model's input codes: ``run_dag`` with ``force``, whose arithmetic the executor repeats bit for
    bit), no code may differ by more than 1. End to end, a 4-bit code that is off by one changes the
    next layer's sums by a whole 4-bit step, so the end-to-end check is on predictions and on the first
    layer (which has no such history).
    """
    model, _, _ = trained
    X_test = data[2]
    r = run_graph(exported, X_test)
    np.testing.assert_array_equal(r.logits, run_dag(model, X_test, units=stage_units(exported)).logits)     # file executor == walk
    ref = float_codes_by_name(model, X_test)
    names = [st.name for st in exported.stages]
    codes = [ref.codes[k] for k in names]
    np.testing.assert_array_equal(r.codes[0], codes[0])                          # the input quantizer
    forced = run_dag(model, X_test, force=ref, units=stage_units(exported))
    for k in names[1:]:                                                          # layer by layer
        diff = np.abs(forced.codes[k] - ref.codes[k])
        assert diff.max() <= 1, k
        assert (diff == 0).mean() >= 0.995, k
    d1 = np.abs(r.codes[1] - codes[1])                                           # end to end, first layer
    assert d1.max() <= 1 and (d1 == 0).mean() >= 0.995
    same = np.mean(np.concatenate([(a == c).ravel() for a, c in zip(r.codes, codes)]))
    assert same >= 0.99
    assert (r.predictions == ref.logits.argmax(axis=1)).mean() >= 0.99


def test_executor_rejects_bad_input(exported):
    with pytest.raises(ValueError):
        run_graph(exported, np.zeros((2, 63)))
    with pytest.raises(ValueError):
        run_graph(exported, np.full((2, 64), np.nan))


# --- model file checks --------------------------------------------------------------

def _write(path, header, tensors, raw_json=None):
    meta = {METADATA_KEY: raw_json if raw_json is not None else json.dumps(header)}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=meta)


def _read(path):
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        return json.loads(f.metadata()[METADATA_KEY]), {k: f.get_tensor(k) for k in f.keys()}


def _mutations():
    """(id, function(header, tensors) -> optional raw JSON, expected message fragment)."""
    def set_stage(i, key, value):
        def f(h, t):
            h["stages"][i][key] = value
        return f

    def code_out_of_range(h, t):
        t["stage1.weights"] = t["stage1.weights"].copy()
        t["stage1.weights"][0, 0] = 16
    return [
        ("format", lambda h, t: h.update(format="something-else"), "format tag"),
        ("version", lambda h, t: h.update(version=5), "version 5"),
        ("bad-json", lambda h, t: "{not json", "not valid JSON"),
        ("nan", lambda h, t: json.dumps(h).replace('"value_unit": ', '"value_unit": NaN, "x": ', 1), "JSON"),
        ("missing-field", lambda h, t: (h["input"].pop("scale"), None)[1], "lacks field"),
        ("unknown-field", lambda h, t: h["stages"][0].update(junk=1), "unknown field"),
        ("code-range", code_out_of_range, "POST code outside 0..15"),
        ("weights-dtype", lambda h, t: t.update({"stage0.weights": t["stage0.weights"].astype(np.float32)}),
         "must be integer"),
        ("mult-shape", lambda h, t: t.update({"stage2.mult": t["stage2.mult"][:5]}), "shape"),
        ("missing-tensor", lambda h, t: (t.pop("stage1.bias"), None)[1], "missing"),
        ("acc-shift", set_stage(1, "acc_shift", -1), "acc_shift"),
        ("wbits", set_stage(1, "wbits", 9), "wbits"),
        ("wbits-bool", set_stage(1, "wbits", True), "integer"),
        ("input-from", set_stage(2, "input_from", "nowhere"), "input_from"),
        ("shift-range", lambda h, t: t.update({"stage0.shift": np.full_like(t["stage0.shift"], 99)}),
         "rescale unit's range"),
        ("in-shift-range", set_stage(1, "in_shift", 99), "in_shift"),
        ("output", lambda h, t: h.update(output="nowhere"), "output"),
        ("kind", set_stage(0, "kind", "pool"), "kind"),
    ]


@pytest.mark.parametrize("name,mutate,fragment", _mutations(), ids=[m[0] for m in _mutations()])
def test_bad_model_files_raise(trained_model_path, tmp_path, name, mutate, fragment):
    header, tensors = _read(trained_model_path)
    raw = mutate(header, tensors)
    path = tmp_path / f"bad-{name}.safetensors"
    _write(path, header, tensors, raw_json=raw)
    with pytest.raises(ModelFileError) as exc:
        load_graph(path)
    msg = str(exc.value)
    assert "\n" not in msg and path.name in msg and fragment in msg, msg


@pytest.mark.parametrize("fmt,version,what", [("post-accel-intmodel", 1, "version-1 MLP file"),
                                              ("post-accel-intgraph", 2, "version-2 chain graph"),
                                              ("post-accel-intgraph", 3, "version-3 integer DAG")])
def test_old_format_generations_are_refused_with_the_reexport_command(tmp_path, fmt, version, what):
    """v1 MLP files and v2 chain graphs are recognised by their format tag alone (whatever else their
    header holds) and refused in one line that names the command re-exporting them."""
    path = tmp_path / f"old-v{version}.safetensors"
    _write(path, {"format": fmt, "version": version, "layers": []}, {"fc1.codes": np.zeros((2, 2), np.uint8)})
    with pytest.raises(OldModelFileError) as exc:
        load_graph(path)
    msg = str(exc.value)
    assert "\n" not in msg and path.name in msg and what in msg and "`post-accel export CHECKPOINT`" in msg, msg
    assert isinstance(exc.value, ModelFileError)


def test_unreadable_model_files_raise(trained_model_path, trained_checkpoint_path, tmp_path):
    raw = trained_model_path.read_bytes()
    cases = {
        "missing.safetensors": ("no such file", None),
        "empty.safetensors": ("not a readable safetensors", b""),
        "truncated.safetensors": ("not a readable safetensors", raw[: len(raw) - 100]),
        "header-cut.safetensors": ("not a readable safetensors", raw[:40]),
        "garbage.safetensors": ("not a readable safetensors", b"\x13\x37" * 500),
    }
    for fname, (fragment, content) in cases.items():
        if content is not None:
            (tmp_path / fname).write_bytes(content)
    save_file({"w": np.zeros((2, 2), np.float32)}, str(tmp_path / "foreign.safetensors"))
    cases["foreign.safetensors"] = ("no 'post_accel' entry", None)
    (tmp_path / "ckpt.safetensors").write_bytes(trained_checkpoint_path.read_bytes())
    cases["ckpt.safetensors"] = ("training checkpoint", None)
    (tmp_path / "adir").mkdir()
    cases["adir"] = ("directory", None)
    for fname, (fragment, _) in cases.items():
        with pytest.raises(ModelFileError) as exc:
            load_graph(tmp_path / fname)
        msg = str(exc.value)
        assert "\n" not in msg and fname in msg and fragment in msg, msg


def test_save_refuses_invalid_model(exported, tmp_path):
    import copy
    bad = copy.deepcopy(exported)
    bad.stages[1].mult = np.full(bad.stages[1].mult.shape, np.nan)
    path = tmp_path / "never.safetensors"
    with pytest.raises(ModelFileError, match="stage1.mult has NaN"):
        save_graph(bad, path)
    assert not path.exists()

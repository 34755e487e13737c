"""The golden model: quantizers, training, export, the integer executor and the model file checks."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from golden import arith
from golden.data import load_digits_split
from golden.executor import layer_accumulate, layer_output, quantize_input, run
from golden.export import ExportError, export_model
from golden.intmodel import METADATA_KEY, ModelFileError, load_intmodel, save_intmodel
from golden.models import QuantMLP
from golden.quantizers import LSQActQuantizer, POSTWeightQuantizer
from golden.train import CheckpointError, TrainConfig, load_checkpoint, save_checkpoint, train


@pytest.fixture(scope="module")
def data():
    return load_digits_split()


@pytest.fixture(scope="module")
def trained():
    """The default configuration (W4A4, edges 8 bits), trained once for the module."""
    config = TrainConfig()
    model, metrics = train(config, progress=False)
    return model, config, metrics


@pytest.fixture(scope="module")
def exported(trained):
    model, config, metrics = trained
    return export_model(model, config, metrics)


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
                 lambda: POSTWeightQuantizer(9), lambda: QuantMLP(wbits=0), lambda: TrainConfig(abits=12)):
        with pytest.raises(ValueError):
            make()


def test_model_structure():
    m = QuantMLP(hidden=(16, 8, 12), wbits=3, abits=5, edge_bits=8)
    assert [(l.fan_in, l.fan_out, l.wbits, l.abits_in) for l in m.layers] == \
        [(64, 16, 8, 8), (16, 8, 3, 5), (8, 12, 3, 5), (12, 10, 8, 8)]
    codes, logits = m.quantized_forward_codes(torch.rand(5, 64) * 16)
    assert [tuple(c.shape) for c in codes] == [(5, 64), (5, 16), (5, 8), (5, 12)]
    assert logits.shape == (5, 10) and all(c.dtype == torch.int64 for c in codes)


# --- training -----------------------------------------------------------------------

def test_quick_training_is_deterministic():
    config = TrainConfig(epochs=3, fp_epochs=1)
    m1, met1 = train(config, progress=False)
    m2, met2 = train(config, progress=False)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    assert met1["float_test_accuracy"] == met2["float_test_accuracy"] > 0.5


def test_default_training_accuracy(trained, exported, data):
    _, _, metrics = trained
    assert metrics["float_test_accuracy"] > 0.94
    X_test, y_test = data[2], data[3]
    r = run(exported, quantize_input(exported, X_test))
    assert (r.predictions == y_test).mean() > 0.94


def test_checkpoint_round_trip(trained, tmp_path, data):
    model, config, metrics = trained
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(model, config, metrics, path)
    m2, c2, met2 = load_checkpoint(path)
    assert c2 == config and met2 == metrics
    x = torch.from_numpy(data[2])
    assert torch.equal(model(x), m2(x))
    # bad checkpoints
    raw = path.read_bytes()
    (tmp_path / "short.safetensors").write_bytes(raw[: len(raw) // 2])
    save_file({"a": np.zeros(3, np.float32)}, str(tmp_path / "foreign.safetensors"))
    for name in ("missing.safetensors", "short.safetensors", "foreign.safetensors"):
        with pytest.raises(CheckpointError, match=name) as exc:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(exc.value) and isinstance(exc.value, ValueError)


# --- export -------------------------------------------------------------------------

def test_export_follows_the_spec(trained, exported):
    model, _, _ = trained
    im = exported
    F = im.frac_bits
    assert F == arith.DEFAULT_FRAC_BITS and im.input_bits == 8 and im.input_features == 64 and im.classes == 10
    assert [l.name for l in im.layers] == ["fc1", "fc2", "fc3"]
    assert [l.final for l in im.layers] == [False, False, True]
    assert [(l.wbits, l.abits_in, l.abits_out) for l in im.layers] == [(8, 8, 4), (4, 4, 8), (8, 8, None)]
    for i, (ql, l) in enumerate(zip(model.layers, im.layers)):
        np.testing.assert_array_equal(l.codes, ql.weight_quant.codes(ql.linear.weight))
        assert l.codes.dtype == np.uint8 and l.bias.dtype == np.int64
        unit = l.step_in * l.alpha * 2.0 ** -F
        b = ql.linear.bias.detach().double().numpy() / unit
        assert np.abs(l.bias - b).max() <= 0.5
        if not l.final:
            assert (l.mult, l.shift) == arith.fixed_point_multiplier(unit / l.step_out)
            assert l.step_out == im.layers[i + 1].step_in == model.layers[i + 1].act_quant.step.item()
    assert im.provenance["seed"] == 0 and im.provenance["wbits"] == 4


def test_export_save_load_round_trip(exported, tmp_path):
    path = tmp_path / "model.safetensors"
    save_intmodel(exported, path)
    loaded = load_intmodel(path)
    assert loaded == exported
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        header = json.loads(f.metadata()[METADATA_KEY])
    assert header["format"] == "post-accel-intmodel" and header["version"] == 1
    assert header["input"] == {"features": 64, "bits": 8, "step": exported.input_step}


def test_export_refuses_nan_and_untrained(trained):
    model, config, metrics = trained
    bad = QuantMLP()
    bad.load_state_dict(model.state_dict())
    with torch.no_grad():
        bad.layers[1].linear.weight[3, 4] = float("nan")
    with pytest.raises(ExportError, match="NaN"):
        export_model(bad, config, metrics)
    bad.load_state_dict(model.state_dict())
    with torch.no_grad():
        bad.layers[0].act_quant.step.fill_(float("inf"))
    with pytest.raises(ExportError, match="NaN or inf"):
        export_model(bad)
    with pytest.raises(ExportError, match="never initialised"):
        export_model(QuantMLP())


# --- executor -----------------------------------------------------------------------

def test_executor_matches_scalar_reference(exported, data):
    """The vectorised gather equals a plain loop over arith.post_product."""
    x = quantize_input(exported, data[2][:3])
    r = run(exported, x)
    for li, layer in enumerate(exported.layers):
        xin = r.activations[li]
        for b in range(xin.shape[0]):
            for o in (0, layer.fan_out - 1):
                acc = int(layer.bias[o]) + sum(
                    int(arith.post_product(int(xin[b, i]), int(layer.codes[o, i]), layer.wbits,
                                           layer.abits_in, exported.frac_bits))
                    for i in range(layer.fan_in))
                assert r.accumulators[li][b, o] == acc
    np.testing.assert_array_equal(r.logits, r.accumulators[-1])
    np.testing.assert_array_equal(r.predictions, np.argmax(r.logits, axis=1))


def test_executor_agrees_with_float_model(trained, exported, data):
    """Integer executor vs the float model's fake-quantized codes on all 360 test samples.

    Rare +-1 code differences are expected: the executor's products carry the sqrt(2) LUT's
    rounding and the barrel shifter's truncation (< 1.5 units of alpha*step*2**-8 each), and
    requantisation uses a 16-bit fixed-point multiplier (relative error < 2**-16), so a value
    that the float model puts just on one side of a rounding boundary (x.5) can land on the
    other side. Compared layer by layer (both fed the float model's input codes), no code may
    differ by more than 1. End to end, a 4-bit code that is off by one changes the next layer's
    sums by a whole 4-bit step, which at that layer's 8-bit output can be several codes, so the
    end-to-end check is on predictions (and on the first layer, which has no such history).
    """
    model, _, _ = trained
    X_test = data[2]
    x = quantize_input(exported, X_test)
    r = run(exported, x)
    codes, logits = model.quantized_forward_codes(torch.from_numpy(X_test))
    codes = [c.numpy() for c in codes]
    assert len(codes) == len(r.activations) == len(exported.layers)
    np.testing.assert_array_equal(r.activations[0], codes[0])
    for i, layer in enumerate(exported.layers[:-1]):          # layer by layer
        out = layer_output(layer, layer_accumulate(layer, codes[i], exported.frac_bits))
        diff = np.abs(out - codes[i + 1])
        assert diff.max() <= 1, layer.name
        assert (diff == 0).mean() >= 0.995, layer.name
    d1 = np.abs(r.activations[1] - codes[1])                    # end to end, first layer
    assert d1.max() <= 1 and (d1 == 0).mean() >= 0.995
    same = np.mean(np.concatenate([(a == c).ravel() for a, c in zip(r.activations, codes)]))
    assert same >= 0.99
    assert (r.predictions == logits.argmax(dim=1).numpy()).mean() >= 0.99


def test_executor_rejects_bad_input(exported):
    with pytest.raises(ValueError):
        run(exported, np.zeros((2, 63), np.int64))
    with pytest.raises(ValueError):
        run(exported, np.full((2, 64), 256))
    with pytest.raises(ValueError):
        run(exported, np.zeros((2, 64), np.float32))


# --- model file checks --------------------------------------------------------------

def _write(path, header, tensors, raw_json=None):
    meta = {METADATA_KEY: raw_json if raw_json is not None else json.dumps(header)}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=meta)


def _mutations():
    """(id, function(header, tensors) -> optional raw JSON, expected message fragment)."""
    def set_layer(i, key, value):
        def f(h, t):
            h["layers"][i][key] = value
        return f

    def code_out_of_range(h, t):
        t["fc2.codes"] = t["fc2.codes"].copy()
        t["fc2.codes"][0, 0] = 16
    return [
        ("format", lambda h, t: h.update(format="something-else"), "format tag"),
        ("version", lambda h, t: h.update(version=2), "version 2"),
        ("bad-json", lambda h, t: "{not json", "not valid JSON"),
        ("nan", lambda h, t: json.dumps(h).replace('"alpha": ', '"alpha": NaN, "x": ', 1), "JSON"),
        ("missing-field", lambda h, t: (h["input"].pop("step"), None)[1], "lacks field"),
        ("code-range", code_out_of_range, "outside 0..15"),
        ("codes-dtype", lambda h, t: t.update({"fc1.codes": t["fc1.codes"].astype(np.int32)}), "expected uint8"),
        ("bias-shape", lambda h, t: t.update({"fc3.bias": t["fc3.bias"][:5]}), "expected int64 [10]"),
        ("missing-tensor", lambda h, t: (t.pop("fc2.bias"), None)[1], "missing"),
        ("extra-tensor", lambda h, t: t.update({"junk": np.zeros(1, np.int64)}), "unexpected tensor"),
        ("bias-limit", lambda h, t: t.update({"fc1.bias": np.full(64, 10 ** 9, np.int64)}), "exceeds the limit"),
        ("wbits", set_layer(1, "wbits", 9), "weight bits"),
        ("wbits-bool", set_layer(1, "wbits", True), "integer"),
        ("abits-chain", set_layer(1, "abits_in", 8), "does not match"),
        ("step-chain", set_layer(2, "step_in", 0.123), "does not match"),
        ("fan-chain", set_layer(0, "fan_in", 63), "does not match"),
        ("mult-range", set_layer(0, "mult", 5), "normalised range"),
        ("mult-inconsistent", lambda h, t: h["layers"][0].update(mult=h["layers"][0]["mult"] + 1), "disagree"),
        ("shift-range", set_layer(0, "shift", 64), "shift 64"),
        ("final-not-last", set_layer(1, "final", True), "final"),
        ("final-flag", set_layer(2, "final", False), "not final"),
        ("final-mult", set_layer(2, "mult", 40000), "must be null"),
        ("negative-step", set_layer(1, "step_out", -1.0), "finite and > 0"),
        ("kind", set_layer(0, "kind", "conv"), "kind"),
        ("classes", lambda h, t: h.update(classes=11), "classes"),
    ]


@pytest.mark.parametrize("name,mutate,fragment", _mutations(), ids=[m[0] for m in _mutations()])
def test_bad_model_files_raise(exported, tmp_path, name, mutate, fragment):
    header = json.loads(json.dumps(exported.header()))
    tensors = {k: v.copy() for k, v in exported.tensors().items()}
    raw = mutate(header, tensors)
    path = tmp_path / f"bad-{name}.safetensors"
    _write(path, header, tensors, raw_json=raw)
    with pytest.raises(ModelFileError) as exc:
        load_intmodel(path)
    msg = str(exc.value)
    assert "\n" not in msg and path.name in msg and fragment in msg, msg


def test_unreadable_model_files_raise(exported, trained, tmp_path):
    good = tmp_path / "good.safetensors"
    save_intmodel(exported, good)
    raw = good.read_bytes()
    model, config, metrics = trained
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
    save_checkpoint(model, config, metrics, tmp_path / "ckpt.safetensors")
    cases["ckpt.safetensors"] = ("training checkpoint", None)
    (tmp_path / "adir").mkdir()
    cases["adir"] = ("directory", None)
    for fname, (fragment, _) in cases.items():
        with pytest.raises(ModelFileError) as exc:
            load_intmodel(tmp_path / fname)
        msg = str(exc.value)
        assert "\n" not in msg and fname in msg and fragment in msg, msg


def test_save_refuses_invalid_model(exported, tmp_path):
    import copy
    bad = copy.deepcopy(exported)
    bad.layers[1].codes[0, 0] = 200
    path = tmp_path / "never.safetensors"
    with pytest.raises(ModelFileError, match="outside 0..15"):
        save_intmodel(bad, path)
    assert not path.exists()

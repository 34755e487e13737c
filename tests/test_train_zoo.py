"""QAT of the zoo's digits models (golden.train_zoo) and the ablation command (flows.ablate_cmd).

Everything here trains tiny budgets (a few SGD steps on a slice of the training split); the real
ablation lives in bench/ablate.py.
"""

import json

import pytest
import torch

from flows.ablate_cmd import METHODS, ablate, plan_jobs, resolve_methods
from flows.cli import main
from golden.train_zoo import TrainSpec, load_checkpoint, save_checkpoint, state_digest, train_spec

TINY = {"epochs": 1, "fp_epochs": 1, "train_limit": 128, "batch_size": 64}


def tiny_spec(**kw) -> TrainSpec:
    return TrainSpec(**{"model": "cnn", "wbits": 4, "abits": 4, "weight_quant": "post", "act_quant": "asq",
                        "seed": 3, **TINY, **kw})


def test_same_seed_gives_identical_state_dict_and_other_seed_differs():
    m1, r1 = train_spec(tiny_spec(), integer=False)
    m2, r2 = train_spec(tiny_spec(), integer=False)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert r1["state_sha256"] == r2["state_sha256"] == state_digest(m1)
    m3, r3 = train_spec(tiny_spec(seed=4, fp_epochs=0), integer=False)
    assert r3["state_sha256"] != r1["state_sha256"]


def test_threads_and_determinism_flag_are_restored():
    before_threads, before_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    train_spec(tiny_spec(epochs=1, fp_epochs=0, train_limit=64), integer=False)
    assert torch.get_num_threads() == before_threads
    assert torch.are_deterministic_algorithms_enabled() == before_det


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_a_step_at_4_bits(method):
    m = METHODS[method]
    model, metrics = train_spec(tiny_spec(weight_quant=m.weight_quant, act_quant=m.act_quant, fp_epochs=0,
                                          train_limit=64), integer=False)
    assert 0.0 <= metrics["float_test_accuracy"] <= 1.0
    assert metrics["final_loss"] == pytest.approx(metrics["final_loss"])      # finite, not NaN
    assert not model.training
    # the low-bit layers carry the method's quantizers, the edges 8-bit uniform/LSQ (or fp for FP)
    conv2 = model.features[3]
    assert type(conv2.weight_quant).__name__ == {"fp": "FPQuantizer", "uniform": "LSQWeightQuantizer",
                                                 "pot": "POTWeightQuantizer", "post": "POSTWeightQuantizer",
                                                 "apot": "APoTWeightQuantizer",
                                                 "qil": "QILWeightQuantizer"}[m.weight_quant]
    edge = model.features[0].weight_quant
    assert type(edge).__name__ == ("FPQuantizer" if method == "fp" else "LSQWeightQuantizer")


def test_mlp_trains_too():
    _, metrics = train_spec(tiny_spec(model="mlp", weight_quant="uniform", act_quant="lsq"), integer=False)
    assert 0.0 <= metrics["float_test_accuracy"] <= 1.0


@pytest.mark.parametrize("kw, words", [
    ({"weight_quant": "apot", "wbits": 8}, ["apot", "8", "2..7"]),
    ({"weight_quant": "post", "wbits": 1}, ["post", "1"]),
    ({"act_quant": "lsq", "abits": 9}, ["lsq", "9"]),
    ({"weight_quant": "nope"}, ["nope", "uniform", "post", "apot"]),
    ({"model": "resnet18"}, ["resnet18", "cnn", "mlp"]),
])
def test_bad_spec_gives_a_clear_error(kw, words):
    with pytest.raises(ValueError) as err:
        tiny_spec(**kw)
    for w in words:
        assert w in str(err.value)


def test_checkpoint_round_trip(tmp_path):
    model, metrics = train_spec(tiny_spec(fp_epochs=0), integer=False)
    path = tmp_path / "cnn.safetensors"
    save_checkpoint(model, tiny_spec(fp_epochs=0), metrics, path)
    loaded, spec, meta = load_checkpoint(path)
    assert spec == tiny_spec(fp_epochs=0)
    assert state_digest(loaded) == metrics["state_sha256"] == meta["state_sha256"]
    x = torch.rand(5, 1, 8, 8) * 16
    assert torch.equal(loaded(x), model(x))
    raw = path.read_bytes()
    assert b"pickle" not in raw and raw[8:9] == b"{"       # safetensors: 8-byte length, JSON header


def test_unsupported_bits_become_rows_not_crashes():
    train = {"model": "cnn", "epochs": 1, "fp_epochs": 0}
    jobs, unsupported = plan_jobs(resolve_methods(["lsq", "lsq+apot"]), [4, 8], [0], train)
    assert ("lsq+apot", 8) in unsupported and "2..7" in unsupported[("lsq+apot", 8)]
    assert {(j["method"], j["bits"]) for j in jobs} == {("lsq", 4), ("lsq", 8), ("lsq+apot", 4)}


def test_unknown_method_lists_the_valid_ones(capsys):
    assert main(["ablate", "--methods", "lsq", "bogus", "--serial", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bogus" in err[0] and "asq+post" in err[0] and "lsq+apot" in err[0]


def test_ablate_cli_tiny_json(capsys, tmp_path):
    out = tmp_path / "abl.json"
    code = main(["ablate", "--methods", "FP", "asq+post", "--bits", "4", "--seeds", "1", "--epochs", "1",
                 "--fp-epochs", "0", "--train-limit", "64", "--serial", "--json", "--out", str(out)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == result
    rows = {(r["method"], r["bits"]): r for r in result["rows"]}
    assert set(rows) == {("fp", 4), ("asq+post", 4)}
    assert all(r["status"] == "ok" and r["n"] == 1 for r in rows.values())
    assert 0 <= rows[("asq+post", 4)]["float_mean"] <= 100
    assert result["command"].startswith("post-accel ablate --methods fp asq+post --bits 4 --seeds 1")
    # FP has no integer form: recorded as a reason, not a crash
    assert rows[("fp", 4)]["int_mean"] is None


def test_serial_and_dask_give_identical_results():
    import dask.distributed  # noqa: F401 - a dependency in pyproject: fail, never skip, if it is missing
    kw = dict(methods=["lsq", "asq+post"], bits=[3], seeds=1, epochs=1, fp_epochs=1, train_limit=128,
              progress=False)
    serial = ablate(serial=True, **kw)
    dask = ablate(serial=False, workers=2, **kw)
    strip = lambda runs: [{k: v for k, v in r.items() if k != "seconds"} for r in runs]  # noqa: E731
    assert strip(serial["runs"]) == strip(dask["runs"])
    assert all("error" not in r and len(r["state_sha256"]) == 64 for r in serial["runs"])
